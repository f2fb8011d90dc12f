"""The conversation core without a server: intents and engine output in, jobs,
outbox items and closes out, through every lifecycle state."""

from __future__ import annotations

import time

import numpy as np
import pytest

from server import protocol as p
from server.config import Settings
from server.conversation import setup
from server.conversation.core import Conversation
from server.conversation.phase import Phase
from server.conversation.restore import restore_into
from server.conversation.types import CLOSE_NORMAL, CLOSE_SERVICE_RESTART, Restore, ResumedChunk
from server.engines.jobs import (
    ChunkDone,
    ChunkTimings,
    EngineFailed,
    Job,
    SegmentStart,
    UtteranceDone,
    WordTime,
)
from server.metrics import Metrics
from server.streaming.chunker import ChunkPolicy
from tests.conversation.fakes import FakeEngine, RecordingSink, RecordingWorker

PCM = p.OutputFormat(encoding="pcm_s16le", sample_rate=16000, frame_ms=20)
FRAME = b"\0" * 640  # one 20 ms frame of 16-bit PCM at 16 kHz


def phase_of(r: Rig) -> Phase:
    return r.conv.phase  # read through a call: mypy would narrow the attribute


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Rig:
    def __init__(self, settings: Settings | None = None, plan: list[str] | None = None) -> None:
        self.piper = RecordingWorker(FakeEngine("piper"))
        self.f5 = RecordingWorker(FakeEngine("f5", 24000, plan), chunk_pcm=False)
        self.settings = settings or Settings()
        self.clock = Clock()
        self.metrics = Metrics()
        self.conv = Conversation(
            "s1",
            self.settings,
            {"piper": self.piper, "f5": self.f5},
            self.metrics,
            ChunkPolicy(),
            clock=self.clock,
        )
        self.notified = 0
        self.conv.notify = self._notify

    def _notify(self) -> None:
        self.notified += 1

    def start(self, engine: str | None = None) -> None:
        spec = setup.resolve(self.settings, self.conv.workers, engine, None, None, 1.0, PCM)
        self.conv.start(spec, "token")

    def out(self) -> list[object]:
        """Everything in the outbox, as the sender would take it."""
        items = []
        while (o := self.conv.pop()) is not None:
            items.append(o[1])
        return items

    def events(self) -> list[p.ServerMessage]:
        return [i for i in self.out() if not isinstance(i, bytes)]  # type: ignore[misc]

    def errors(self) -> list[str]:
        return [e.code for e in self.events() if isinstance(e, p.Error)]

    def run(self, worker: RecordingWorker, frames: int = 3) -> Job:
        """The worker runs its next job: a chunk's frames, or a marker's completion."""
        job = worker.pop()
        if job.kind == "chunk":
            out = [SegmentStart(job.index, job.text), *[FRAME] * frames]
            out.append(ChunkDone(job.index, len(job.text), 0.01, 0.02, 0.06))
        else:
            out = [UtteranceDone(job.kind)]
        self.conv.on_output(job.generation, out)  # type: ignore[arg-type]
        return job


def test_start_says_ready_and_takes_text() -> None:
    r = Rig()
    assert phase_of(r) is Phase.AWAITING_START
    r.start()
    assert phase_of(r) is Phase.STREAMING
    [ready] = r.events()
    assert isinstance(ready, p.Ready)
    assert (ready.engine, ready.voice, ready.resume_token) == ("piper", r.settings.voice, "token")
    assert ready.pre_skip == 0 and ready.output.encoding == "pcm_s16le"


def test_a_second_start_is_refused() -> None:
    r = Rig()
    r.start()
    with pytest.raises(p.ProtocolError) as e:
        r.start()
    assert e.value.code == "already_started"
    assert phase_of(r) is Phase.STREAMING


@pytest.mark.parametrize("intent", ["text", "flush", "cancel", "end", "ack"])
def test_intents_before_start_are_refused(intent: str) -> None:
    r = Rig()
    with pytest.raises(p.ProtocolError) as e:
        if intent == "text":
            r.conv.text("hi")
        elif intent == "ack":
            r.conv.ack(0)
        else:
            getattr(r.conv, intent)()
    assert e.value.code == "not_started"
    assert f"'{intent}' before 'start'" in e.value.message
    assert phase_of(r) is Phase.AWAITING_START and not r.piper.queued


def test_text_becomes_chunk_jobs_in_order_and_the_first_goes_first() -> None:
    r = Rig()
    r.start()
    r.conv.text("Hello there, my friend. How are you today? ")
    r.conv.flush()
    jobs = r.piper.queued
    chunks = [j for j in jobs if j.kind == "chunk"]
    assert [j.index for j in chunks] == list(range(len(chunks))) and len(chunks) >= 2
    assert chunks[0].first and not any(j.first for j in chunks[1:])
    assert "".join(j.text for j in chunks).replace(" ", "") == (
        "Hello there, my friend. How are you today?".replace(" ", "")
    )
    assert jobs[-1].kind == "flush" and r.conv.markers_pending == 1
    assert all(j.stream is r.conv.stream and j.generation == 0 for j in jobs)
    assert r.conv.pending_chars == sum(len(j.text) for j in chunks)


def test_engine_output_reaches_the_outbox_with_segments_numbered_by_frame() -> None:
    r = Rig()
    r.start()
    r.out()
    r.conv.text("One sentence here, and more. ")
    r.conv.flush()
    while r.piper.queued:
        r.run(r.piper)
    out = r.out()
    segments = [o for o in out if isinstance(o, p.Segment)]
    frames = [o for o in out if isinstance(o, bytes)]
    assert [s.first_frame for s in segments] == [3 * i for i in range(len(segments))]
    assert len(frames) == 3 * len(segments) == r.conv.frames_sent
    assert isinstance(out[-1], p.Flushed)
    assert r.conv.pending_chars == 0 and r.conv.markers_pending == 0 and r.conv.idle()


def test_time_to_first_audio_counts_from_the_first_chunk_to_its_first_frame_sent() -> None:
    r = Rig()
    r.start()
    r.out()
    r.conv.text("Timing the first audio, please. ")
    r.run(r.piper)
    r.clock.t += 0.25
    while (o := r.conv.pop()) is not None:
        if o[0]:
            r.conv.sent(len(FRAME))
    assert r.conv.ttfa == [pytest.approx(0.25)]
    assert r.conv.audio_s_sent == pytest.approx(0.06)


def test_end_then_done_closes_normally_and_refuses_more_text() -> None:
    r = Rig()
    r.start()
    r.conv.text("Last words. ")
    r.conv.end()
    assert phase_of(r) is Phase.ENDING
    with pytest.raises(p.ProtocolError) as e:
        r.conv.text("more")
    assert e.value.code == "session_ending" and "'text' after 'end'" in e.value.message
    for intent in ("flush", "end"):
        with pytest.raises(p.ProtocolError):
            getattr(r.conv, intent)()
    while r.piper.queued:
        r.run(r.piper)
    assert phase_of(r) is Phase.CLOSING
    assert r.conv.close_after == (CLOSE_NORMAL, "done")
    done = [e for e in r.events() if isinstance(e, p.Done)]
    assert done == [p.Done(frames=3)]


def test_acks_go_on_while_ending_and_are_checked() -> None:
    r = Rig()
    sink = RecordingSink()
    r.conv.use_sink(sink)
    r.start()
    r.conv.text("Ack me. ")
    r.conv.end()
    r.run(r.piper)
    sink.flush()
    r.out()
    r.conv.ack(2)
    assert ("ack", 2) in sink.calls
    with pytest.raises(p.ProtocolError) as e:
        r.conv.ack(3)
    assert e.value.code == "invalid_ack" and "frames 0 to 2" in e.value.message


def test_cancel_drops_queued_work_unsent_audio_and_late_output() -> None:
    r = Rig()
    r.start()
    r.out()
    r.conv.text("A first sentence, then some. And a second one follows. ")
    running = r.piper.pop()  # in flight on a worker thread
    r.conv.on_output(running.generation, [SegmentStart(0, running.text), FRAME, FRAME])
    assert r.conv.outbox.frames_queued == 2
    r.conv.cancel()
    assert r.conv.generation == 1 and r.conv.stream is not None
    assert r.conv.stream.generation == 1
    assert r.piper.cancelled == 1 and not r.piper.queued
    assert r.conv.outbox.frames_queued == 0 and r.conv.pending_chars == 0
    r.conv.on_output(running.generation, [FRAME, ChunkDone(0, 5, 0.0, 0.0, 0.1)])
    assert r.out() == [p.Cancelled()]
    assert phase_of(r) is Phase.STREAMING
    r.conv.text("After the barge-in. ")
    r.conv.flush()
    job = r.piper.queued[0]
    assert job.generation == 1 and job.first


def test_cancel_is_journaled_with_what_was_sent() -> None:
    r = Rig()
    sink = RecordingSink()
    r.conv.use_sink(sink)
    r.start()
    r.conv.text("Journal this. ")
    r.conv.cancel()
    assert ("text", "Journal this. ") in sink.calls
    assert ("cancel", (0, len("Journal this. "), 0)) in sink.calls
    assert ("drop", None) in sink.calls


def test_text_limits_name_the_limit() -> None:
    r = Rig(Settings(max_session_chars=150, max_buffered_chars=100))
    r.start()
    r.conv.text("x" * 60)
    with pytest.raises(p.ProtocolError) as e:
        r.conv.text("y" * 50)
    assert e.value.code == "text_buffer_full" and "limit is 100" in e.value.message
    assert "60 characters are waiting" in e.value.message
    r.conv.cancel()
    r.conv.text("z" * 30)
    with pytest.raises(p.ProtocolError) as e:
        r.conv.text("w" * 70)
    assert e.value.code == "session_text_limit" and "max_session_chars" in e.value.message
    assert r.conv.chars_in == 90


def test_unsent_audio_bounds_the_engine_work_and_sending_wakes_it() -> None:
    r = Rig(Settings(max_unsent_audio_s=0.1))
    r.start()
    r.out()
    assert r.conv.can_take_work()
    r.conv.on_output(0, [FRAME] * 5)
    assert not r.conv.can_take_work()
    assert r.conv.stream is not None and not r.conv.stream.can_take_work()
    r.conv.pop()
    r.conv.sent(len(FRAME))
    assert r.conv.can_take_work() and r.piper.wakes == 1
    r.conv.socket_sampled(0.5)  # the client's TCP holds sent audio
    assert not r.conv.can_take_work()
    r.conv.socket_sampled(0.0)
    assert r.conv.can_take_work() and r.piper.wakes == 2


def test_engine_failure_without_fallback_is_an_error_event() -> None:
    r = Rig()
    r.start()
    r.out()
    r.conv.text("Fails. ")
    r.conv.flush()
    job = r.piper.pop()
    r.conv.on_output(job.generation, [EngineFailed("engine_error", "boom", chars=len(job.text))])
    [err] = r.events()
    assert isinstance(err, p.Error) and (err.code, err.message, err.fatal) == (
        "engine_error",
        "boom",
        False,
    )
    assert phase_of(r) is Phase.STREAMING


def test_fallback_moves_the_stream_and_its_queue_keeping_the_encoder() -> None:
    r = Rig(Settings(f5_fallback_engine="piper"))
    r.start("f5")
    r.out()
    conv = r.conv
    assert conv.spec is not None
    encoder = conv.spec.pipeline.encoder
    conv.text("First part, then. Second sentence here. Third one too. ")
    conv.flush()
    failed = r.f5.pop()
    queued = [j.text for j in r.f5.queued]
    conv.on_output(
        failed.generation, [EngineFailed("engine_unavailable", "circuit open", retry=[failed])]
    )
    assert conv.spec.engine == "piper" and conv.spec.voice == r.settings.voice
    assert conv.spec.pipeline.encoder is encoder  # the listener's stream goes on
    assert conv.stream is not None and conv.stream.pipeline is conv.spec.pipeline
    assert conv.stream.pipeline_generation == conv.generation  # no reset at the next job
    assert not r.f5.queued
    assert [j.text for j in r.piper.queued] == [failed.text, *queued]
    assert r.piper.queued[-1].kind == "flush"
    [err] = r.events()
    assert isinstance(err, p.Error) and err.code == "engine_fallback"
    assert "'f5' failed (engine_unavailable: circuit open)" in err.message
    while r.piper.queued:
        r.run(r.piper)
    assert isinstance(r.events()[-1], p.Flushed)


def test_fallback_renumbers_the_rest_of_an_announced_chunk() -> None:
    r = Rig(Settings(f5_fallback_engine="piper"))
    r.start("f5")
    r.conv.text("Some words here. ")
    r.conv.flush()
    job = r.f5.pop()
    rest = Job(job.stream, job.generation, "chunk", text="here.", index=-1)
    r.conv.on_output(job.generation, [EngineFailed("x", "y", retry=[rest])])
    assert r.piper.queued[0].index == r.conv.segments - 1 >= 1


def test_fallback_with_nowhere_to_go_reports_the_failure() -> None:
    r = Rig(Settings(f5_fallback_engine="nowhere"))
    r.start("f5")
    r.out()
    r.conv.text("Some words here. ")
    r.conv.flush()
    job = r.f5.pop()
    r.conv.on_output(job.generation, [EngineFailed("engine_error", "down", retry=[job])])
    assert r.conv.spec is not None and r.conv.spec.engine == "f5"
    assert r.errors() == ["engine_error"] and r.conv.pending_chars == 0


def test_a_journaling_sink_gets_engine_pieces_as_chunks_and_holds_output() -> None:
    r = Rig(plan=["Part one,", "part two."])
    sink = RecordingSink()
    r.conv.use_sink(sink)
    r.start("f5")
    r.out()
    r.conv.text("Part one, part two. ")
    r.conv.flush()
    chunks = [j.text for j in r.f5.queued if j.kind == "chunk"]
    assert chunks == ["Part one, ", "part two."]
    job = r.f5.pop()
    r.conv.on_output(job.generation, [SegmentStart(0, job.text), FRAME])
    assert r.conv.outbox.frames_queued == 0  # held until durable
    sink.flush()
    assert r.conv.outbox.frames_queued == 1


def test_chunk_pcm_is_asked_for_only_while_journaling() -> None:
    r = Rig()
    r.start()
    assert r.conv.stream is not None and not r.conv.stream.wants_chunk_pcm()
    sink = RecordingSink()
    r.conv.use_sink(sink)
    assert r.conv.stream.wants_chunk_pcm()
    sink.journaling = False  # the store failed: stream without journaling
    assert not r.conv.stream.wants_chunk_pcm()


def test_fail_drops_everything_once_and_closes() -> None:
    r = Rig()
    r.start()
    r.conv.text("Going. ")
    fatal = r.conv.fail("idle_timeout", "no message for 30 s", 1008)
    assert fatal is not None and (fatal.code, fatal.close_code) == ("idle_timeout", 1008)
    assert phase_of(r) is Phase.CLOSED and r.piper.cancelled == 1
    assert r.conv.fail("again", "x", 1000) is None
    r.conv.text("ignored after the close")
    r.conv.on_output(0, [FRAME])
    assert r.conv.outbox.frames_queued == 0 and not r.piper.queued


@pytest.mark.parametrize("phase", ["awaiting", "streaming", "ending", "closing"])
def test_close_from_every_state(phase: str) -> None:
    r = Rig()
    if phase != "awaiting":
        r.start()
    if phase in ("ending", "closing"):
        r.conv.end()
    if phase == "closing":
        while r.piper.queued:
            r.run(r.piper)
        assert phase_of(r) is Phase.CLOSING
    r.conv.close()
    assert phase_of(r) is Phase.CLOSED and r.conv.closed
    assert r.conv.generation >= 1


def test_drain_of_an_idle_conversation_closes_it_with_a_resume_hint() -> None:
    r = Rig()
    sink = RecordingSink()
    r.conv.use_sink(sink)
    r.start()
    r.out()
    r.conv.begin_drain()
    assert phase_of(r) is Phase.CLOSING
    assert r.conv.close_after == (CLOSE_SERVICE_RESTART, "server draining")
    [err] = r.events()
    assert isinstance(err, p.Error) and err.code == "server_draining" and err.fatal
    assert err.resume == p.ResumeHint(session_id="s1", from_frame=0)
    with pytest.raises(p.ProtocolError) as e:
        r.conv.text("more")
    assert e.value.code == "server_draining"


def test_drain_of_a_busy_conversation_waits_for_its_utterance() -> None:
    r = Rig()
    r.start()
    r.out()
    r.conv.text("Still speaking. ")
    r.conv.flush()
    r.conv.begin_drain()
    assert phase_of(r) is Phase.STREAMING and r.conv.drain_when_idle
    while r.piper.queued:
        r.run(r.piper)
    assert phase_of(r) is Phase.CLOSING
    codes = [e.code for e in r.events() if isinstance(e, p.Error)]
    assert codes == ["server_draining"]
    assert r.conv.resume_hint() is None  # no journal: nothing to resume


def test_drain_after_end_keeps_the_normal_close() -> None:
    r = Rig()
    r.start()
    r.conv.end()
    while r.piper.queued:
        r.run(r.piper)
    r.conv.begin_drain()
    assert r.conv.close_after == (CLOSE_NORMAL, "done")


def test_restore_replays_then_finishes_the_chunk_and_the_rest_in_order() -> None:
    r = Rig()
    r.conv.rename("old-session")
    spec = setup.resolve(r.settings, r.conv.workers, None, None, None, 1.0, PCM)
    text = "Done before. In progress now. Then this one. "
    done = len("Done before. ")
    chunk_text = "In progress now. "
    restore = Restore(
        session_id="old-session",
        next_frame=7,
        segments=2,
        chars_in=len(text),
        marks_in=1,
        carry=np.zeros(10, np.float32).tobytes(),
        replay=[('{"type":"segment"}', FRAME), ("", FRAME)],
        text=text,
        done_chars=done,
        marks=[(len(text), "flush")],
        chunk=ResumedChunk(1, chunk_text, np.zeros(1600, np.float32), skip_frames=2),
        finished=False,
    )
    restore_into(
        r.conv, restore, spec, "token2", resumed=True, next_frame=7, chars_accepted=len(text)
    )
    assert r.conv.id == "old-session" and r.conv.resumed
    out = r.out()
    ready = out[0]
    assert isinstance(ready, p.Ready) and ready.resumed and ready.next_frame == 7
    assert out[1:] == ['{"type":"segment"}', FRAME, FRAME]
    assert r.conv.frames_sent == 9
    jobs = r.piper.queued
    assert jobs[0].audio is not None and jobs[0].skip_frames == 2 and jobs[0].index == 1
    assert jobs[0].text == chunk_text
    assert [j.kind for j in jobs[1:]] == ["chunk", "flush"]
    assert jobs[1].text == "Then this one." and jobs[1].index == 2
    with pytest.raises(p.ProtocolError):
        r.conv.rename("another")


def test_restore_of_a_finished_session_only_replays_and_closes() -> None:
    r = Rig()
    spec = setup.resolve(r.settings, r.conv.workers, None, None, None, 1.0, PCM)
    restore = Restore(
        session_id="s0",
        next_frame=0,
        segments=1,
        chars_in=4,
        marks_in=1,
        carry=b"",
        replay=[("", FRAME)],
        text="Bye.",
        done_chars=4,
        marks=[],
        chunk=None,
        finished=True,
    )
    restore_into(r.conv, restore, spec, "t")
    assert phase_of(r) is Phase.CLOSING and not r.piper.queued
    out = r.out()
    assert out[-1] == p.Done(frames=1) and r.conv.close_after == (CLOSE_NORMAL, "done")


@pytest.mark.parametrize(
    ("state", "code"),
    [
        ("awaiting", "not_started"),
        ("streaming", None),
        ("ending", None),
        ("closing", None),
        ("draining", None),
        ("closed", None),
    ],
)
def test_cancel_in_each_state(state: str, code: str | None) -> None:
    r = Rig()
    if state != "awaiting":
        r.start()
        r.conv.text("Some text to speak, and more of it. ")
    if state in ("ending", "closing"):
        r.conv.end()
    if state == "closing":
        while r.piper.queued:
            r.run(r.piper)
    if state == "draining":
        r.conv.begin_drain()  # busy: drains once idle; still streaming until then
        r.conv.end()
    if state == "closed":
        r.conv.close()
    before = phase_of(r)
    r.out()
    if code is not None:
        with pytest.raises(p.ProtocolError) as e:
            r.conv.cancel()
        assert e.value.code == code
        assert phase_of(r) is before
        return
    gen = r.conv.generation
    r.conv.cancel()
    if state == "closed":
        assert r.out() == [] and r.conv.generation == gen  # nothing more happens
    elif state == "streaming":
        assert r.out() == [p.Cancelled()] and r.conv.generation == gen + 1
        assert phase_of(r) is Phase.STREAMING and not r.piper.queued
    else:
        # Barge-in after 'end': the audio stops now, and the conversation ends as 'end'
        # would have: 'cancelled', then 'done' counting only the frames sent, then 1000.
        out = r.out()
        assert not any(isinstance(o, bytes) for o in out)
        assert [o for o in out if not isinstance(o, bytes)] == [
            p.Cancelled(),
            p.Done(frames=r.conv.frames_sent),
        ]
        assert r.conv.generation == gen + 1 and not r.piper.queued
        assert phase_of(r) is Phase.CLOSING and r.conv.close_after == (CLOSE_NORMAL, "done")
        r.conv.on_output(gen, [FRAME, UtteranceDone("end")])  # late output of dropped work
        assert r.out() == []


def test_word_timings_land_on_the_stream_timeline() -> None:
    """A chunk's word times (from its first sample) become stream times: its segment's
    first frame, plus the samples carried into that frame, plus the word's offset."""
    r = Rig()
    r.conv.timings = True
    r.start()
    r.conv.text("Hello there. ")
    r.conv.flush()
    job = r.piper.pop()
    assert job.timings  # the worker is asked for them
    words = [WordTime(0, 5, 0.05, 0.3), WordTime(6, 11, 0.35, 0.6)]
    r.conv.on_output(
        job.generation,
        [
            SegmentStart(job.index, job.text),
            *[FRAME] * 4,
            ChunkTimings(job.index, 0.01, words),
        ],
    )
    r.out()  # 4 frames sent before the next chunk
    job2 = r.piper.pop()
    r.conv.text("Bye now. ")
    r.conv.flush()
    job3 = r.piper.pop()
    r.conv.on_output(
        job3.generation,
        [
            SegmentStart(job3.index, job3.text),
            ChunkTimings(job3.index, 0.004, [WordTime(0, 3, 0.1, 0.2)]),
        ],
    )
    out = [o for o in r.out() if isinstance(o, p.Words)]
    assert job2.kind == "flush"
    assert out == [
        p.Words(
            segment=job3.index,
            words=[p.WordTiming(text="Bye", char=0, start=0.184, end=0.284)],
        )
    ]
    # the first chunk's words came out right after its frames were queued
    r2 = Rig()
    r2.conv.timings = True
    r2.start()
    r2.conv.text("Hello there. ")
    r2.conv.flush()
    j = r2.piper.pop()
    r2.conv.on_output(
        j.generation,
        [SegmentStart(j.index, j.text), ChunkTimings(j.index, 0.0, words), FRAME],
    )
    [ev] = [o for o in r2.out() if isinstance(o, p.Words)]
    assert [(w.text, w.start, w.end) for w in ev.words] == [
        ("Hello", 0.05, 0.3),
        ("there", 0.35, 0.6),
    ]


def test_no_timings_unless_asked() -> None:
    r = Rig()
    r.start()
    r.conv.text("Hello there. ")
    r.conv.flush()
    assert not r.piper.pop().timings


def test_realtime_pacing_holds_frames_beyond_the_lead() -> None:
    r = Rig()
    paced = p.OutputFormat(
        encoding="pcm_s16le", sample_rate=16000, frame_ms=20, pacing=p.Pacing(lead_ms=40)
    )
    spec = setup.resolve(r.settings, r.conv.workers, None, None, None, 1.0, paced)
    r.conv.start(spec, "token")
    assert spec.output.pacing == p.Pacing(mode="realtime", lead_ms=40)
    r.conv.text("Hello there. ")
    r.conv.flush()
    r.run(r.piper, frames=10)
    sent = 0
    while sent < 4:  # the first frames go at once, up to the lead
        wait = r.conv.pace()
        if wait > 0:
            break
        o = r.conv.pop()
        if o is not None and o[0]:
            r.conv.sent(len(FRAME))
            sent += 1
    assert sent == 3 and r.conv.pace() == pytest.approx(0.02)  # 60 ms out, 40 ms lead
    r.clock.t += 0.02
    assert r.conv.pace() == 0.0
    # asap (the default) never waits
    plain = Rig()
    plain.start()
    plain.conv.text("Hello there. ")
    plain.conv.flush()
    plain.run(plain.piper, frames=10)
    assert plain.conv.pace() == 0.0


def test_frames_made_tell_the_engine_queue_when_the_listener_runs_out() -> None:
    r = Rig()
    r.start()
    r.out()
    r.conv.text("A first sentence, then some. And a second one follows. ")
    stream = r.conv.stream
    assert stream is not None and stream.runs_out == 0.0
    r.run(r.piper, frames=50)  # one second of 20 ms frames
    assert stream.runs_out == pytest.approx(time.perf_counter() + 1.0, abs=0.2)
    r.conv.cancel()  # barge-in: the listener's audio stops
    assert stream.runs_out == 0.0


def test_a_saturated_engine_gets_a_shorter_first_chunk() -> None:
    text = "Our meeting with the bank has moved to Thursday afternoon. "
    for busy, first in ((False, text.strip()), (True, "Our meeting with the bank")):
        r = Rig()
        r.start()
        r.piper.busy = busy
        r.conv.text(text)
        r.conv.flush()
        assert r.piper.queued[0].text == first and r.piper.queued[0].first
