"""The circuit breaker's states, on a clock the test moves."""

from __future__ import annotations

from server.engines.f5.breaker import CircuitBreaker


def state(b: CircuitBreaker) -> str:
    return b.state  # read anew each time (mypy would narrow a property across calls)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_opens_after_consecutive_failures_and_probes_after_the_cooldown() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=3, cooldown_s=10.0, clock=clock)
    b.failure("boom")
    b.failure("boom")
    b.success()  # a success resets the count: failures must be consecutive
    b.failure("boom")
    b.failure("boom")
    assert state(b) == "closed" and b.allow()
    b.failure("model fell over")
    assert state(b) == "open" and not b.allow() and not b.would_allow()
    assert b.trips == 1 and b.last_error == "model fell over"
    assert 9.9 < b.retry_in_s() <= 10.0
    clock.t += 10.0
    assert state(b) == "half_open"
    assert b.would_allow()
    assert b.allow()  # the one probe
    assert not b.allow() and not b.would_allow()  # no second probe while it runs
    b.failure("still broken")  # a failed probe opens the circuit again at once
    assert state(b) == "open" and b.trips == 2
    clock.t += 10.0
    assert b.allow()
    b.success()  # a good probe closes it
    assert state(b) == "closed" and b.allow() and b.retry_in_s() == 0.0


def test_a_probe_that_never_ran_frees_the_slot() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=1, cooldown_s=1.0, clock=clock)
    b.failure("x")
    clock.t += 1.0
    assert b.allow()
    b.release()
    assert b.allow()
