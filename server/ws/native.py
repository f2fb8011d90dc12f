"""The native protocol v1 on ``/v1/stream``: a thin WebSocket edge around the core.

Three coroutines per connection: the reader decodes each message
(server/protocol.py) and hands the intent to the conversation core
(server/conversation/core.py); the sender takes frames and events from the
core's outbox and writes them; the watchdog keeps the journal and the key's
slot alive and ends the conversation when ``Liveness`` says so. Everything
else — limits, generations, fallback, drain — is the core's.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import uuid
from typing import TYPE_CHECKING

import msgspec
import structlog
from redis.exceptions import RedisError
from starlette.websockets import WebSocket

from server import admission
from server import protocol as p
from server.auth import key_of
from server.conversation import setup
from server.conversation.core import Conversation
from server.conversation.liveness import Liveness
from server.conversation.phase import started
from server.conversation.restore import restore_into
from server.conversation.types import (
    CLOSE_SERVICE_RESTART,
    CLOSE_SESSION_MOVED,
    DRAIN_MESSAGE,
    Fatal,
)
from server.journal import Journal
from server.journal_sink import JournalSink
from server.rtp.sender import RtpStream, open_stream
from server.state.sessions import SessionStore
from server.tasks import cancel_all
from server.voices.registry import ensure_voice
from server.ws import edge, resume

if TYPE_CHECKING:
    from server.appstate import AppState

log = structlog.get_logger("voxwire.session")


# At most this many queued frames leave in one write (320 ms of 20 ms frames): few
# enough that flow control still acts between writes.
_BURST_FRAMES = 16
_HEARTBEAT_S = 1.0  # the journal's record is kept alive (and checked for a takeover) this often


class NativeSession:
    """One connection on ``/v1/stream``."""

    def __init__(self, ws: WebSocket, state: AppState) -> None:
        self.ws = ws
        self.state = state
        self.settings = state.settings
        self.conv = Conversation(
            uuid.uuid4().hex, state.settings, state.workers, state.metrics, state.chunk_policy
        )
        self._has_items = asyncio.Event()
        self.conv.notify = self._has_items.set
        self.liveness = Liveness(state.settings, time.monotonic())
        self.closed = asyncio.Event()  # set when run() has finished
        self.close_code: int | None = None
        self.close_reason = ""
        self.key_id: str | None = None
        self.slot = self.conv.id  # the key's session slot: a resume changes the id, not this
        self.owner = secrets.token_hex(8)  # this attachment's name in the journal
        self.journal: Journal | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sending = False
        self.audio_writes = 0  # socket writes that carried frames (one write takes a burst)
        self._unsent_bytes = edge.unsent_probe(ws)
        self.rtp: RtpStream | None = None  # output.transport rtp: frames go here

    @property
    def session_id(self) -> str:
        return self.conv.id

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        await self.ws.accept()
        refused = admission.node_refusal(self.state)
        if refused is None:
            self.key_id = key_of(self.ws.scope)
        if refused is None and self.key_id is not None:
            refused = await admission.take_slot(
                self.state, self.key_id, self.session_id, count_request=True
            )
        if refused is not None:
            await self._fail(refused.code, refused.message, refused.ws_close)
            return
        st = self.state
        st.metrics.active_sessions.inc()
        st.metrics.connections.labels("native").inc()
        st.sessions.add(self)
        self._tasks = [
            asyncio.create_task(self._sender(), name=f"send-{self.slot}"),
            asyncio.create_task(self._watchdog(), name=f"watch-{self.slot}"),
        ]
        try:
            await self._reader()
        finally:
            await self._finish()

    async def _finish(self) -> None:
        self.conv.close()
        await cancel_all(self._tasks)
        if self.rtp is not None:
            self.rtp.close()
        st = self.state
        st.metrics.active_sessions.dec()
        st.metrics.connections.labels("native").dec()
        st.sessions.discard(self)
        if self.journal is not None:
            # A finished session is forgotten; any other keeps its state for resume.
            # The state outlives a dropped connection and a drain (to be resumed); a
            # session this server ended (done, or a fatal error) is forgotten at once.
            resumable = self.close_reason in ("", "server draining", "server_draining")
            await self.journal.close(not resumable, self.settings.close_grace_s)
        self.closed.set()
        if self.key_id is not None:
            await admission.release_slot(st, self.key_id, self.slot)
        self._log_end()

    async def _reader(self) -> None:
        limit = self.settings.max_message_bytes
        while True:
            msg = await self.ws.receive()
            if msg["type"] == "websocket.disconnect":
                if self.close_code is None:
                    self.close_code = int(msg.get("code", 1005))
                return
            if self.conv.closed:
                continue
            self.liveness.client_message(time.monotonic())
            text = edge.text_of(msg, limit)
            if isinstance(text, edge.Refused):
                await self._fail(text.code, text.message, text.close_code)
                continue
            try:
                await self._handle(p.decode_client_message(text))
            except p.ProtocolError as exc:
                self.conv.error(exc.code, exc.message)

    # ------------------------------------------------------------------ messages

    async def _handle(self, msg: p.ClientMessage) -> None:
        conv = self.conv
        if isinstance(msg, p.Start):
            if started(conv.phase):
                raise p.ProtocolError("already_started", "this session has already started")
            await (self._resume(msg.resume) if msg.resume is not None else self._start(msg))
        elif isinstance(msg, p.Ack):
            conv.ack(msg.frame)
        elif isinstance(msg, p.Text):
            conv.require_open("text")
            if self.key_id is not None and msg.text:
                refused = await admission.charge_chars(self.state, self.key_id, len(msg.text))
                if refused is not None:
                    await self._fail(refused.code, refused.message, refused.ws_close)
                    return
            conv.text(msg.text)
        elif isinstance(msg, p.Flush):
            conv.flush()
        elif isinstance(msg, p.Cancel):
            conv.cancel()
        elif isinstance(msg, p.End):
            conv.end()

    async def _start(self, msg: p.Start) -> None:
        st = self.state
        engine = msg.engine or self.settings.engine
        if msg.voice:
            # An uploaded voice: checked in the shared store, loaded here if need be.
            problem = await ensure_voice(st, engine, msg.voice, self.key_id)
            if problem is not None:
                raise p.ProtocolError(*problem)
        spec = setup.resolve(
            self.settings,
            st.workers,
            msg.engine,  # None: a language may choose the engine (setup.resolve)
            msg.voice,
            msg.language,
            msg.speed,
            msg.output or p.OutputFormat(),
            options=msg.engine_options,
        )
        sdp = await self._open_rtp(spec.output, self.session_id)
        token = None
        store = st.session_store
        if store is not None:
            meta = resume.SessionMeta(
                engine=spec.engine,
                voice=spec.voice,
                language=spec.language,
                speed=spec.speed,
                output=spec.output,
                started_at=time.time() - (time.monotonic() - self.liveness.connected_at),
                timings=msg.timings == "word",
                options=spec.options,
            )
            frames = resume.replay_frames(self.settings.replay_window_s, spec.output.frame_ms)
            try:
                await store.create(self.session_id, self.owner, msgspec.json.encode(meta), frames)
            except (RedisError, OSError):
                u = admission.UNAVAILABLE
                await self._fail(u.code, u.message, u.ws_close)
                return
            self._open_journal(store, 0, 0, b"")
            token = self._mint_token()
        self.conv.timings = msg.timings == "word"
        self.conv.start(spec, token, sdp=sdp)
        self._log_start()

    async def _resume(self, r: p.ResumeRequest) -> None:
        """Take a session over: the store's part here, the rest in the core."""
        st = self.state
        try:
            taken = await resume.take_over(st, r, self.key_id, self.owner)
            for other in list(st.sessions):  # the old connection, if it is still open here
                if other is not self and other.session_id == taken.snap.session_id:
                    other.moved()
            meta = taken.meta
            problem = await ensure_voice(st, meta.engine, meta.voice, self.key_id)
            if problem is not None:
                raise resume.Refused(*problem)
            try:
                spec = setup.resolve(
                    self.settings,
                    st.workers,
                    meta.engine,
                    meta.voice,
                    meta.language,
                    meta.speed,
                    meta.output,
                    options=meta.options,
                )
                elapsed = time.time() - meta.started_at
                # the session's id, not this connection's yet: the stream's ids derive from it
                sdp = await self._open_rtp(spec.output, taken.snap.session_id, elapsed)
            except p.ProtocolError as exc:
                raise resume.Refused(exc.code, exc.message) from None
        except resume.Refused as exc:
            await self._fail(exc.code, exc.message, exc.close_code)
            return
        snap = taken.snap
        self.liveness.connected_at = resume.started_at(meta, time.monotonic())
        st.metrics.resumes.inc()
        assert st.session_store is not None
        self.conv.rename(snap.session_id)  # before the journal, which writes under it
        self.conv.timings = meta.timings
        self._open_journal(st.session_store, snap.frames, snap.segments, snap.carry)
        restore_into(
            self.conv,
            resume.restore_of(taken),
            spec,
            self._mint_token(snap.epoch),
            resumed=True,
            next_frame=taken.first,
            chars_accepted=len(snap.text),
            sdp=sdp,
        )
        st.metrics.frames_replayed.inc(len(taken.frames))
        self._log_start()
        self.conv.log.info(
            "session_resumed",
            from_frame=taken.first,
            replayed=len(taken.frames),
            epoch=snap.epoch,
            pending_chars=len(snap.text) - snap.done_chars,
            chunk_in_progress=snap.chunk is not None,
        )

    async def _open_rtp(
        self, out: p.OutputFormat, session_id: str, elapsed_s: float = 0.0
    ) -> str | None:
        """The RTP stream ``output.transport`` asks for (ProtocolError if refused); its SDP."""
        if out.transport is None:
            return None
        peer = self.ws.client.host if self.ws.client else "unknown"
        client = f"key:{self.key_id}" if self.key_id is not None else f"addr:{peer}"
        self.rtp = await open_stream(self.state.rtp, out, session_id, client, elapsed_s)
        self.state.metrics.rtp_streams.inc()
        return self.rtp.sdp

    def _log_start(self) -> None:
        spec = self.conv.spec
        assert spec is not None
        self.conv.log.info(
            "session_start",
            engine=spec.engine,
            voice=spec.voice,
            output=msgspec.to_builtins(spec.output),
            resumed=self.conv.resumed,
            # behind a trusted proxy (forwarded_allow_ips), the address it forwarded
            client=self.ws.client.host if self.ws.client else None,
        )

    # ------------------------------------------------------------------ resume journal

    def _mint_token(self, epoch: int = 0) -> str:
        s = self.settings
        ttl = s.resume_token_ttl_s or (s.max_session_s + s.resume_window_s)
        return self.state.resume_tokens.mint(self.session_id, ttl, self.key_id, epoch=epoch)

    def _open_journal(self, store: SessionStore, frames: int, segments: int, carry: bytes) -> None:
        conv = self.conv
        journal = Journal(
            store,
            self.session_id,
            self.owner,
            frames,
            self.moved,
            self._journal_broken,
            self.settings.state_write_timeout_s,
        )
        self.journal = journal

        def whole_chunks() -> bool:
            return conv.spec is not None and not conv.spec.worker.chunk_pcm

        conv.use_sink(
            JournalSink(journal, lambda: conv.outbox.frame_s, whole_chunks, segments, carry)
        )

    def _journal_broken(self, why: str) -> None:
        self.conv.error(
            "resume_unavailable",
            f"the state store failed ({why}); this session goes on, but it can no longer "
            "be resumed after a disconnect",
        )

    def moved(self) -> None:
        """Another connection took this session over: stop working on it."""
        if self.conv.closed:
            return
        task = asyncio.get_running_loop().create_task(
            self._fail(
                "session_moved",
                "this session was resumed on another connection; this one is closed",
                CLOSE_SESSION_MOVED,
            )
        )
        self._tasks.append(task)

    # ------------------------------------------------------------------ sending

    async def _sender(self) -> None:
        conv = self.conv
        ws = self.ws
        send_frames = edge.frames_sender(ws)
        try:
            while True:
                if (wait := conv.pace()) > 0:  # output.pacing: at most the lead ahead
                    await asyncio.sleep(wait)
                    continue
                out = conv.pop()
                if out is None:
                    if conv.close_after is not None:
                        await self._close(*conv.close_after)
                        return
                    self._has_items.clear()
                    await self._has_items.wait()
                    continue
                is_frame, item = out
                self._sending = True
                if is_frame:
                    assert isinstance(item, bytes)
                    if self.rtp is not None:  # UDP: never blocks, the pacer sets the rate
                        self.rtp.send(item, conv.frames_sent - 1, conv.starts_spurt(), conv.clock())
                    elif send_frames is not None and conv.pacer is None:
                        # The frames queued behind it go in the same write (ws_protocol).
                        frames = conv.pop_frames(item, _BURST_FRAMES)
                        await send_frames(frames)
                        self.audio_writes += 1
                        self._sending = False
                        conv.sent(sum(map(len, frames)), len(frames))
                        continue
                    else:
                        await ws.send_bytes(item)
                        self.audio_writes += 1
                    self._sending = False
                    conv.sent(len(item))
                    continue
                await ws.send_text(item if isinstance(item, str) else _encode(item))
                self._sending = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client went away mid-send
            conv.log.debug("send_stopped", error=repr(exc))

    async def _close(self, code: int, reason: str, timeout: float | None = None) -> None:
        self.close_code = code
        self.close_reason = reason
        await edge.close(self.ws, code, reason, timeout or self.settings.close_grace_s)

    async def _fail(
        self, code: str, message: str, close_code: int, resume: p.ResumeHint | None = None
    ) -> None:
        """A fatal error: say what was wrong, then close with ``close_code``."""
        fatal = self.conv.fail(code, message, close_code, resume)
        if fatal is None:
            return
        me = asyncio.current_task()
        for t in self._tasks:
            if t is not me:
                t.cancel()
        await self._say_and_close(fatal)

    async def _say_and_close(self, fatal: Fatal) -> None:
        # A stalled client gets close_grace_s in all to take the event and the close.
        grace = self.settings.close_grace_s
        deadline = time.monotonic() + grace
        event = p.Error(code=fatal.code, message=fatal.message, fatal=True, resume=fatal.resume)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(grace):
                await self.ws.send_text(p.encode_server_message(event))
        await self._close(fatal.close_code, fatal.code, max(0.1, deadline - time.monotonic()))

    # ------------------------------------------------------------------ drain (SIGTERM)

    def begin_drain(self) -> None:
        """The node is shutting down: close now if idle, else once the utterance is done."""
        self.conv.begin_drain()

    async def drain_now(self) -> None:
        """The grace period is over: close whatever is still running."""
        await self._fail(
            "server_draining",
            DRAIN_MESSAGE,
            CLOSE_SERVICE_RESTART,
            self.conv.resume_hint(),
        )

    # ------------------------------------------------------------------ watchdog

    async def _watchdog(self) -> None:
        s = self.settings
        keys = edge.KeyWatch(self.state, self.key_id, self.slot)
        heartbeat_s = min(_HEARTBEAT_S, s.resume_window_s / 3)
        heartbeat_at = time.monotonic() + heartbeat_s
        while not self.conv.closed:  # a lost cancel still ends the loop
            await asyncio.sleep(edge.WATCHDOG_PERIOD_S)
            now = time.monotonic()
            if self.journal is not None and now >= heartbeat_at:
                heartbeat_at = now + heartbeat_s
                await self.journal.heartbeat()
            keys.key_id = self.key_id
            if await keys.revoked(now):
                r = edge.REVOKED
                await self._fail(r.code, r.message, r.close_code)
                return
            conv = self.conv
            conv.socket_sampled(
                edge.unsent_audio_s(self._unsent_bytes(), conv.bytes_sent, conv.audio_s_sent)
            )
            fault = self.liveness.check(conv, now, self._sending)
            if fault is not None:
                await self._fail(fault.code, fault.message, fault.close_code)
                return

    # ------------------------------------------------------------------ logging

    def _log_end(self) -> None:
        conv = self.conv
        ttfa = conv.ttfa
        conv.log.info(
            "session_end",
            engine=conv.engine_name,
            duration_s=round(time.monotonic() - self.liveness.connected_at, 3),
            ttfa_ms=round(ttfa[0] * 1000, 1) if ttfa else None,
            ttfa_max_ms=round(max(ttfa) * 1000, 1) if ttfa else None,
            utterances=len(ttfa),
            chars=conv.chars_in,
            segments=conv.segments,
            frames_sent=conv.frames_sent,
            audio_writes=self.audio_writes,
            resumed=conv.resumed,
            audio_s=round(conv.audio_s_sent, 3),
            peak_unsent_audio_s=round(conv.peak_unsent_s, 3),
            close_code=self.close_code,
            close_reason=self.close_reason,
        )


def _encode(msg: object) -> str:
    assert isinstance(
        msg, p.Ready | p.Segment | p.Words | p.Flushed | p.Cancelled | p.Done | p.Error
    )
    return p.encode_server_message(msg)
