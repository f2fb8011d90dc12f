"""The conversation core: one stream of speech, whatever wire protocol carries it.

Sans-I/O. It takes the client's intents (``start``, ``text``, ``flush``, ``cancel``,
``end``, ``ack``, ``restore`` for a resume) and the engine worker's output
(``on_output``), and answers with what to do: jobs for the worker, frames and events
in the outbox (``pop``), records for the sink (resume journaling), and when to
close (``close_after``, or the ``Fatal`` that ``fail`` returns). It never awaits
and never touches a socket or the store: an adapter (server/ws/, speech.py) does.

Ordering questions (is this frame older than that cancel?) are answered by the
generation number alone: every barge-in and close moves it on, and output of an
older generation is dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import structlog

from server import protocol as p
from server.config import Settings
from server.conversation import setup
from server.conversation.phase import Phase, check, started, takes_text
from server.conversation.ports import NullSink, Sink, Worker
from server.conversation.sending import Sending
from server.conversation.setup import StreamSpec
from server.conversation.timings import SegmentClock
from server.conversation.types import (
    CLOSE_NORMAL,
    CLOSE_SERVICE_RESTART,
    DRAIN_MESSAGE,
    Fatal,
)
from server.engines.base import EngineError
from server.engines.jobs import (
    ChunkDone,
    ChunkTimings,
    EngineFailed,
    Job,
    Output,
    SegmentStart,
    Stream,
    UtteranceDone,
)
from server.metrics import Metrics
from server.streaming.chunker import ChunkPolicy, SentenceChunker
from server.streaming.outbox import Outbox
from server.streaming.pacer import Pacer

log = structlog.get_logger("voxwire.conversation")


class Conversation(Sending):
    """One stream of speech; the sending half (``pop``, ``sent``, pacing) is ``Sending``."""

    def __init__(
        self,
        session_id: str,
        settings: Settings,
        workers: Mapping[str, Worker],
        metrics: Metrics,
        chunk_policy: ChunkPolicy | None = None,
        clock: Callable[[], float] = time.perf_counter,
        protocol: str = "native",
    ) -> None:
        self.id = session_id
        self.protocol = protocol  # the wire protocol, a metrics label
        self.settings = settings
        self.workers = workers
        self.metrics = metrics
        self.clock = clock
        self.log = log.bind(session_id=session_id)
        self.phase = Phase.AWAITING_START
        self.spec: StreamSpec | None = None
        self.stream: Stream | None = None
        self.sink: Sink = NullSink()
        self.chunker = SentenceChunker(chunk_policy or ChunkPolicy())
        self.outbox = Outbox(0.02)
        self.notify: Callable[[], None] = lambda: None  # the outbox got something
        self.generation = 0
        self.resumed = False
        self.timings = False  # word timings wanted (a ``words`` event per segment)
        self.segment_clock = SegmentClock()
        self.pacer: Pacer | None = None  # output.pacing realtime
        self.draining = False
        self.drain_when_idle = False  # close once the running utterance is done
        self.close_after: tuple[int, str] | None = None  # once the outbox is empty
        self.frames_sent = 0  # frames are numbered by the order they are sent
        self.segments = 0
        self.pending_chars = 0  # text submitted to the engine and not finished
        self.markers_pending = 0  # flush/end jobs submitted and not yet done
        self.chars_in = 0
        self.marks_in = 0
        self.audio_s_sent = 0.0
        self.bytes_sent = 0
        self.peak_unsent_s = 0.0
        self.socket_unsent_s = 0.0  # audio the client's TCP has not taken (adapter samples)
        # time to first audio: utterance start -> its first frame sent
        self.utterance_t0: float | None = None
        self._first_chunk_t0: dict[int, float] = {}  # segment index -> utterance_t0
        self._ttfa_t0: float | None = None
        self.ttfa: list[float] = []

    # ------------------------------------------------------------------ state

    def _go(self, phase: Phase) -> None:
        self.phase = check(self.phase, phase)

    @property
    def closed(self) -> bool:
        return self.phase is Phase.CLOSED

    def live(self, generation: int) -> bool:
        return generation == self.generation and not self.closed

    def idle(self) -> bool:
        return (
            self.chunker.buffered_chars == 0
            and self.pending_chars == 0
            and self.markers_pending == 0
        )

    def busy(self) -> bool:
        """Work in hand: audio to send, text at the engine, a flush/end still to run."""
        return len(self.outbox) > 0 or self.pending_chars > 0 or self.markers_pending > 0

    @property
    def client_unsent_s(self) -> float:
        """What waits on the client: a paced outbox waits on the pacer (RTP: on nothing)."""
        return self.socket_unsent_s if self.pacer is not None else self.unsent_s

    def rename(self, session_id: str) -> None:
        """A resume continues another session: it goes on under that one's id."""
        if started(self.phase):
            raise p.ProtocolError("already_started", "this session has already started")
        self.id = session_id
        self.log = log.bind(session_id=session_id)

    def use_sink(self, sink: Sink) -> None:
        self.sink = sink

    # ------------------------------------------------------------------ start

    def start(self, spec: StreamSpec, resume_token: str | None = None, **ready: object) -> None:
        """The stream is set up: say ``ready`` and take text."""
        if started(self.phase):
            raise p.ProtocolError("already_started", "this session has already started")
        self._go(Phase.STREAMING)
        self._use(spec)
        self.metrics.sessions.labels(spec.engine, self.protocol).inc()
        self.put(
            p.Ready(
                session_id=self.id,
                output=spec.output,
                engine=spec.engine,
                voice=spec.voice,
                pre_skip=spec.pre_skip,
                resume_token=resume_token,
                **ready,  # type: ignore[arg-type]
            )
        )

    def _use(self, spec: StreamSpec) -> None:
        self.spec = spec
        self.outbox.frame_s = spec.output.frame_ms / 1000.0
        pacing = spec.output.pacing
        if pacing is not None and pacing.mode == "realtime" and self.pacer is None:
            self.pacer = Pacer(self.outbox.frame_s, pacing.lead_ms / 1000.0)
        if self.stream is None:
            self.stream = Stream(
                self.id, spec.pipeline, self.on_output, self.can_take_work, self._chunk_pcm
            )
            return
        # Engine fallback: no job of this stream is running, and the new pipeline keeps
        # the encoder's state, so the worker must not reset it at the next job.
        self.stream.pipeline = spec.pipeline
        self.stream.pipeline_generation = self.generation

    def _chunk_pcm(self) -> bool:
        """Whether the worker should hand a chunk's engine audio over whole first."""
        return self.sink.journaling and self.spec is not None and self.spec.worker.chunk_pcm

    # ------------------------------------------------------------------ intents

    def require_open(self, what: str) -> None:
        """Text, flush, cancel and end need a started, not ending conversation."""
        if not started(self.phase):
            raise p.ProtocolError("not_started", f"'{what}' before 'start'; send 'start' first")
        if not takes_text(self.phase) and not self.closed:
            if self.draining:
                raise p.ProtocolError("server_draining", DRAIN_MESSAGE)
            raise p.ProtocolError("session_ending", f"'{what}' after 'end'")

    def text(self, text: str) -> None:
        self.require_open("text")
        if self.closed:
            return
        limit = self.settings.max_session_chars
        if self.chars_in + len(text) > limit:
            # Whitespace and unspeakable text count too: the journal keeps all of it.
            raise p.ProtocolError(
                "session_text_limit",
                f"this session has sent {self.chars_in} characters and may send "
                f"{limit} in all (max_session_chars); this text ({len(text)} characters) "
                "was dropped — start a new session",
            )
        buffered = self.chunker.buffered_chars + self.pending_chars
        if buffered + len(text) > self.settings.max_buffered_chars:
            raise p.ProtocolError(
                "text_buffer_full",
                f"{buffered} characters are waiting to be spoken and the limit is "
                f"{self.settings.max_buffered_chars}; this text ({len(text)} characters) "
                "was dropped — send less at once or wait for audio",
            )
        self.chars_in += len(text)
        if text:
            self.sink.text(text)
        self.chunker.hurry = self._saturated()
        self._submit_chunks(self.chunker.push(text))

    def flush(self) -> None:
        self._mark("flush")

    def end(self) -> None:
        self._mark("end")

    def _mark(self, kind: str) -> None:
        self.require_open(kind)
        if self.closed:
            return
        self.sink.mark(self.chars_in, kind)
        self.marks_in += 1
        self._apply_mark(kind)

    def _apply_mark(self, kind: str) -> None:
        """flush or end: synthesize what is buffered, then the marker."""
        if kind == "end":
            self._go(Phase.ENDING)
        self.chunker.hurry = self._saturated()
        self._submit_chunks(self.chunker.flush())
        self._submit_marker(kind)

    def cancel(self) -> None:
        """Barge-in: drop queued text and unsent audio, then say ``cancelled``. It works
        until the last frame has left: after ``end`` (or a drain's last utterance) too,
        and then the conversation ends at once, as ``end`` would have."""
        if not started(self.phase):
            raise p.ProtocolError("not_started", "'cancel' before 'start'; send 'start' first")
        if self.closed:
            return
        ending = self.phase is not Phase.STREAMING
        self.drop_work()  # a queued 'done' goes too: it is put again after 'cancelled'
        self.chunker.clear()
        # the dropped text and unsent frames go from the journal too
        self.sink.cancel(self.frames_sent, self.chars_in, self.marks_in)
        self.outbox.put_message(p.Cancelled())
        if ending and (self.close_after is None or self.close_after[0] == CLOSE_NORMAL):
            if self.phase is Phase.ENDING:
                self._go(Phase.CLOSING)
            self.outbox.put_message(p.Done(frames=0), droppable=True)
            self.close_after = (CLOSE_NORMAL, "done")
        elif self.drain_when_idle and self.close_after is None:
            self._drain_close()  # nothing left to finish before the node goes
        self.notify()

    def ack(self, frame: int) -> None:
        """The client has played up to ``frame`` (acks keep coming after 'end')."""
        if not started(self.phase):
            raise p.ProtocolError("not_started", "'ack' before 'start'; send 'start' first")
        if frame >= self.frames_sent:
            raise p.ProtocolError(
                "invalid_ack",
                f"ack of frame {frame}, but only frames 0 to {self.frames_sent - 1} were sent",
            )
        self.sink.ack(frame)

    # ------------------------------------------------------------------ jobs

    def _submit_chunks(self, chunks: list[str]) -> None:
        assert self.spec is not None and self.stream is not None
        worker = self.spec.worker
        for text, raw in zip(chunks, self.chunker.raw_lengths, strict=True):
            extra = raw - len(text)  # the whitespace before it: the first piece's
            for chunk in self._pieces(text, self.utterance_t0 is None):
                first = self.utterance_t0 is None
                if first:
                    self.utterance_t0 = self.clock()
                    self._first_chunk_t0[self.segments] = self.utterance_t0
                job = self._job("chunk", chunk, first, self.segments)
                job.raw_chars, extra = len(chunk) + extra, 0
                worker.submit(job)
                self.segments += 1
                self.pending_chars += len(chunk)

    def _job(self, kind: str, text: str = "", first: bool = False, index: int = 0) -> Job:
        assert self.spec is not None and self.stream is not None
        s = self.spec
        return Job(
            self.stream,
            self.generation,
            kind,
            text=text,
            voice=s.voice,
            speed=s.speed,
            options=s.options,
            language=s.language or s.voice_language,
            first=first,
            index=index,
            timings=self.timings and kind == "chunk",
        )

    def _pieces(self, chunk: str, first: bool) -> list[str]:
        """With the journal on, F5's batched worker journals whole chunks: give it one
        engine piece (its own plan, as exact spans of ``chunk``) per chunk, so each goes
        out as soon as it is made, joined by the chunk-edge fade, not F5's cross-fade."""
        s = self.spec
        if s is None or not self.sink.journaling or s.worker.chunk_pcm:
            return [chunk]
        try:
            pieces = s.worker.engine.plan(chunk, s.voice, s.speed, first)
        except EngineError:
            return [chunk]  # the worker reports it
        return setup.piece_spans(chunk, pieces or [])

    def _submit_marker(self, kind: str) -> None:
        assert self.spec is not None
        self.markers_pending += 1
        self.spec.worker.submit(self._job(kind))
        self.utterance_t0 = None  # the next chunk starts a new utterance

    def _saturated(self) -> bool:
        """Whether this stream's engine has as much work as threads: a first chunk then
        goes out shorter (ChunkPolicy.hurry_words)."""
        return self.spec is not None and self.spec.worker.saturated()

    def drop_work(self) -> None:
        """Barge-in or close: a new generation; queued jobs and unsent audio go."""
        self.generation += 1
        if self.stream is not None:
            self.stream.generation = self.generation
            self.stream.runs_out = 0.0  # the listener's audio stops here
        self.markers_pending = 0
        if self.spec is not None:
            self.spec.worker.cancel(self.id)
        self.outbox.drop_audio()
        self.pending_chars = 0
        self.utterance_t0 = None
        self._first_chunk_t0.clear()
        self._ttfa_t0 = None
        self.sink.drop()

    # ------------------------------------------------------------------ engine output

    def on_output(self, generation: int, items: list[Output]) -> None:
        """The worker's output for a job of ``generation`` (on the event loop)."""
        if not self.live(generation):
            return  # late output of cancelled work
        for item in items:
            if isinstance(item, EngineFailed) and item.retry is not None:
                # Move to the fallback engine now, before the sink holds this output:
                # the failing worker must not run this stream's next job meanwhile.
                self._fall_back(item)
        self.sink.deliver(generation, items, self.release)

    def release(self, generation: int, items: list[Output]) -> None:
        """Engine output whose frames may now be sent."""
        if not self.live(generation):
            return
        frames = 0
        for item in items:
            if isinstance(item, bytes):
                self.outbox.put_frame(item)
                frames += 1
            elif isinstance(item, SegmentStart | ChunkTimings):
                # first_frame (and the words' times) are filled in when the sender
                # reaches it: frames are numbered in send order, and barge-in drops
                # queued ones.
                self.outbox.put_message(item, droppable=True)
            elif isinstance(item, ChunkDone):
                self._chunk_done(item)
            elif isinstance(item, UtteranceDone):
                self._utterance_done(item)
            elif isinstance(item, EngineFailed) and item.retry is None:
                self.error(item.code, item.message)
        if frames and self.stream is not None:
            self.stream.played(frames * self.outbox.frame_s)  # the engine queue's deadline
        self.peak_unsent_s = max(self.peak_unsent_s, self.outbox.audio_s)
        self.notify()

    def _chunk_done(self, item: ChunkDone) -> None:
        # (its real-time factor is the worker's to report: it knows the model)
        self.pending_chars = max(0, self.pending_chars - item.chars)

    def _utterance_done(self, item: UtteranceDone) -> None:
        self.markers_pending -= 1
        if item.marker == "flush":
            self.put(p.Flushed())
            if self.drain_when_idle and self.idle():
                self._drain_close()
            return
        self.outbox.put_message(p.Done(frames=0), droppable=True)
        self._go(Phase.CLOSING)
        self.close_after = (CLOSE_NORMAL, "done")

    def _fall_back(self, failed: EngineFailed) -> None:
        """The engine could not run this stream's work (a fault, or its circuit breaker
        is open): move to ``f5_fallback_engine`` with a notice, and run there the failed
        text and everything still queued, in order.

        Called from ``on_output``, so no job of this stream is in flight on the failing
        worker and the pipeline is not in use on a worker thread. The encoder is kept:
        the client's audio stream goes on without a reset.
        """
        old = self.spec
        retry = failed.retry or []
        target = None if old is None else setup.fallback(self.settings, self.workers, old)
        if old is None or target is None:
            self.error(failed.code, failed.message)
            self.pending_chars = max(0, self.pending_chars - sum(len(j.text) for j in retry))
            return
        jobs = retry + old.worker.take(self.id)
        self._use(target)
        self.error(
            "engine_fallback",
            f"engine {old.engine!r} failed ({failed.code}: {failed.message}); this "
            f"session continues on {target.engine!r} with voice {target.voice!r}",
        )
        for job in jobs:
            index = job.index
            if index < 0:  # the rest of a chunk whose segment was already announced
                index = self.segments
                self.segments += 1
            target.worker.submit(self._job(job.kind, job.text, job.first, index))

    # ------------------------------------------------------------------ drain and close

    def resume_hint(self) -> p.ResumeHint | None:
        if not self.sink.resumable:
            return None
        return p.ResumeHint(session_id=self.id, from_frame=self.frames_sent)

    def begin_drain(self) -> None:
        """The node is shutting down: close now if idle, else once the utterance is done."""
        self.draining = True
        if self.closed or self.close_after is not None:
            return
        if self.idle():
            self._drain_close()
        else:
            self.drain_when_idle = True

    def _drain_close(self) -> None:
        self._go(Phase.CLOSING)  # no more text: this node is going away
        self.error("server_draining", DRAIN_MESSAGE, fatal=True, resume=self.resume_hint())
        self.close_after = (CLOSE_SERVICE_RESTART, "server draining")

    def fail(
        self, code: str, message: str, close_code: int, resume: p.ResumeHint | None = None
    ) -> Fatal | None:
        """A fatal error: drop everything; the adapter says it and closes. None if the
        conversation was already closed."""
        if self.closed:
            return None
        self.close()
        self.metrics.errors.labels(code).inc()
        self.log.info("client_error", code=code, message=message, fatal=True)
        return Fatal(code, message, close_code, resume)

    def close(self) -> None:
        """The connection is gone (or a fatal error): nothing more is done."""
        if self.closed:
            return
        self.drop_work()
        self._go(Phase.CLOSED)
