"""The conversation core's sending half: the outbox as the adapter's sender drains
it (``pop``, ``sent``), pacing and talkspurts, and the counters a sent frame moves.
Sans-I/O like the rest of the core (server/conversation/core.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from server import protocol as p
from server.config import Settings
from server.conversation.setup import StreamSpec
from server.conversation.timings import SegmentClock
from server.conversation.types import Outgoing
from server.engines.jobs import ChunkTimings, SegmentStart
from server.metrics import Metrics
from server.streaming.outbox import Outbox
from server.streaming.pacer import Pacer


class Sending:
    """Mixed into ``Conversation``, which sets these attributes."""

    settings: Settings
    metrics: Metrics
    log: Any  # a bound structlog logger
    spec: StreamSpec | None
    outbox: Outbox
    notify: Callable[[], None]
    clock: Callable[[], float]
    protocol: str
    pacer: Pacer | None
    segment_clock: SegmentClock
    frames_sent: int
    bytes_sent: int
    audio_s_sent: float
    socket_unsent_s: float
    ttfa: list[float]
    _first_chunk_t0: dict[int, float]
    _ttfa_t0: float | None

    @property
    def engine_name(self) -> str:
        return self.spec.engine if self.spec is not None else ""

    @property
    def unsent_s(self) -> float:
        """Audio made for the client and not taken by it: the outbox, plus what sits in
        this side's socket buffers (sampled by the adapter)."""
        return self.outbox.audio_s + self.socket_unsent_s

    def can_take_work(self) -> bool:
        return self.unsent_s < self.settings.max_unsent_audio_s

    def put(self, msg: p.ServerMessage) -> None:
        self.outbox.put_message(msg)
        self.notify()

    def error(
        self, code: str, message: str, fatal: bool = False, resume: p.ResumeHint | None = None
    ) -> None:
        """A non-fatal error event (fatal ones go through ``fail``)."""
        self.metrics.errors.labels(code).inc()
        self.log.info("client_error", code=code, message=message, fatal=fatal)
        self.put(p.Error(code=code, message=message, fatal=fatal, resume=resume))

    def pop(self) -> Outgoing | None:
        """The next frame or message to send, or None when the outbox is empty. A frame
        is numbered here, before its send: a cancel during the send must not reuse it."""
        if not self.outbox:
            return None
        is_frame, item = self.outbox.pop()
        if is_frame:
            self.frames_sent += 1
            return True, item
        if isinstance(item, SegmentStart):
            t0 = self._first_chunk_t0.pop(item.index, None)
            if t0 is not None:
                self._ttfa_t0 = t0
            self.segment_clock.reached(
                item.index, self.frames_sent * self.outbox.frame_s, item.text
            )
            item = p.Segment(index=item.index, text=item.text, first_frame=self.frames_sent)
        elif isinstance(item, ChunkTimings):
            words = self.segment_clock.words(item)
            return (False, words) if words is not None else self.pop()
        elif isinstance(item, p.Done):
            item = p.Done(frames=self.frames_sent)
        elif isinstance(item, p.Error) and item.resume is not None:
            # The hint was made when the notice was queued; the frames queued before it
            # leave before it, so the client has those too (a stale count replays them).
            hint = p.ResumeHint(session_id=item.resume.session_id, from_frame=self.frames_sent)
            item = p.Error(code=item.code, message=item.message, fatal=item.fatal, resume=hint)
        return False, item

    def frame_next(self) -> bool:
        return self.outbox.frame_next()

    def pop_frames(self, first: bytes, most: int) -> list[bytes]:
        """``first`` (a frame just popped) and the frames queued right behind it, up to
        ``most`` in all: a burst the adapter sends in one write. Unpaced streams only
        (a paced stream's frames leave one at a time, when the pacer says)."""
        more = self.outbox.pop_frames(most - 1)
        self.frames_sent += len(more)
        return [first, *more]

    def pace(self) -> float:
        """Seconds the sender waits before the next frame (``output.pacing``), else 0."""
        if self.pacer is None or not self.outbox.frame_next():
            return 0.0
        return self.pacer.wait(self.clock())

    def starts_spurt(self) -> bool:
        """Whether the next frame starts a talkspurt (paced streams: the pacer's model)."""
        return self.pacer is not None and self.pacer.starts_spurt(self.clock())

    def sent(self, nbytes: int, frames: int = 1) -> None:
        """``frames`` frames of ``nbytes`` in all left (popped in order, one write):
        count them, time the first audio, let the engine on."""
        audio_s = self.outbox.frame_s * frames
        if self.pacer is not None:
            self.pacer.sent(self.clock())
        self.bytes_sent += nbytes
        self.audio_s_sent += audio_s
        self.metrics.frames_sent.inc(frames)
        self.metrics.audio_seconds.inc(audio_s)
        if self._ttfa_t0 is not None:
            dt = self.clock() - self._ttfa_t0
            self.ttfa.append(dt)
            self.metrics.ttfa.labels(self.engine_name, self.protocol).observe(dt)
            self._ttfa_t0 = None
        if self.spec is not None and self.can_take_work():
            self.spec.worker.wake()

    def socket_sampled(self, unsent_s: float) -> None:
        """The adapter measured how much sent audio the client's TCP has not taken."""
        was = self.socket_unsent_s
        self.socket_unsent_s = unsent_s
        limit = self.settings.max_unsent_audio_s
        if was >= limit > unsent_s and self.spec is not None:
            self.spec.worker.wake()  # the client caught up: the engine may go on
