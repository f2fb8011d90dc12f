"""How many onnxruntime threads a Piper synthesis starts on (sans-I/O).

A lone sentence is fastest on every core (``wide``: its first audio is what a caller
waits for), but two syntheses sharing every core make less speech per CPU second than
two side by side on a core each (``busy``; BENCHMARKS.md, issue 15). So a synthesis
starts wide only while the engine is quiet: its threads fit beside the running ones' on
the usable CPUs, and the syntheses running over the last couple of seconds averaged
under half of one. Without the average, one that starts wide in a short gap of a busy
engine takes both cores from those that start after it.
"""

from __future__ import annotations

import math

# The recent load: an exponential moving average, in time, of the syntheses running.
_TAU_S = 2.0
# A synthesis starts wide only below this recent load (syntheses running, on average).
_QUIET = 0.5


class ThreadPlan:
    """The running syntheses over time, and the threads the next one gets."""

    __slots__ = ("_at", "_load", "_running", "busy", "cpus", "wide")

    def __init__(self, wide: int, busy: int, cpus: int) -> None:
        self.wide = wide
        self.busy = busy  # 0: always wide
        self.cpus = cpus
        self._running = 0
        self._load = 0.0
        self._at = 0.0

    def load(self, now: float) -> float:
        """Syntheses running, on average over the last ``_TAU_S`` or so."""
        decay = math.exp(-max(0.0, now - self._at) / _TAU_S)
        return self._running + (self._load - self._running) * decay

    def running(self, n: int, now: float) -> None:
        """``n`` syntheses run from ``now`` on (one started or ended)."""
        self._load = self.load(now)
        self._at = now
        self._running = n

    def threads(self, threads_running: int, now: float) -> int:
        """The threads of a synthesis starting ``now`` beside ones on ``threads_running``."""
        if not self.busy:
            return self.wide
        fits = threads_running + self.wide <= self.cpus
        return self.wide if fits and self.load(now) < _QUIET else self.busy
