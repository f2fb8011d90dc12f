"""How many CPUs this process may use, and how the engines share them out by default
(``Settings.engines``, ``Settings.engine_cpu_threads``)."""

from __future__ import annotations

import os

# onnxruntime threads one Piper process gets by default. Two make a lone sentence 1.4x
# faster than one (bench/piper_threads.py); past a few, a small model gains little per
# thread and more engines side by side carry more. 4 is a judgement, not measured here
# (a 2-core machine): set engine_process_threads on bigger ones.
MAX_PROCESS_THREADS = 4


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, and a container's CPU quota
    (cgroup ``cpu.max``) when that is lower, so a pinned or limited server counts what
    it was given, not the machine's."""
    try:
        n = len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(n, quota)) if quota else n


def _cgroup_cpu_quota(path: str = "/sys/fs/cgroup/cpu.max") -> int | None:
    """The cgroup v2 CPU limit rounded up to whole CPUs, or None (no limit, no file)."""
    try:
        with open(path) as f:
            quota, period = f.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return -(-int(quota) // int(period))
