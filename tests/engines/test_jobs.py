"""The engine queue's order (DeadlineQueue), without threads or an engine: deadlines from
the listener's audio, first chunks, round robin, and what is skipped."""

from __future__ import annotations

import time

import pytest

from server.engines.jobs import DeadlineQueue, Job, Stream
from server.streaming.encoder import make_encoder
from server.streaming.pipeline import AudioPipeline


def stream(name: str, ready: list[str] | None = None) -> Stream:
    pipe = AudioPipeline(16000, make_encoder("pcm_s16le", 16000, 20, None))
    return Stream(name, pipe, lambda _g, _i: None, lambda: ready is None or name in ready)


def chunk(s: Stream, first: bool = False) -> Job:
    return Job(s, 0, "chunk", text="Some words.", first=first)


def order(q: DeadlineQueue, busy: set[str] | None = None) -> list[str]:
    """Session of each job, in the order the queue hands them out one at a time."""
    out = []
    while jobs := q.pick(busy or set()):
        out.append(jobs[0].stream.session_id)
    return out


def test_the_session_about_to_fall_silent_goes_first() -> None:
    calm, close, later = stream("calm"), stream("close"), stream("later")
    now = time.perf_counter()
    calm.runs_out = now + 5.0  # five seconds of audio in hand
    close.runs_out = now + 0.35  # about to run out: its next chunk is due now
    later.runs_out = now + 2.0
    q = DeadlineQueue()
    for s in (calm, later, close):  # queued in round-robin order calm, later, close
        q.push(chunk(s))
    assert order(q) == ["close", "later", "calm"]


def test_a_first_chunk_goes_ahead_unless_another_would_underrun_first() -> None:
    calm, dry, new = stream("calm"), stream("dry"), stream("new")
    q = DeadlineQueue()
    q.lead_s = 0.3
    now = time.perf_counter()
    calm.runs_out = now + 3.0
    q.push(chunk(calm))
    q.push(chunk(new, first=True))
    assert order(q) == ["new", "calm"]
    # A session whose audio already ran out waited before the new utterance came.
    dry.runs_out = now - 0.2
    q.push(chunk(calm))
    q.push(chunk(dry))
    q.push(chunk(new, first=True))
    assert order(q) == ["dry", "new", "calm"]


def test_equal_deadlines_are_served_round_robin() -> None:
    a, b = stream("a"), stream("b")  # later chunks, no audio made yet (a resumed session)
    q = DeadlineQueue()
    for _ in range(3):
        q.push(chunk(a))
    for _ in range(3):
        q.push(chunk(b))
    assert order(q) == ["a", "b", "a", "b", "a", "b"]


def test_busy_and_backpressured_sessions_wait_their_turn() -> None:
    ready = ["a"]
    a, b, c = stream("a", ready), stream("b", ready), stream("c", ready)
    q = DeadlineQueue()
    for s in (a, b, c):
        q.push(chunk(s, first=True))
    assert order(q, busy={"a"}) == []  # b and c do not take work, a is busy
    ready.append("c")
    assert order(q, busy={"a"}) == ["c"]
    assert q.depth == 2


def test_a_batch_is_picked_in_deadline_order() -> None:
    now = time.perf_counter()
    streams = [stream(n) for n in "abcd"]
    for s, ahead in zip(streams, (4.0, 1.0, 3.0, 2.0), strict=True):
        s.runs_out = now + ahead
    q = DeadlineQueue()
    for s in streams:
        q.push(chunk(s))
    assert [j.stream.session_id for j in q.pick(set(), limit=3)] == ["b", "d", "c"]
    assert [j.stream.session_id for j in q.pick(set(), limit=3, accept=lambda j: False)] == []


def test_played_audio_moves_the_deadline_and_silence_restarts_it() -> None:
    s = stream("s")
    t0 = time.perf_counter()
    s.played(1.0)
    s.played(0.5)  # played back to back: the listener's audio runs out 1.5 s on
    assert s.runs_out == pytest.approx(t0 + 1.5, abs=0.05)
    s.runs_out = t0 - 10.0  # long silent: new audio plays from now
    s.played(0.2)
    assert s.runs_out == pytest.approx(time.perf_counter() + 0.2, abs=0.05)


def test_the_lead_follows_the_engine() -> None:
    q = DeadlineQueue()
    for _ in range(30):
        q.observe_lead(1.2)  # a slow engine (F5 on a CPU)
    assert q.lead_s == pytest.approx(1.2, abs=0.01)
    s = stream("s")
    s.runs_out = time.perf_counter() + 5.0
    assert q.deadline(chunk(s), 0.0) == pytest.approx(s.runs_out - q.lead_s)
