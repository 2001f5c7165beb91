"""Dynamic micro-batching: concurrent requests share one forward pass per model.

Requests that arrive while the models are busy wait in a list; when the running batch ends they
all go into the next one (up to `max_size`), so under load the batch grows by itself and each
model runs once for many images. An idle service waits at most `max_wait` for company before
running a lone request, so a single client pays at most that much extra latency.

Everything but the batch itself runs on the event loop thread; the batch runs on its own
executor, one batch at a time, because each onnxruntime session already uses every core it has.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Generic, TypeVar

from service.errors import OverloadedError

I = TypeVar("I")  # noqa: E741 - item, as in the typing docs' convention
R = TypeVar("R")


class MicroBatcher(Generic[I, R]):
    """Groups items submitted concurrently into calls of `run_batch(items) -> results`."""

    def __init__(
        self,
        run_batch: Callable[[list[I]], Sequence[R]],
        *,
        executor: Executor,
        max_size: int,
        max_wait: float,
        max_waiting: int,
    ) -> None:
        """Create the batcher.

        Args:
            run_batch: Blocking; returns one result per item, in order.
            executor: Where `run_batch` runs.
            max_size: Most items per batch.
            max_wait: Seconds an idle batcher waits for more items before running one alone.
            max_waiting: Most items waiting for a batch; beyond it `submit` refuses (503).
        """
        if max_size < 1 or max_wait < 0 or max_waiting < 1:
            raise ValueError("max_size and max_waiting must be >= 1 and max_wait >= 0")
        self._run_batch = run_batch
        self._executor = executor
        self._max_size = max_size
        self._max_wait = max_wait
        self._max_waiting = max_waiting
        self._waiting: list[tuple[I, asyncio.Future[R]]] = []
        self._running = False
        self._timer: asyncio.TimerHandle | None = None

    async def submit(self, item: I) -> R:
        """Run `item` in the next batch and return its result.

        Raises:
            OverloadedError: `max_waiting` items are already waiting.
            Exception: Whatever `run_batch` raised for the batch this item was in.
        """
        if len(self._waiting) >= self._max_waiting:
            waiting = len(self._waiting)
            raise OverloadedError(f"{waiting} images are waiting for the models; retry later", retry_after=1)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append((item, future))
        if not self._running:
            if len(self._waiting) >= self._max_size or self._max_wait == 0:
                self._start()
            elif self._timer is None:
                self._timer = loop.call_later(self._max_wait, self._start)
        return await future

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # A client that went away leaves a cancelled future: its image is not computed.
        self._waiting = [(item, future) for item, future in self._waiting if not future.cancelled()]
        if self._running or not self._waiting:
            return
        batch, self._waiting = self._waiting[: self._max_size], self._waiting[self._max_size :]
        self._running = True
        loop = asyncio.get_running_loop()
        running = loop.run_in_executor(self._executor, self._run_batch, [item for item, _ in batch])
        running.add_done_callback(lambda done: self._finish(batch, done))

    def _finish(self, batch: list[tuple[I, asyncio.Future[R]]], done: asyncio.Future[Sequence[R]]) -> None:
        self._running = False
        error = done.exception()
        if error is None:
            results = done.result()
            if len(results) != len(batch):
                error = RuntimeError(f"a batch of {len(batch)} gave {len(results)} results")
        for index, (_, future) in enumerate(batch):
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(results[index])
        if self._waiting:
            # They have waited for a whole batch already: run them now.
            self._start()
