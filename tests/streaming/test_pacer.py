"""Real-time pacing with a fake clock: the lead holds across joins, stalls and a
slow socket, and a stall is never followed by a burst beyond the lead."""

from __future__ import annotations

import pytest

from server.streaming.pacer import Pacer

FRAME = 0.02


def run(
    p: Pacer,
    frames: int,
    t: float,
    stall_at: int | None = None,
    stall_s: float = 0.0,
    send_cost: float = 0.0,
) -> tuple[float, list[float]]:
    """Sends ``frames`` as soon as the pacer lets it; returns the end time and the
    audio ahead of the listener right after each send."""
    ahead = []
    for n in range(frames):
        if n == stall_at:
            t += stall_s  # the engine had nothing for this long
        t += p.wait(t)
        p.sent(t)
        ahead.append(p.ahead_s(t))
        t += send_cost
    return t, ahead


def test_the_first_lead_goes_at_once_then_real_time() -> None:
    p = Pacer(FRAME, 0.2)
    end, ahead = run(p, 100, 0.0)  # 2 s of audio
    assert max(ahead) <= 0.2 + FRAME + 1e-9
    # the first 0.2 s leave at once; the rest at real time
    assert end == pytest.approx(2.0 - 0.2 - FRAME, abs=1e-6)


def test_a_stall_is_not_followed_by_a_burst_beyond_the_lead() -> None:
    p = Pacer(FRAME, 0.2)
    _, ahead = run(p, 200, 0.0, stall_at=100, stall_s=1.5)
    assert max(ahead) <= 0.2 + FRAME + 1e-9
    # after the stall the far end ran dry: a new talkspurt, again at most the lead
    assert ahead[100] == pytest.approx(FRAME)


def test_joins_and_a_slow_socket_keep_the_bound() -> None:
    p = Pacer(FRAME, 0.1)
    _, ahead = run(p, 300, 0.0, send_cost=0.03)  # each send takes longer than a frame
    assert max(ahead) <= 0.1 + FRAME + 1e-9
    assert min(ahead) == pytest.approx(FRAME)  # it never gets ahead at all


def test_zero_lead_is_strict_real_time() -> None:
    p = Pacer(FRAME, 0.0)
    end, ahead = run(p, 50, 10.0)
    assert max(ahead) <= FRAME + 1e-9 and end == pytest.approx(10.0 + 49 * FRAME, abs=1e-6)
