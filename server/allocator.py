"""glibc's malloc arenas, capped for a long-running server.

glibc gives a thread that finds the main heap locked an arena of its own, up to eight
per core. Audio buffers are allocated on engine and encoder threads and freed on the
event loop's, so memory freed in one arena is not reused by another and RSS climbs in
steps at every load peak (BENCHMARKS.md, "Memory"). Two arenas keep that in check at
no measurable CPU cost. ``mallopt`` is used rather than ``MALLOC_ARENA_MAX`` alone,
because the variable must be set before the process starts; it is also exported, so
engine processes started from here get the same cap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # from glibc's malloc.h


def cap_arenas(n: int) -> bool:
    """Cap glibc's malloc arenas at ``n`` in this process and its children (0: leave
    glibc's default). False where the C library is not glibc (musl, macOS)."""
    if n <= 0:
        return False
    os.environ["MALLOC_ARENA_MAX"] = str(n)
    name = ctypes.util.find_library("c")
    if not name:
        return False
    libc = ctypes.CDLL(name)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, n))
