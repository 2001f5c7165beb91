"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

K = TypeVar("K")


def median_seconds(call: Callable[[], object], *, repeat: int, warmup: int = 2, rounds: int = 1) -> float:
    """The median of `repeat` timed calls; with `rounds`, the best of that many such medians.

    Several rounds keep a slow spell of a shared machine out of a reference figure (the best
    round is the machine's own speed), which makes the ratios against it stricter, not looser.
    """
    for _ in range(warmup):
        call()
    medians = []
    for _ in range(rounds):
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        medians.append(statistics.median(times))
    return min(medians)


def compared_seconds(
    calls: Mapping[K, Callable[[], object]], *, repeat: int, rounds: int = 3
) -> dict[K, float]:
    """`median_seconds` of calls that are compared with each other, taking turns `rounds` times.

    Each figure is the best of its rounds, so that a slow spell of the machine does not land on
    one side of the comparison only.
    """
    best: dict[K, float] = {}
    for _ in range(rounds):
        for key, call in calls.items():
            seconds = median_seconds(call, repeat=repeat)
            best[key] = min(seconds, best.get(key, seconds))
    return best
