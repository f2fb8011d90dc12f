"""One WebSocket session on ``/v1/stream``: the I/O edge around the streaming units.

text → SentenceChunker → EngineWorker (threads: engine → AudioPipeline) →
Outbox → sender task → WebSocket. The reader, the sender and a watchdog are
three coroutines of one session; every state change happens on the event loop,
so ordering questions (is this frame older than that cancel?) are answered by
the generation number alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import structlog
from redis.exceptions import RedisError
from starlette.websockets import WebSocket, WebSocketState

from server import protocol as p
from server.auth import key_of, key_still_valid
from server.engines.base import EngineError, from_pcm16
from server.engines.worker import (
    ChunkDone,
    ChunkPcm,
    EngineFailed,
    EngineWorker,
    Job,
    Output,
    SegmentStart,
    UtteranceDone,
)
from server.journal import Journal
from server.state.sessions import (
    ChunkAudio,
    Commit,
    Peek,
    ResumeUnavailable,
    SessionStore,
    Snapshot,
    StoredFrame,
    TokenUsed,
)
from server.state.tokens import ResumeTokenError
from server.streaming.chunker import SentenceChunker
from server.streaming.encoder import OpusEncoder, make_encoder
from server.streaming.outbox import Outbox
from server.streaming.pipeline import AudioPipeline
from server.tasks import cancel_all
from server.voices.registry import ensure_voice, server_voices
from server.ws_protocol import UNSENT_BYTES

if TYPE_CHECKING:
    from server.app import AppState

log = structlog.get_logger("voxwire.session")

# WebSocket close codes (RFC 6455 §7.4.1).
CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED = 1003
CLOSE_POLICY = 1008
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN = 1013
# Private-use code (4000-4999): another connection resumed this session (409: conflict).
CLOSE_SESSION_MOVED = 4409
STATE_MESSAGE = "the shared state store (Redis) is not reachable; retry shortly"
DRAIN_MESSAGE = (
    "this server is shutting down; reconnect to continue (the load balancer sends new "
    "connections to another node)"
)

_WATCHDOG_PERIOD_S = 0.25
_SLOT_REFRESH_S = 20.0  # well inside the limiter's slot_ttl_s
_KEY_CHECK_S = 2.0  # a revoked key's sessions end within this (plus the key ring's cache)
# Journaling (resume): a chunk's first _URGENT_S of frames are journaled (and sent) slice
# by slice; after that up to _BATCH_S of them at once, held at most _HOLD_S.
_URGENT_S = 0.5
_BATCH_S = 0.4
_HOLD_S = 0.05
_HEARTBEAT_S = 1.0  # the journal's record is kept alive (and checked for a takeover) this often


class SessionMeta(msgspec.Struct, kw_only=True):
    """A session's resolved settings, journaled so that another node can take it over."""

    engine: str
    voice: str
    language: str | None
    speed: float
    output: p.OutputFormat
    started_at: float  # wall clock: max_session_s counts from here, across resumes


class Session:
    def __init__(self, ws: WebSocket, state: AppState) -> None:
        self.ws = ws
        self.state = state
        self.settings = state.settings
        self.session_id = uuid.uuid4().hex
        self.log = log.bind(session_id=self.session_id)
        # Incremented on barge-in and on close: output of older jobs is dropped.
        self.generation = 0
        self.pipeline_generation = 0
        self.started = False
        self.worker: EngineWorker | None = None
        self.voice = ""
        self.speed = 1.0
        self.pipeline: AudioPipeline  # set by start
        self.output: p.OutputFormat | None = None
        self.chunker = SentenceChunker(state.chunk_policy)
        self.outbox = Outbox(0.02)
        self._has_items = asyncio.Event()
        self.frames_sent = 0  # frames are numbered by the order they are sent

        self.segments = 0
        self.pending_chars = 0  # text submitted to the engine and not finished
        self.chars_in = 0
        self.audio_s_sent = 0.0
        self.peak_unsent_s = 0.0
        self.utterance_t0: float | None = None  # first chunk of the utterance ready
        self._first_chunk_t0: dict[int, float] = {}  # segment index -> utterance_t0
        self._ttfa_t0: float | None = None  # set when a first segment is sent
        self.ttfa: list[float] = []
        self.ending = False
        # (code, reason) to close with once the outbox is empty ("end", or a drain)
        self.close_after_drain: tuple[int, str] | None = None
        self.drain_when_idle = False  # SIGTERM: close once the running utterance is done
        self.markers_pending = 0  # flush/end jobs submitted and not yet done
        self.closed = asyncio.Event()  # set when run() has finished
        self.closing = False
        self.close_code: int | None = None
        self.close_reason = ""
        now = time.monotonic()
        self.connected_at = now
        self.last_client_msg = now
        self.over_limit_since: float | None = None
        # slow consumer: (time, audio taken by the client's TCP) while audio waits for it
        self._sending = False
        self._backlog: deque[tuple[float, float]] = deque()
        self._bytes_sent = 0  # audio bytes, to turn the socket's backlog into seconds
        self.socket_unsent_s = 0.0  # audio the client's TCP has not taken (watchdog)
        probe = ws.scope.get("extensions", {}).get(UNSENT_BYTES)
        self._unsent_bytes: Callable[[], int] = probe if callable(probe) else (lambda: 0)
        self._tasks: list[asyncio.Task[None]] = []
        self.key_id: str | None = None
        # Resume (issue 4): the journal in the state store, and engine output waiting
        # for its chunk to end (a chunk is made durable whole before any of it is sent).
        self.owner = secrets.token_hex(8)  # this attachment's name in the journal
        self.journal: Journal | None = None
        self._uncommitted: list[Output] = []
        self._held_frames = 0  # frames in _uncommitted
        self._chunk_frames = 0  # frames of the current chunk journaled so far
        self._hold_timer: asyncio.TimerHandle | None = None
        self._seg_committed = 0  # segment index after the last committed chunk
        self._carry = b""  # framer remainder after the last committed chunk
        self.marks_in = 0  # flush/end marks accepted
        self.resumed = False

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        await self.ws.accept()
        st = self.state
        if not st.ready:
            await self._fail(
                "not_ready", "engines are still loading; retry shortly", CLOSE_TRY_AGAIN
            )
            return
        if st.draining:
            await self._fail("server_draining", DRAIN_MESSAGE, CLOSE_TRY_AGAIN)
            return
        if st.redis is not None and not st.store_ok:
            await self._fail("state_unavailable", STATE_MESSAGE, CLOSE_TRY_AGAIN)
            return
        if len(st.sessions) >= self.settings.max_sessions:
            await self._fail(
                "server_busy",
                f"server is at its session limit ({self.settings.max_sessions}); retry later",
                CLOSE_TRY_AGAIN,
            )
            return
        self.key_id = key_of(self.ws.scope)
        if self.key_id is not None and not await self._take_key_slot():
            return
        st.metrics.active_sessions.inc()
        st.sessions.add(self)
        self._tasks = [
            asyncio.create_task(self._sender(), name=f"send-{self.session_id}"),
            asyncio.create_task(self._watchdog(), name=f"watch-{self.session_id}"),
        ]
        try:
            await self._reader()
        finally:
            self.closing = True
            self._drop_work()
            await cancel_all(self._tasks)
            st.metrics.active_sessions.dec()
            st.sessions.discard(self)
            if self.journal is not None:
                # A finished session is forgotten; any other keeps its state for resume.
                # The state outlives a dropped connection and a drain (to be resumed); a
                # session this server ended (done, or a fatal error) is forgotten at once.
                resumable = self.close_reason in ("", "server draining", "server_draining")
                await self.journal.close(not resumable, self.settings.close_grace_s)
            self.closed.set()
            if self.key_id is not None:
                with contextlib.suppress(RedisError, OSError):
                    await st.limits.release(self.key_id, self.session_id)
            self._log_end()

    async def _take_key_slot(self) -> bool:
        """Per-key limits at connect: requests per minute, then a concurrent-session slot."""
        assert self.key_id is not None
        limits = self.state.limits
        try:
            over = await limits.request(self.key_id) or await limits.acquire(
                self.key_id, self.session_id
            )
        except (RedisError, OSError):
            await self._fail("state_unavailable", STATE_MESSAGE, CLOSE_TRY_AGAIN)
            return False
        if over is not None:
            await self._fail("limit_exceeded", over.message(), CLOSE_POLICY)
            return False
        return True

    async def _reader(self) -> None:
        limit = self.settings.max_message_bytes
        while True:
            msg = await self.ws.receive()
            kind = msg["type"]
            if kind == "websocket.disconnect":
                if self.close_code is None:
                    self.close_code = int(msg.get("code", 1005))
                return
            if self.closing:
                continue
            self.last_client_msg = time.monotonic()
            text = msg.get("text")
            if text is None:
                await self._fail(
                    "binary_not_allowed",
                    "client messages must be JSON text; binary messages are not accepted",
                    CLOSE_UNSUPPORTED,
                )
                continue
            if len(text) > limit // 4 and len(text.encode()) > limit:
                # uvicorn enforces the same limit on the wire; this guards other servers.
                await self._fail("message_too_large", f"message exceeds {limit} bytes", 1009)
                continue
            try:
                await self._handle(p.decode_client_message(text))
            except p.ProtocolError as exc:
                self._error(exc.code, exc.message)

    # ------------------------------------------------------------------ messages

    async def _handle(self, msg: p.ClientMessage) -> None:
        if isinstance(msg, p.Start):
            if self.started:
                raise p.ProtocolError("already_started", "this session has already started")
            await self._start(msg)
            return
        if not self.started:
            raise p.ProtocolError(
                "not_started", f"'{_type_of(msg)}' before 'start'; send 'start' first"
            )
        if isinstance(msg, p.Ack):  # acks keep coming after 'end' while audio plays
            self._ack(msg.frame)
            return
        if self.ending:
            if self.state.draining:
                raise p.ProtocolError("server_draining", DRAIN_MESSAGE)
            raise p.ProtocolError("session_ending", f"'{_type_of(msg)}' after 'end'")
        if isinstance(msg, p.Text):
            if self.key_id is not None and msg.text:
                try:
                    over = await self.state.limits.chars(self.key_id, len(msg.text))
                except (RedisError, OSError):
                    over = None  # a session in progress keeps going while Redis is away
                if over is not None:
                    await self._fail("limit_exceeded", over.message(), CLOSE_POLICY)
                    return
            self._text(msg.text)
        elif isinstance(msg, p.Flush):
            self._mark("flush")
        elif isinstance(msg, p.Cancel):
            self._cancel()
        elif isinstance(msg, p.End):
            self._mark("end")

    def _mark(self, kind: str) -> None:
        if self.journal is not None:
            self.journal.mark(self.chars_in, kind)
        self.marks_in += 1
        self._apply_mark(kind)

    def _apply_mark(self, kind: str) -> None:
        """flush or end: synthesize what is buffered, then the marker."""
        if kind == "end":
            self.ending = True
        self._submit_chunks(self.chunker.flush())
        self._submit_marker(kind)

    def _ack(self, frame: int) -> None:
        if frame >= self.frames_sent:
            raise p.ProtocolError(
                "invalid_ack",
                f"ack of frame {frame}, but only frames 0 to {self.frames_sent - 1} were sent",
            )
        if self.journal is not None:
            self.journal.ack(frame)

    async def _start(self, msg: p.Start) -> None:
        if msg.resume is not None:
            await self._resume(msg.resume)
            return
        engine_name = msg.engine or self.settings.engine
        if msg.voice:
            # An uploaded voice: checked in the shared store, loaded here if need be.
            problem = await ensure_voice(self.state, engine_name, msg.voice, self.key_id)
            if problem is not None:
                raise p.ProtocolError(*problem)
        pre_skip = self._configure(
            engine_name, msg.voice, msg.language, msg.speed, msg.output or p.OutputFormat()
        )
        store = self.state.session_store
        token = None
        if store is not None:
            assert self.output is not None
            meta = SessionMeta(
                engine=engine_name,
                voice=self.voice,
                language=msg.language,
                speed=self.speed,
                output=self.output,
                started_at=time.time() - (time.monotonic() - self.connected_at),
            )
            try:
                await store.create(
                    self.session_id, self.owner, msgspec.json.encode(meta), self._replay_frames()
                )
            except (RedisError, OSError):
                await self._fail("state_unavailable", STATE_MESSAGE, CLOSE_TRY_AGAIN)
                return
            self._open_journal(store, 0)
            token = self._mint_token()
        self._begin(engine_name, pre_skip, token)

    def _begin(self, engine_name: str, pre_skip: int, token: str | None, **ready: Any) -> None:
        assert self.output is not None
        self.started = True
        self.state.metrics.sessions.labels(engine_name).inc()
        self._put(
            p.Ready(
                session_id=self.session_id,
                output=self.output,
                engine=engine_name,
                voice=self.voice,
                pre_skip=pre_skip,
                resume_token=token,
                **ready,
            )
        )
        self.log.info(
            "session_start",
            engine=engine_name,
            voice=self.voice,
            output=msgspec.to_builtins(self.output),
            resumed=self.resumed,
        )

    def _configure(
        self,
        engine_name: str,
        voice_req: str | None,
        language: str | None,
        speed: float,
        out: p.OutputFormat,
    ) -> int:
        """Engine, voice and output format of the session; returns the Opus pre-skip."""
        st = self.state
        worker = st.workers.get(engine_name)
        if worker is None:
            raise p.ProtocolError(
                "unknown_engine",
                f"no engine {engine_name!r}; available: {', '.join(sorted(st.workers))}",
            )
        engine = worker.engine
        voices = {v.id for v in engine.voices()}
        voice = voice_req or (
            self.settings.voice
            if engine_name == self.settings.engine
            else engine.info().default_voice
        )
        if voice not in voices:
            raise p.ProtocolError(
                "unknown_voice",
                f"engine {engine_name!r} has no voice {voice!r}; available: "
                # never another key's uploaded voices
                + ", ".join(sorted(v.id for v in server_voices(engine))),
            )
        if language is not None:
            langs = engine.info().languages
            if language.split("-")[0].lower() not in langs:
                raise p.ProtocolError(
                    "unsupported_language",
                    f"engine {engine_name!r} does not speak {language!r}; it speaks "
                    + ", ".join(langs),
                )
        s = self.settings
        try:
            encoder = make_encoder(
                out.encoding,
                out.sample_rate,
                out.frame_ms,
                out.bitrate,
                complexity=s.opus_complexity,
                fec=s.opus_fec,
                packet_loss_perc=s.opus_packet_loss_perc,
                dtx=s.opus_dtx,
                application=s.opus_application,
            )
        except ValueError as exc:
            raise p.ProtocolError("out_of_range", str(exc)) from None
        bitrate = encoder.ctl_settings()["bitrate"] if isinstance(encoder, OpusEncoder) else None
        self.output = p.OutputFormat(
            encoding=out.encoding,
            sample_rate=out.sample_rate,
            frame_ms=out.frame_ms,
            bitrate=bitrate,
        )
        self.pipeline = AudioPipeline(engine.sample_rate, encoder)
        self.outbox.frame_s = out.frame_ms / 1000.0
        self.worker = worker
        self.voice = voice
        self.speed = speed
        return encoder.lookahead * 48000 // out.sample_rate if out.encoding == "opus" else 0

    # ------------------------------------------------------------------ resume (issue 4)

    def _replay_frames(self) -> int:
        assert self.output is not None
        return max(1, math.ceil(self.settings.replay_window_s * 1000 / self.output.frame_ms))

    def _mint_token(self, epoch: int = 0) -> str:
        s = self.settings
        ttl = s.resume_token_ttl_s or (s.max_session_s + s.resume_window_s)
        return self.state.resume_tokens.mint(self.session_id, ttl, self.key_id, epoch=epoch)

    def _open_journal(self, store: SessionStore, frames: int) -> None:
        self.journal = Journal(
            store,
            self.session_id,
            self.owner,
            frames,
            self.moved,
            self._journal_broken,
            self.settings.state_write_timeout_s,
        )

    def _journal_broken(self, why: str) -> None:
        self._error(
            "resume_unavailable",
            f"the state store failed ({why}); this session goes on, but it can no longer "
            "be resumed after a disconnect",
        )

    def moved(self) -> None:
        """Another connection took this session over: stop working on it."""
        if self.closing:
            return
        task = asyncio.get_running_loop().create_task(
            self._fail(
                "session_moved",
                "this session was resumed on another connection; this one is closed",
                CLOSE_SESSION_MOVED,
            )
        )
        self._tasks.append(task)

    def resume_hint(self) -> p.ResumeHint | None:
        j = self.journal
        if j is None or j.broken or j.moved:
            return None
        return p.ResumeHint(session_id=self.session_id, from_frame=self.frames_sent)

    @staticmethod
    def _first_frame(r: p.ResumeRequest, acked: int) -> int:
        """Where a resume starts: ``from_frame``, else one past the last acked frame."""
        return r.from_frame if r.from_frame is not None else acked + 1

    def _check_resume(self, r: p.ResumeRequest, peek: Peek) -> tuple[str, str] | None:
        first = self._first_frame(r, peek.acked)
        if first > peek.frames:
            return (
                "invalid_resume",
                f"from_frame {first} is past the {peek.frames} frames the session has sent",
            )
        if first < peek.frames and (peek.oldest is None or peek.oldest > first):
            oldest = peek.frames if peek.oldest is None else peek.oldest
            return (
                "replay_unavailable",
                f"frame {first} is no longer kept: the replay window (replay_window_s="
                f"{self.settings.replay_window_s:g}) now starts at frame {oldest}",
            )
        return None

    async def _resume(self, r: p.ResumeRequest) -> None:
        """Take a session over: replay its frames from ``from_frame``, then synthesize
        the text it accepted and had not synthesized yet, marks (flush/end) in place."""
        st = self.state
        store = st.session_store
        if store is None:
            raise p.ProtocolError(
                "resume_disabled",
                "this server keeps no session state (resume_window_s=0); start a new session",
            )
        try:
            epoch = st.resume_tokens.verify(r.token, r.session_id, self.key_id)
        except ResumeTokenError as exc:
            await self._fail(exc.code, exc.message, CLOSE_POLICY)
            return
        sid = r.session_id
        expired = (
            "session_expired",
            f"session {sid!r} is not known: it ended, or its state expired "
            f"(resume_window_s={self.settings.resume_window_s:g} s after its connection "
            "dropped)",
        )
        snap: Snapshot | None = None
        frames: list[StoredFrame] = []
        first = 0
        try:
            # Checked before the takeover too, so a refused resume leaves the session be.
            peek = await store.peek(sid)
            problem = expired if peek is None else self._check_resume(r, peek)
            if problem is None:
                snap = await store.takeover(sid, self.owner, epoch)
                if snap is None:
                    problem = expired
                else:
                    first = self._first_frame(r, snap.acked)
                    if first < snap.frames:
                        frames = await store.frames_from(sid, first)
                    # again: the old node may have written (and trimmed) in between
                    oldest = frames[0].n if frames else None
                    problem = self._check_resume(
                        r, Peek(frames=snap.frames, acked=snap.acked, oldest=oldest)
                    )
        except TokenUsed:
            await self._fail(
                "resume_token_used",
                f"this resume token of session {sid!r} was used already (a token is good "
                "for one resume; use the one from the newest 'ready')",
                CLOSE_POLICY,
            )
            return
        except ResumeUnavailable:
            await self._fail(
                "resume_unavailable",
                f"session {sid!r} cannot be resumed: the state store failed while "
                "it ran, so its saved state is incomplete; start a new session",
                CLOSE_POLICY,
            )
            return
        except (RedisError, OSError):
            await self._fail("state_unavailable", STATE_MESSAGE, CLOSE_TRY_AGAIN)
            return
        meta: SessionMeta | None = None
        if problem is None and snap is not None:
            for other in list(st.sessions):  # the old connection, if it is still open here
                if other is not self and other.session_id == snap.session_id:
                    other.moved()
            meta = msgspec.json.decode(snap.meta, type=SessionMeta)
            problem = await ensure_voice(self.state, meta.engine, meta.voice, self.key_id)
        pre_skip = 0
        if problem is None and meta is not None:
            try:
                pre_skip = self._configure(
                    meta.engine, meta.voice, meta.language, meta.speed, meta.output
                )
            except p.ProtocolError as exc:
                problem = (exc.code, exc.message)
        if problem is not None or snap is None or meta is None:
            await self._fail(*(problem or expired), CLOSE_POLICY)
            return
        self.session_id = snap.session_id
        self.log = log.bind(session_id=self.session_id)
        self.resumed = True
        # max_session_s is the session's, not the connection's
        self.connected_at = time.monotonic() - max(0.0, time.time() - meta.started_at)
        self.state.metrics.resumes.inc()
        if snap.carry:  # the start of the next frame, cut at the last chunk's end
            self.pipeline.carry_in(np.frombuffer(snap.carry, dtype=np.float32))
        self._carry = snap.carry
        self.frames_sent = first
        self.segments = self._seg_committed = snap.segments
        self.chars_in = len(snap.text)
        self.marks_in = len(snap.marks)
        self._open_journal(store, snap.frames)
        self._begin(
            meta.engine,
            pre_skip,
            self._mint_token(snap.epoch),
            resumed=True,
            next_frame=first,
            chars_accepted=len(snap.text),
        )
        for f in frames:
            if f.message:
                self.outbox.put_message(f.message, droppable=True)
            self.outbox.put_frame(f.audio)
        self.state.metrics.frames_replayed.inc(len(frames))
        pos = snap.done_chars
        if snap.chunk is not None:  # finish the chunk in progress from its engine audio
            ch = snap.chunk
            assert self.worker is not None
            self.worker.submit(
                Job(
                    self,
                    self.generation,
                    "chunk",
                    text=snap.text[pos : pos + ch.chars],
                    voice=self.voice,
                    speed=self.speed,
                    index=ch.index,
                    audio=from_pcm16(ch.pcm),
                    skip_frames=snap.frames - ch.first,
                )
            )
            self.pending_chars += ch.chars
            self.segments = max(self.segments, ch.index + 1)
            pos += ch.chars
        for offset, kind in snap.marks[snap.marks_done :]:  # already in the journal
            self._submit_chunks(self.chunker.push(snap.text[pos:offset]))
            pos = offset
            self._apply_mark(kind)
        self._submit_chunks(self.chunker.push(snap.text[pos:]))
        if snap.finished:
            self.ending = True
            self.outbox.put_message(p.Done(frames=0))
            self.close_after_drain = (CLOSE_NORMAL, "done")
        self._has_items.set()
        self.log.info(
            "session_resumed",
            from_frame=first,
            replayed=len(frames),
            epoch=snap.epoch,
            pending_chars=len(snap.text) - snap.done_chars,
            chunk_in_progress=snap.chunk is not None,
        )

    def _text(self, text: str) -> None:
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
        if self.journal is not None and text:
            self.journal.text(text)
        self._submit_chunks(self.chunker.push(text))

    def _submit_chunks(self, chunks: list[str]) -> None:
        assert self.worker is not None
        for text in chunks:
            for chunk in self._journal_pieces(text, self.utterance_t0 is None):
                first = self.utterance_t0 is None
                if first:
                    self.utterance_t0 = time.perf_counter()
                    self._first_chunk_t0[self.segments] = self.utterance_t0
                self.worker.submit(
                    Job(
                        self,
                        self.generation,
                        "chunk",
                        text=chunk,
                        voice=self.voice,
                        speed=self.speed,
                        first=first,
                        index=self.segments,
                    )
                )
                self.segments += 1
                self.pending_chars += len(chunk)

    def _journal_pieces(self, chunk: str, first: bool) -> list[str]:
        """With the journal on, a worker that hands a chunk over piece by piece (F5's
        batched worker) cannot journal its audio ahead, so it journals whole chunks:
        give it one engine piece per chunk, and each piece goes out as soon as it is
        made. The pieces are the engine's own plan, as exact spans of ``chunk``; they
        meet with the chunk-edge fade instead of F5's 20 ms cross-fade."""
        w, j = self.worker, self.journal
        plan = getattr(w.engine, "plan", None) if w is not None else None
        if j is None or j.broken or w is None or w.chunk_pcm or plan is None:
            return [chunk]
        try:
            pieces: list[str] = plan(chunk, self.voice, self.speed, first)
        except EngineError:
            return [chunk]  # the worker reports it
        starts: list[int] = []
        at = 0
        for piece in pieces:
            at = chunk.find(piece, at)
            if at < 0:
                return [chunk]
            starts.append(at)
            at += len(piece)
        if len(starts) < 2:
            return [chunk]
        starts[0] = 0
        return [chunk[a:b] for a, b in zip(starts, [*starts[1:], len(chunk)], strict=True)]

    def _submit_marker(self, kind: str) -> None:
        assert self.worker is not None
        self.markers_pending += 1
        self.worker.submit(Job(self, self.generation, kind))
        self.utterance_t0 = None  # the next chunk starts a new utterance

    def _cancel(self) -> None:
        self._drop_work()
        self.chunker.clear()
        if self.journal is not None:  # the dropped text and unsent frames go from it too
            self.journal.cancel(self.frames_sent, self.chars_in, self.marks_in)
        self._put(p.Cancelled())

    def _drop_work(self) -> None:
        self.generation += 1
        self.markers_pending = 0
        if self.worker is not None:
            self.worker.cancel(self.session_id)
        self.outbox.drop_audio()
        self.pending_chars = 0
        self.utterance_t0 = None
        self._first_chunk_t0.clear()
        self._ttfa_t0 = None
        self.over_limit_since = None
        self._uncommitted = []
        self._held_frames = 0
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None

    # ------------------------------------------------------------------ engine output

    def can_take_work(self) -> bool:
        return self.unsent_s < self.settings.max_unsent_audio_s

    @property
    def unsent_s(self) -> float:
        """Audio made for the client and not taken by it: the outbox, plus what sits in
        this side's socket buffers (sampled by the watchdog)."""
        return self.outbox.audio_s + self.socket_unsent_s

    def wants_chunk_pcm(self) -> bool:
        j = self.journal
        return j is not None and not j.broken and self.worker is not None and self.worker.chunk_pcm

    def deliver(self, generation: int, items: list[Output]) -> None:
        if generation != self.generation or self.closing:
            return  # late output of cancelled work
        j = self.journal
        if j is None or j.broken:
            self._release(generation, items)
            return
        for item in items:
            if isinstance(item, EngineFailed) and item.retry is not None:
                # Move to the fallback engine now, while the journal writes: the failing
                # worker must not run this session's next job (an end) meanwhile.
                item.moved = True
                self._fall_back(item)
        # Resume: output is journaled, then sent (see server/state/sessions.py): slice by
        # slice after the chunk's engine audio, or (a worker that cannot hand that over
        # first) the whole chunk at its end.
        self._uncommitted.extend(items)
        self._held_frames += sum(1 for i in items if isinstance(i, bytes))
        edge = any(isinstance(i, ChunkDone | UtteranceDone | EngineFailed) for i in items)
        if self.worker is not None and not self.worker.chunk_pcm:
            if edge:
                self._commit_held(generation)
            return
        if any(isinstance(i, ChunkPcm) for i in items):
            self._chunk_frames = 0  # a chunk starts: its first slices go out one by one
        # Once a chunk's first _URGENT_S is out, its listener has audio in hand: later
        # slices are journaled a few at a time (fewer store round trips per second of
        # audio), never held longer than _HOLD_S.
        frame_s = self.outbox.frame_s
        if (
            edge
            or self._chunk_frames < _URGENT_S / frame_s
            or self._held_frames >= _BATCH_S / frame_s
        ):
            self._commit_held(generation)
        elif self._hold_timer is None:
            self._hold_timer = asyncio.get_running_loop().call_later(
                _HOLD_S, self._commit_held, generation
            )

    def _commit_held(self, generation: int) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        j = self.journal
        if generation != self.generation or self.closing or j is None or not self._uncommitted:
            return
        batch, self._uncommitted = self._uncommitted, []
        self._chunk_frames += self._held_frames
        self._held_frames = 0
        j.commit(self._commit_of(batch, j.frames), lambda: self._release(generation, batch))

    def _commit_of(self, batch: list[Output], n: int) -> Commit:
        frames: list[StoredFrame] = []
        message = ""
        c = Commit(frames=frames)
        for item in batch:
            if isinstance(item, bytes):
                frames.append(StoredFrame(n, item, message))
                n += 1
                message = ""
            elif isinstance(item, SegmentStart):
                message = p.encode_server_message(
                    p.Segment(index=item.index, text=item.text, first_frame=n)
                )
            elif isinstance(item, ChunkPcm):
                c.chunk = ChunkAudio(index=item.index, first=n, chars=item.chars, pcm=item.pcm)
            elif isinstance(item, ChunkDone):
                c.chars += item.chars
                c.chunk_done = True
                self._carry = item.carry
                self._seg_committed = max(self._seg_committed, item.index + 1)
            elif isinstance(item, UtteranceDone):
                c.marks += 1
                c.finished = c.finished or item.marker == "end"
                self._carry = b""
            elif isinstance(item, EngineFailed) and item.retry is None:
                c.chars += item.chars  # that text is given up on
                c.chunk_done = True
        c.carry = self._carry
        c.segments = self._seg_committed
        return c

    def _release(self, generation: int, items: list[Output]) -> None:
        """Engine output whose frames may now be sent."""
        if generation != self.generation or self.closing:
            return
        for item in items:
            if isinstance(item, bytes):
                self.outbox.put_frame(item)
            elif isinstance(item, SegmentStart):
                # first_frame is filled in when the sender reaches it (frames are
                # numbered in send order, and barge-in drops queued ones).
                self.outbox.put_message(item, droppable=True)
            elif isinstance(item, ChunkDone):
                self.pending_chars = max(0, self.pending_chars - item.chars)
                if item.audio_s > 0:
                    self.state.metrics.rtf.labels(self.worker_name).observe(
                        item.engine_s / item.audio_s
                    )
            elif isinstance(item, UtteranceDone):
                self.markers_pending -= 1
                if item.marker == "flush":
                    self._put(p.Flushed())
                    if self.drain_when_idle and self._idle():
                        self._drain_close()
                else:
                    self.outbox.put_message(p.Done(frames=0))
                    self.close_after_drain = (CLOSE_NORMAL, "done")
            elif isinstance(item, EngineFailed):
                if item.retry is not None:  # the engine failed over (F5): go on elsewhere
                    if not item.moved:
                        self._fall_back(item)
                else:
                    self._error(item.code, item.message)
        self.peak_unsent_s = max(self.peak_unsent_s, self.outbox.audio_s)
        self._has_items.set()

    @property
    def worker_name(self) -> str:
        return self.worker.engine.name if self.worker else ""

    # ------------------------------------------------------------------ engine fallback (issue 3)

    def _fall_back(self, failed: EngineFailed) -> None:
        """The engine could not run this session's work (a fault, or its circuit breaker
        is open): move the session to ``f5_fallback_engine`` with a notice, and run there
        the failed text and everything still queued, in order.

        Called from ``deliver``, so no job of this session is in flight on the failing
        worker and the pipeline is not in use on a worker thread. The encoder is kept:
        the client's audio stream goes on without a reset.
        """
        old, retry = self.worker, failed.retry or []
        target = self.state.workers.get(self.settings.f5_fallback_engine)
        if old is None or target is None or target is old:
            self._error(failed.code, failed.message)
            self.pending_chars = max(0, self.pending_chars - sum(len(j.text) for j in retry))
            return
        jobs = retry + old.take(self.session_id)
        engine = target.engine
        self.worker = target
        self.pipeline = AudioPipeline(engine.sample_rate, self.pipeline.encoder)
        self.pipeline_generation = self.generation
        self.voice = (
            self.settings.voice
            if engine.name == self.settings.engine
            else engine.info().default_voice
        )
        self._error(
            "engine_fallback",
            f"engine {old.engine.name!r} failed ({failed.code}: {failed.message}); this "
            f"session continues on {engine.name!r} with voice {self.voice!r}",
        )
        for job in jobs:
            index = job.index
            if index < 0:  # the rest of a chunk whose segment was already announced
                index = self.segments
                self.segments += 1
            target.submit(
                Job(
                    self,
                    self.generation,
                    job.kind,
                    text=job.text,
                    voice=self.voice,
                    speed=self.speed,
                    first=job.first,
                    index=index,
                )
            )

    # ------------------------------------------------------------------ sending

    def _put(self, msg: p.ServerMessage) -> None:
        self.outbox.put_message(p.encode_server_message(msg))
        self._has_items.set()

    def _error(
        self, code: str, message: str, fatal: bool = False, resume: p.ResumeHint | None = None
    ) -> None:
        self.state.metrics.errors.labels(code).inc()
        self.log.info("client_error", code=code, message=message, fatal=fatal)
        self._put(p.Error(code=code, message=message, fatal=fatal, resume=resume))

    async def _sender(self) -> None:
        ws = self.ws
        metrics = self.state.metrics
        outbox = self.outbox
        frame_s = 0.02
        try:
            while True:
                if not outbox:
                    if self.close_after_drain:
                        await self._close(*self.close_after_drain)
                        return
                    self._has_items.clear()
                    await self._has_items.wait()
                    frame_s = outbox.frame_s
                    continue
                is_frame, item = outbox.pop()
                if is_frame:
                    # Counted before the send: a cancel during it must not reuse the number.
                    self.frames_sent += 1
                    self._sending = True
                    await ws.send_bytes(item)
                    self._sending = False
                    self._bytes_sent += len(item)
                    self.audio_s_sent += frame_s
                    metrics.frames_sent.inc()
                    metrics.audio_seconds.inc(frame_s)
                    if self._ttfa_t0 is not None:
                        self._note_ttfa(self._ttfa_t0)
                    if self.worker is not None and self.can_take_work():
                        self.worker.wake()
                    continue
                if isinstance(item, SegmentStart):
                    t0 = self._first_chunk_t0.pop(item.index, None)
                    if t0 is not None:
                        self._ttfa_t0 = t0
                    item = p.encode_server_message(
                        p.Segment(index=item.index, text=item.text, first_frame=self.frames_sent)
                    )
                elif isinstance(item, p.Done):
                    item = p.encode_server_message(p.Done(frames=self.frames_sent))
                self._sending = True
                await ws.send_text(item)
                self._sending = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client went away mid-send
            self.log.debug("send_stopped", error=repr(exc))

    def _note_ttfa(self, t0: float) -> None:
        dt = time.perf_counter() - t0
        self.ttfa.append(dt)
        self.state.metrics.ttfa.labels(self.worker_name).observe(dt)
        self._ttfa_t0 = None

    async def _close(self, code: int, reason: str, timeout: float | None = None) -> None:
        self.close_code = code
        self.close_reason = reason
        if self.ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(timeout or self.settings.close_grace_s):
                    await self.ws.close(code, reason)

    async def _fail(
        self, code: str, message: str, close_code: int, resume: p.ResumeHint | None = None
    ) -> None:
        """A fatal error: say what was wrong, then close with ``close_code``."""
        if self.closing:
            return
        self.closing = True
        self._drop_work()
        self.state.metrics.errors.labels(code).inc()
        self.log.info("client_error", code=code, message=message, fatal=True)
        me = asyncio.current_task()
        for t in self._tasks:
            if t is not me:
                t.cancel()
        # A stalled client gets close_grace_s in all to take the event and the close.
        deadline = time.monotonic() + self.settings.close_grace_s
        event = p.Error(code=code, message=message, fatal=True, resume=resume)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.settings.close_grace_s):
                await self.ws.send_text(p.encode_server_message(event))
        await self._close(close_code, code, max(0.1, deadline - time.monotonic()))

    # ------------------------------------------------------------------ drain (SIGTERM)

    def begin_drain(self) -> None:
        """The node is shutting down: close now if idle, else once the utterance is done."""
        if self.closing or self.close_after_drain is not None:
            return
        if self._idle():
            self._drain_close()
        else:
            self.drain_when_idle = True

    def _idle(self) -> bool:
        return (
            self.chunker.buffered_chars == 0
            and self.pending_chars == 0
            and self.markers_pending == 0
        )

    def _drain_close(self) -> None:
        self.ending = True  # no more text: this node is going away
        self._error("server_draining", DRAIN_MESSAGE, fatal=True, resume=self.resume_hint())
        self.close_after_drain = (CLOSE_SERVICE_RESTART, "server draining")

    async def drain_now(self) -> None:
        """The grace period is over: close whatever is still running."""
        await self._fail(
            "server_draining", DRAIN_MESSAGE, CLOSE_SERVICE_RESTART, self.resume_hint()
        )

    # ------------------------------------------------------------------ watchdog

    async def _watchdog(self) -> None:
        s = self.settings
        refresh_at = time.monotonic() + _SLOT_REFRESH_S
        key_check_at = time.monotonic() + _KEY_CHECK_S
        heartbeat_s = min(_HEARTBEAT_S, s.resume_window_s / 3)
        heartbeat_at = time.monotonic() + heartbeat_s
        while not self.closing:  # a lost cancel still ends the loop
            await asyncio.sleep(_WATCHDOG_PERIOD_S)
            now = time.monotonic()
            if self.journal is not None and now >= heartbeat_at:
                heartbeat_at = now + heartbeat_s
                await self.journal.heartbeat()
            if self.key_id is not None and now >= refresh_at:
                refresh_at = now + _SLOT_REFRESH_S
                with contextlib.suppress(RedisError, OSError):
                    await self.state.limits.refresh(self.key_id, self.session_id)
            if self.key_id is not None and now >= key_check_at:
                key_check_at = now + _KEY_CHECK_S
                if await self._key_revoked():
                    await self._fail(
                        "key_revoked",
                        "the API key this session was opened with was revoked",
                        CLOSE_POLICY,
                    )
                    return
            if not self.started and now - self.connected_at > s.start_timeout_s:
                await self._fail(
                    "start_timeout", f"no 'start' within {s.start_timeout_s:g} s", CLOSE_POLICY
                )
                return
            if now - self.connected_at > s.max_session_s:
                await self._fail(
                    "session_too_long",
                    f"session exceeded max_session_s={s.max_session_s:g} s",
                    CLOSE_POLICY,
                )
                return
            # A flush/end still to run counts as work (F5 runs markers behind other
            # sessions' encoding, so that moment can outlast a watchdog tick).
            busy = len(self.outbox) > 0 or self.pending_chars > 0 or self.markers_pending > 0
            if not busy and now - self.last_client_msg > s.idle_timeout_s:
                await self._fail(
                    "idle_timeout", f"no message for {s.idle_timeout_s:g} s", CLOSE_POLICY
                )
                return
            self._sample_socket()
            if self.unsent_s >= s.max_unsent_audio_s:
                if self.over_limit_since is None:
                    self.over_limit_since = now
                elif now - self.over_limit_since > s.slow_consumer_timeout_s:
                    await self._fail("slow_consumer", self._slow_message(None), CLOSE_POLICY)
                    return
            else:
                self.over_limit_since = None
            rate = self._take_rate(now)
            if rate is not None and rate < s.slow_consumer_min_rate:
                await self._fail("slow_consumer", self._slow_message(rate), CLOSE_POLICY)
                return

    async def _key_revoked(self) -> bool:
        """True only when the store says the key is gone (None, cannot tell: go on)."""
        assert self.key_id is not None
        try:
            async with asyncio.timeout(self.settings.state_write_timeout_s):
                return await key_still_valid(self.state, self.key_id) is False
        except (RedisError, OSError, TimeoutError):
            return False

    def _slow_message(self, rate: float | None) -> str:
        s = self.settings
        took = "" if rate is None else f"took {rate:.2f} s of audio per second and "
        return (
            f"client {took}left audio waiting for over {s.slow_consumer_timeout_s:g} s "
            f"({self.unsent_s:.1f} s of it not taken by the client's TCP; limits: "
            f"max_unsent_audio_s="
            f"{s.max_unsent_audio_s:g}, slow_consumer_min_rate={s.slow_consumer_min_rate:g})"
        )

    def _sample_socket(self) -> None:
        was = self.socket_unsent_s
        if self._bytes_sent and self.audio_s_sent > 0:
            per_s = self._bytes_sent / self.audio_s_sent
            self.socket_unsent_s = min(self._unsent_bytes() / per_s, self.audio_s_sent)
        else:
            self.socket_unsent_s = 0.0
        if was >= self.settings.max_unsent_audio_s > self.socket_unsent_s and self.worker:
            self.worker.wake()  # the client caught up: the engine may go on

    def _take_rate(self, now: float) -> float | None:
        """How fast the client took audio over the last ``slow_consumer_timeout_s``, if
        audio waited for it all that time (else None). A client that stopped reading
        leaves the sender stuck in one send once the socket buffers are full: the
        unsent-audio bound alone never sees it, since the engine stops at that bound."""
        waiting = len(self.outbox) > 0 or self._sending
        if not waiting or self.settings.slow_consumer_min_rate <= 0:
            self._backlog.clear()
            return None
        window = self.settings.slow_consumer_timeout_s
        b = self._backlog
        taken = self.audio_s_sent - self.socket_unsent_s
        b.append((now, taken))
        while len(b) > 1 and b[1][0] <= now - window:
            b.popleft()
        t0, taken0 = b[0]
        if now - t0 < window:
            return None
        return max(0.0, taken - taken0) / (now - t0)

    # ------------------------------------------------------------------ logging

    def _log_end(self) -> None:
        ttfa = self.ttfa
        self.log.info(
            "session_end",
            engine=self.worker_name,
            duration_s=round(time.monotonic() - self.connected_at, 3),
            ttfa_ms=round(ttfa[0] * 1000, 1) if ttfa else None,
            ttfa_max_ms=round(max(ttfa) * 1000, 1) if ttfa else None,
            utterances=len(ttfa),
            chars=self.chars_in,
            segments=self.segments,
            frames_sent=self.frames_sent,
            resumed=self.resumed,
            audio_s=round(self.audio_s_sent, 3),
            peak_unsent_audio_s=round(self.peak_unsent_s, 3),
            close_code=self.close_code,
            close_reason=self.close_reason,
        )


def _type_of(msg: Any) -> str:
    return str(type(msg).__struct_config__.tag)
