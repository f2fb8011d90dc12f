"""A circuit breaker: stop sending work to a model that keeps failing, probe it later.

closed → (``failures`` consecutive failures) → open → (``cooldown_s``) → half-open: one
probe runs; success closes the circuit, failure opens it for another cooldown. Used on
the event loop only (the worker records outcomes there), so it needs no lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self,
        failures: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self.last_error = ""
        self.trips = 0  # times the circuit opened (for logs and tests)

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    def would_allow(self) -> bool:
        """Whether ``allow`` would say yes, without taking the probe slot."""
        st = self.state
        return st == "closed" or (st == "half_open" and not self._probing)

    def allow(self) -> bool:
        """May work be sent now? In half-open state only one probe at a time."""
        st = self.state
        if st == "closed":
            return True
        if st == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def retry_in_s(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.cooldown_s - (self._clock() - self._opened_at))

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def failure(self, error: str) -> None:
        self.last_error = error
        self._failures += 1
        if self._probing or self._failures >= self.threshold:
            if self._opened_at is None or self._probing:
                self.trips += 1
            self._opened_at = self._clock()
        self._probing = False

    def release(self) -> None:
        """A probe was let through but not run (its work was cancelled)."""
        self._probing = False
