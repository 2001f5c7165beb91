"""The bounded inference queue."""

from __future__ import annotations

import asyncio
import threading

import pytest

from service.core.concurrency import Pool
from service.errors import OverloadedError
from service.inference.scheduler import InferenceScheduler


def test_full_queue_refuses_at_once_with_retry_after() -> None:
    async def scenario() -> None:
        scheduler = InferenceScheduler(Pool(1, "test-jobs"), max_pending=2)
        release = threading.Event()
        first = asyncio.create_task(scheduler.run(release.wait))
        second = asyncio.create_task(scheduler.run(release.wait))
        await asyncio.sleep(0.05)
        assert scheduler.pending == 2
        with pytest.raises(OverloadedError) as refused:
            await scheduler.run(lambda: None)
        assert refused.value.retry_after is not None
        assert refused.value.retry_after >= 1
        release.set()
        assert await first is True
        assert await second is True
        assert scheduler.pending == 0
        assert await scheduler.run(lambda: 42) == 42
        scheduler.shutdown()

    asyncio.run(scenario())


def test_a_cancelled_waiter_keeps_its_slot_until_the_job_ends() -> None:
    async def scenario() -> None:
        scheduler = InferenceScheduler(Pool(1, "test-jobs"), max_pending=1)
        release = threading.Event()
        waiter = asyncio.create_task(scheduler.run(release.wait))
        await asyncio.sleep(0.05)
        waiter.cancel()
        await asyncio.sleep(0.01)
        # The job is still running on the pool: a new one must not be admitted yet.
        assert scheduler.pending == 1
        with pytest.raises(OverloadedError):
            await scheduler.run(lambda: None)
        release.set()
        for _ in range(100):
            if scheduler.pending == 0:
                break
            await asyncio.sleep(0.01)
        assert scheduler.pending == 0
        scheduler.shutdown()

    asyncio.run(scenario())


def test_exceptions_reach_the_caller_and_free_the_slot() -> None:
    async def scenario() -> None:
        scheduler = InferenceScheduler(Pool(1, "test-jobs"), max_pending=1)

        def boom() -> None:
            raise ValueError("bad")

        with pytest.raises(ValueError, match="bad"):
            await scheduler.run(boom)
        await asyncio.sleep(0)
        assert scheduler.pending == 0
        scheduler.shutdown()

    asyncio.run(scenario())
