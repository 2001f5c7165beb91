"""Giving the heap's free memory back to the system once a burst of requests is over.

Measured with `python -m bench.memory_growth` (32 clients of `/predict`): the resident size rose
14 % and stayed there, a plateau rather than a leak, and glibc's `malloc_trim(0)`, called from a
debugger, gave back two thirds of it. That memory was free inside the allocator (the threads'
arenas keep the pages of freed request buffers), not held by the service. So after work, once the queue has
drained and stayed empty for a moment, the service trims the heap, in a worker thread: the call
walks every arena, which takes milliseconds and must not hold the event loop. (Capping glibc's
arenas at the CPU quota, as `MALLOC_ARENA_MAX` does, made no difference measurable here.)

Most of the rest of the growth was onnxruntime's arenas reaching the size a full batch needs;
the predictor's warm-up now runs one full batch, so that is taken before the service is ready.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)


def glibc_malloc_trim() -> Callable[[], None] | None:
    """The C library's `malloc_trim(0)` as a function, or None without glibc (musl, macOS)."""
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    try:
        trim = ctypes.CDLL(library).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def release() -> None:
        trim(0)

    return release


async def trim_heap_when_idle(
    *,
    pending: Callable[[], int],
    completed: Callable[[], int],
    trim: Callable[[], None],
    idle_seconds: float = 2.0,
) -> None:
    """Run forever: after work, once nothing has been pending for `idle_seconds`, `trim` once.

    Args:
        pending: How many jobs are admitted and unfinished now.
        completed: How many jobs have finished so far (a counter that only grows).
        trim: Gives free heap memory back to the system (blocking; run in a thread).
        idle_seconds: How long the queue must stay empty first: a lull between two requests
            of a burst is not the end of it.
    """
    trimmed_at = completed()
    while True:
        await asyncio.sleep(idle_seconds)
        done = completed()
        if done == trimmed_at or pending() > 0:
            continue
        await asyncio.sleep(idle_seconds)
        if pending() > 0 or completed() != done:
            continue  # still busy: look again later
        await asyncio.to_thread(trim)
        trimmed_at = done
        logger.debug("heap trimmed after %d jobs", done)
