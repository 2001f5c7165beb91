"""How many CPUs this process may really use.

`os.cpu_count()` reports the host's cores; inside a container limited by a CFS quota, sizing
thread pools by it oversubscribes the quota and the kernel throttles the whole process. The
usable count is the smallest of the affinity mask and the cgroup quota (v2 or v1).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

_CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
_CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_quota(
    v2: Path = _CGROUP_V2, v1_quota: Path = _CGROUP_V1_QUOTA, v1_period: Path = _CGROUP_V1_PERIOD
) -> float | None:
    """Return the CFS CPU quota in CPUs (for example 1.5), or None when unlimited or unknown.

    Args:
        v2: The cgroup v2 `cpu.max` file ("<quota> <period>" or "max <period>").
        v1_quota: The cgroup v1 quota file (-1 when unlimited).
        v1_period: The cgroup v1 period file.
    """
    text = _read(v2)
    if text is not None:
        parts = text.split()
        if len(parts) == 2 and parts[0] != "max":
            try:
                return int(parts[0]) / int(parts[1])
            except (ValueError, ZeroDivisionError):
                return None
        return None
    quota, period = _read(v1_quota), _read(v1_period)
    if quota is None or period is None:
        return None
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def available_cpus() -> int:
    """Return the number of CPUs this process can use, at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        # A quota of 1.5 CPUs still lets two threads make progress; round up, never below 1.
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)
