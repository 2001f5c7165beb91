"""A bounded queue in front of the models.

Decoding and inference are CPU-bound and blocking, so they run on a small thread pool, never on
the event loop. Admission is bounded: when `max_pending` jobs are already admitted, a new one
is refused at once with `OverloadedError` (503 + Retry-After) rather than queued without limit,
which would only turn overload into timeouts and memory growth.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from service.core.concurrency import Pool
from service.errors import OverloadedError

T = TypeVar("T")

# Weight of the newest job duration in the moving average used for Retry-After.
_EWMA_ALPHA = 0.2


class InferenceScheduler:
    """Runs blocking jobs on a pool with at most `max_pending` admitted at once."""

    def __init__(self, executor: Pool, *, max_pending: int) -> None:
        """Admit jobs to `executor` (the serving plan's job pool), at most `max_pending` at once."""
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self._executor = executor
        self._workers = executor.threads
        self._max_pending = max_pending
        self._pending = 0
        self._completed = 0
        self._mean_seconds = 0.0

    @property
    def pending(self) -> int:
        """Jobs admitted and not yet finished (queued or running)."""
        return self._pending

    @property
    def completed(self) -> int:
        """Jobs finished so far, successfully or not."""
        return self._completed

    @property
    def capacity(self) -> int:
        """The most jobs admitted at once."""
        return self._max_pending

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the time to drain the current queue, at least 1."""
        drain = self._pending * self._mean_seconds / self._workers
        return max(1, math.ceil(drain))

    def _finished(self, started: float) -> None:
        elapsed = time.perf_counter() - started
        self._mean_seconds = (
            elapsed
            if self._mean_seconds == 0.0
            else ((1 - _EWMA_ALPHA) * self._mean_seconds + _EWMA_ALPHA * elapsed)
        )
        self._pending -= 1
        self._completed += 1

    def _admit(self) -> float:
        if self._pending >= self._max_pending:
            raise OverloadedError(
                f"{self._pending} requests are already being processed; retry later",
                retry_after=self.retry_after(),
            )
        self._pending += 1
        return time.perf_counter()

    @contextlib.asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """Hold one of the `max_pending` slots for a request made of several steps.

        Must be entered on the event loop thread. The slot is released when the block exits,
        also when the client goes away (for a request waiting in a micro-batch, which then
        drops it, see `MicroBatcher`).

        Raises:
            OverloadedError: `max_pending` requests are already admitted.
        """
        started = self._admit()
        try:
            yield
        finally:
            self._finished(started)

    async def execute(self, job: Callable[[], T]) -> T:
        """Run `job` on the pool for a request that already holds a slot (see `admitted`)."""
        loop = asyncio.get_running_loop()
        return await asyncio.shield(loop.run_in_executor(self._executor, job))

    async def run(self, job: Callable[[], T]) -> T:
        """Run `job` on the pool and return its result.

        Must be called from the event loop thread (the counters are only touched there).
        The slot is released when the job really ends, not when the caller stops waiting, so
        clients that disconnect cannot make the pool accept more work than it is running.

        Raises:
            OverloadedError: `max_pending` jobs are already admitted.
        """
        started = self._admit()
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._executor, job)
        except RuntimeError:  # the pool is shut down
            self._pending -= 1
            raise
        future.add_done_callback(lambda _: self._finished(started))
        return await asyncio.shield(future)

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop accepting jobs; with `wait`, let the admitted ones finish."""
        self._executor.shutdown(wait=wait, cancel_futures=not wait)
