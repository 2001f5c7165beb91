"""The heap is trimmed once after each burst of work, never while work is pending."""

from __future__ import annotations

import asyncio
import platform

import pytest

from service.core.memory import glibc_malloc_trim, trim_heap_when_idle


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_glibc_s_malloc_trim_is_found_and_callable() -> None:
    trim = glibc_malloc_trim()
    assert trim is not None
    trim()


def test_one_trim_per_burst_and_none_while_busy() -> None:
    counters = {"pending": 0, "completed": 0}
    trims: list[int] = []

    async def scenario() -> None:
        task = asyncio.create_task(
            trim_heap_when_idle(
                pending=lambda: counters["pending"],
                completed=lambda: counters["completed"],
                trim=lambda: trims.append(counters["completed"]),
                idle_seconds=0.01,
            )
        )
        await asyncio.sleep(0.1)
        assert trims == []  # no work yet: nothing to give back
        counters["pending"], counters["completed"] = 3, 5
        await asyncio.sleep(0.1)
        assert trims == []  # work pending: never in the middle of a burst
        counters["pending"] = 0
        await asyncio.sleep(0.1)
        assert trims == [5]  # idle after work: once
        await asyncio.sleep(0.1)
        assert trims == [5]  # and not again without new work
        counters["completed"] = 6
        await asyncio.sleep(0.1)
        assert trims == [5, 6]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
