"""When a conversation ends on its own: timeouts and slow consumers."""

from __future__ import annotations

from server.config import Settings
from server.conversation.liveness import Liveness
from tests.conversation.test_core import FRAME, Rig

S = Settings(
    start_timeout_s=5,
    idle_timeout_s=10,
    max_session_s=100,
    max_unsent_audio_s=1.0,
    slow_consumer_timeout_s=2.0,
    slow_consumer_min_rate=0.5,
)


def test_start_timeout_only_before_start() -> None:
    r = Rig(S)
    live = Liveness(S, 0.0)
    assert live.check(r.conv, 5.0, False) is None
    fault = live.check(r.conv, 5.1, False)
    assert fault is not None and fault.code == "start_timeout" and "5 s" in fault.message
    r.start()
    live.client_message(5.1)
    assert live.check(r.conv, 6.0, False) is None


def test_max_session_counts_from_the_session_start() -> None:
    r = Rig(S)
    r.start()
    live = Liveness(S, -95.0)  # a resumed session that began 95 s ago
    live.client_message(0.0)
    assert live.check(r.conv, 4.0, False) is None
    fault = live.check(r.conv, 5.5, False)
    assert fault is not None and fault.code == "session_too_long"
    assert fault.close_code == 1008


def test_idle_timeout_waits_while_audio_is_being_made() -> None:
    r = Rig(S)
    r.start()
    r.out()
    live = Liveness(S, 0.0)
    r.conv.text("Working on it. ")
    r.conv.flush()  # a flush to run counts as work
    assert live.check(r.conv, 11.0, False) is None
    while r.piper.queued:
        r.run(r.piper)
    r.out()
    fault = live.check(r.conv, 11.0, False)
    assert fault is not None and fault.code == "idle_timeout"


def test_unsent_audio_over_the_bound_for_too_long_is_a_slow_consumer() -> None:
    r = Rig(S)
    r.start()
    r.out()
    live = Liveness(S, 0.0)
    r.conv.on_output(0, [FRAME] * 60)  # 1.2 s waiting
    live.client_message(0.0)
    assert live.check(r.conv, 1.0, False) is None
    assert live.check(r.conv, 2.9, False) is None
    fault = live.check(r.conv, 3.1, False)
    assert fault is not None and fault.code == "slow_consumer"
    assert "max_unsent_audio_s=1" in fault.message


def test_a_client_that_takes_audio_too_slowly_is_a_slow_consumer() -> None:
    r = Rig(S)
    r.start()
    r.out()
    live = Liveness(S, 0.0)
    r.conv.on_output(0, [FRAME] * 10)  # 0.2 s: under the unsent bound
    for t in (0.0, 1.0, 1.9):
        live.client_message(t)
        assert live.check(r.conv, t, True) is None
    r.conv.pop()
    r.conv.sent(len(FRAME))  # 0.02 s in 2.5 s: far below 0.5 s/s
    fault = live.check(r.conv, 2.5, True)
    assert fault is not None and fault.code == "slow_consumer" and "took 0.01 s" in fault.message


def test_a_client_that_keeps_up_is_not_slow() -> None:
    r = Rig(S)
    r.start()
    r.out()
    live = Liveness(S, 0.0)
    r.conv.on_output(0, [FRAME] * 40)  # 0.8 s waiting, under the bound
    for step in range(40):
        t = step * 0.25
        live.client_message(t)
        assert live.check(r.conv, t, True) is None
        for _ in range(13):  # 0.26 s of audio every 0.25 s
            if r.conv.pop() is not None:
                r.conv.sent(len(FRAME))
        r.conv.on_output(0, [FRAME] * 13)
