"""Which threads a Piper synthesis starts on (server/engines/widths.py), without
processes: every CPU while the engine is quiet, one beside others or soon after them."""

from __future__ import annotations

import pytest

from server.engines.widths import ThreadPlan


def test_a_synthesis_on_a_quiet_engine_gets_every_thread() -> None:
    plan = ThreadPlan(wide=2, busy=1, cpus=2)
    assert plan.threads(0, now=100.0) == 2


def test_one_that_starts_beside_a_running_one_gets_the_busy_threads() -> None:
    plan = ThreadPlan(wide=2, busy=1, cpus=2)
    assert plan.threads(0, now=0.0) == 2
    plan.running(1, now=0.0)
    assert plan.threads(2, now=0.01) == 1  # 2 + 2 threads would not fit on 2 CPUs
    plan.running(2, now=0.01)
    assert plan.threads(3, now=0.02) == 1


def test_after_a_busy_spell_it_stays_narrow_until_the_engine_has_been_quiet() -> None:
    """A wide synthesis that starts in a short gap would take both cores from those
    that start after it: the recent average decides, not only the moment."""
    plan = ThreadPlan(wide=2, busy=1, cpus=2)
    plan.running(2, now=0.0)
    plan.running(0, now=10.0)  # two ran for ten seconds; now none
    assert plan.load(10.0) == pytest.approx(2.0, abs=0.02)
    assert plan.threads(0, now=10.1) == 1  # a gap of 0.1 s: still busy
    assert plan.threads(0, now=12.0) == 1  # load 2 * e^-1 = 0.74
    assert plan.load(13.0) == pytest.approx(2.0 * 2.718281828**-1.5, rel=0.02)
    assert plan.threads(0, now=13.0) == 2  # 0.45: quiet again


def test_a_lone_sessions_chunks_one_after_another_stay_wide() -> None:
    """One synthesis at a time, back to back, averages at most one running: a lone
    paragraph's chunks go on using every thread while nothing runs beside them."""
    plan = ThreadPlan(wide=2, busy=1, cpus=2)
    t = 0.0
    widths = []
    for _ in range(5):  # 0.15 s syntheses with 1 s of audio played between them
        widths.append(plan.threads(0, t))
        plan.running(1, t)
        t += 0.15
        plan.running(0, t)
        t += 1.0
    assert widths == [2] * 5


def test_zero_busy_threads_means_always_wide() -> None:
    plan = ThreadPlan(wide=4, busy=0, cpus=2)
    plan.running(3, now=0.0)
    assert plan.threads(8, now=0.1) == 4
