"""Dynamic micro-batching: grouping, limits, errors, cancellation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.errors import OverloadedError
from service.inference.batcher import MicroBatcher


class Recorder:
    """A `run_batch` that records its batches and can be held until released."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.release.set()
        self.fail_on = fail_on

    def __call__(self, items: list[int]) -> list[int]:
        self.release.wait(5)
        self.batches.append(list(items))
        if self.fail_on in items:
            raise RuntimeError("runtime failed")
        return [item * 10 for item in items]


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


def batcher(recorder: Recorder, executor: ThreadPoolExecutor, **options: float) -> MicroBatcher[int, int]:
    settings = {"max_size": 4, "max_wait": 0.05, "max_waiting": 100, **options}
    return MicroBatcher(recorder, executor=executor, **settings)  # type: ignore[arg-type]


def test_items_arriving_while_a_batch_runs_share_the_next_batch(executor: ThreadPoolExecutor) -> None:
    recorder = Recorder()

    async def scenario() -> list[int]:
        group = batcher(recorder, executor, max_wait=0)
        recorder.release.clear()  # hold the first batch
        first = asyncio.ensure_future(group.submit(0))
        await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(group.submit(i)) for i in range(1, 7)]
        await asyncio.sleep(0.01)
        recorder.release.set()
        return list(await asyncio.gather(first, *rest))

    assert asyncio.run(scenario()) == [0, 10, 20, 30, 40, 50, 60]  # each caller gets its own result
    assert recorder.batches == [[0], [1, 2, 3, 4], [5, 6]]  # at most max_size per batch


def test_an_idle_batcher_waits_max_wait_for_company(executor: ThreadPoolExecutor) -> None:
    recorder = Recorder()

    async def scenario() -> None:
        group = batcher(recorder, executor, max_wait=0.1)
        first = asyncio.ensure_future(group.submit(1))
        await asyncio.sleep(0.02)
        await asyncio.gather(first, group.submit(2))

    asyncio.run(scenario())
    assert recorder.batches == [[1, 2]]


def test_a_failed_batch_fails_its_items_only(executor: ThreadPoolExecutor) -> None:
    recorder = Recorder(fail_on=2)

    async def scenario() -> list[object]:
        group = batcher(recorder, executor, max_wait=0.05)
        failed = await asyncio.gather(group.submit(1), group.submit(2), return_exceptions=True)
        return [*failed, await group.submit(3)]

    first, second, after = asyncio.run(scenario())
    assert isinstance(first, RuntimeError)
    assert isinstance(second, RuntimeError)
    assert after == 30  # the batcher goes on


def test_too_many_waiting_is_overloaded_and_cancelled_items_are_not_computed(
    executor: ThreadPoolExecutor,
) -> None:
    recorder = Recorder()

    async def scenario() -> None:
        group = batcher(recorder, executor, max_wait=0, max_waiting=2, max_size=8)
        recorder.release.clear()
        running = asyncio.ensure_future(group.submit(0))
        await asyncio.sleep(0.01)
        gone = asyncio.ensure_future(group.submit(1))
        kept = asyncio.ensure_future(group.submit(2))
        await asyncio.sleep(0.01)
        with pytest.raises(OverloadedError):
            await group.submit(3)
        gone.cancel()
        recorder.release.set()
        await asyncio.gather(running, kept)

    asyncio.run(scenario())
    assert recorder.batches == [[0], [2]]
