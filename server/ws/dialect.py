"""The WebSocket edge for the vendor dialects (server/dialects/): a thin layer around
one conversation core per context.

The codec decodes each client message into intents on named contexts and renders
what the cores say in the dialect's own messages; this module does the I/O and
the rules every protocol shares with the native one: admission (the key's slot,
its character budget), message and buffer limits, backpressure, liveness (idle,
session length, slow clients), drain, Prometheus and the session log lines.
Dialects have no resume: their clients have no way to ask for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import TYPE_CHECKING

import msgspec
import structlog
from redis.exceptions import RedisError
from starlette.websockets import WebSocket

from server import admission
from server import protocol as p
from server.access import authenticate_key
from server.auth import key_of
from server.config import Settings
from server.conversation import setup
from server.conversation.core import Conversation
from server.conversation.liveness import Liveness
from server.conversation.types import (
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_SERVICE_RESTART,
    DRAIN_MESSAGE,
)
from server.dialects import intents as i
from server.speech import resolve_model
from server.streaming.encoder import flush_encoder
from server.tasks import cancel_all
from server.voices.registry import ensure_voice
from server.ws import edge
from server.ws.contexts import Contexts

if TYPE_CHECKING:
    from server.appstate import AppState

log = structlog.get_logger("voxwire.session")

_FRAME_MS = 20
_COALESCE_FRAMES = 10  # frames already queued that go out in one message (at most)
_NATIVE: dict[str, p.Encoding] = {
    "opus": "opus",
    "ogg_opus": "opus",
    "mulaw": "mulaw",
    "alaw": "alaw",
    "pcm_s16be": "pcm_s16be",
}


class DialectSession:
    """One connection in a vendor's dialect."""

    def __init__(
        self,
        ws: WebSocket,
        state: AppState,
        codec: i.Codec,
        pending_key: bool = False,
    ) -> None:
        self.ws = ws
        self.state = state
        self.settings = state.settings
        self.codec = codec
        self.id = uuid.uuid4().hex
        self.log = log.bind(session_id=self.id, protocol=codec.protocol)
        self.contexts = Contexts(codec.max_contexts)
        self._has_items = asyncio.Event()
        self.liveness = Liveness(_liveness_settings(state.settings, codec), time.monotonic())
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        self.key_id: str | None = None
        # keys are on and none came with the request: the first message must carry one
        # (ElevenLabs' ``xi_api_key``)
        self.pending_key = pending_key
        self.finishing = False  # close_socket: close once every context is done
        self.draining = False  # SIGTERM: then the close is 1012, with the dialect's error
        self._ended = False  # a fatal error or the close is under way
        self._tasks: list[asyncio.Task[None]] = []
        self._sending = False
        self._started = time.monotonic()
        self.chars_in = 0
        self.frames_sent = 0
        self.audio_s = 0.0
        self._unsent_bytes = edge.unsent_probe(ws)

    @property
    def session_id(self) -> str:
        return self.id

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        await self.ws.accept()
        refused = admission.node_refusal(self.state)
        if refused is None:
            self.key_id = key_of(self.ws.scope)
        if refused is None and self.key_id is not None:
            refused = await admission.take_slot(
                self.state, self.key_id, self.id, count_request=True
            )
        if refused is not None:
            await self._fatal(i.DialectError(refused.code, refused.message, refused.ws_close))
            self._log_end()
            return
        st = self.state
        st.metrics.active_sessions.inc()
        st.metrics.connections.labels(self.codec.protocol).inc()
        st.sessions.add(self)
        self._tasks = [
            asyncio.create_task(self._sender(), name=f"send-{self.id}"),
            asyncio.create_task(self._watchdog(), name=f"watch-{self.id}"),
        ]
        try:
            for w in self.codec.greeting():
                await self._send(w)
            self.log.info("session_start", contexts=self.codec.max_contexts)
            await self._apply(self.codec.opening())
            await self._reader()
        finally:
            await self._finish()

    async def _finish(self) -> None:
        self.contexts.close_all()
        await cancel_all(self._tasks)
        st = self.state
        st.metrics.active_sessions.dec()
        st.metrics.connections.labels(self.codec.protocol).dec()
        st.sessions.discard(self)
        self.closed.set()
        if self.key_id is not None:
            await admission.release_slot(st, self.key_id, self.id)
        self._log_end()

    async def _reader(self) -> None:
        limit = self.settings.max_message_bytes
        while True:
            msg = await self.ws.receive()
            if msg["type"] == "websocket.disconnect":
                if self.close_code is None:
                    self.close_code = int(msg.get("code", 1005))
                return
            if self._ended:
                continue
            self.liveness.client_message(time.monotonic())
            text = edge.text_of(msg, limit)
            if isinstance(text, edge.Refused):
                await self._fatal(i.DialectError(text.code, text.message, text.close_code))
                continue
            try:
                intents = self.codec.decode(text)
                if self.pending_key and not await self._late_auth():
                    return
                await self._apply(intents)
            except i.DialectError as err:
                await self._refuse(err)

    async def _late_auth(self) -> bool:
        """The key from the first message (``pending_key``): take the key's slot with
        it, or refuse the connection."""
        self.pending_key = False
        key = getattr(self.codec, "api_key", None)
        st = self.state
        try:
            kid = await authenticate_key(st, key) if isinstance(key, str) else None
        except (RedisError, OSError):
            u = admission.UNAVAILABLE
            await self._fatal(i.DialectError(u.code, u.message, u.ws_close))
            return False
        if kid is None:
            code, what = (
                ("invalid_api_key", "is not valid")
                if isinstance(key, str)
                else ("missing_api_key", "is missing")
            )
            await self._fatal(
                i.DialectError(
                    code,
                    f"the API key {what}: send it in the xi-api-key header or as "
                    "xi_api_key in the first message",
                    CLOSE_POLICY,
                )
            )
            return False
        self.key_id = kid
        refused = await admission.take_slot(st, kid, self.id, count_request=True)
        if refused is not None:
            self.key_id = None  # no slot was taken
            await self._fatal(i.DialectError(refused.code, refused.message, refused.ws_close))
            return False
        return True

    async def _refuse(self, err: i.DialectError) -> None:
        self.state.metrics.errors.labels(err.code).inc()
        if err.close_code is not None:
            await self._fatal(err)
            return
        self.log.info("client_error", code=err.code, message=err.message, fatal=False)
        for w in self.codec.render_error(err):
            self.contexts.say(w)
        self._has_items.set()

    # ------------------------------------------------------------------ intents

    async def _apply(self, intents: list[i.Intent]) -> None:
        failed: set[str] = set()  # contexts that could not open: the rest is moot
        for intent in intents:
            ctx = getattr(intent, "ctx", None)
            if ctx in failed or self._ended:
                continue
            try:
                await self._one(intent)
            except p.ProtocolError as exc:
                close = CLOSE_POLICY if exc.code in self.codec.fatal_codes else None
                if isinstance(intent, i.Open):
                    failed.add(intent.ctx)
                    self.codec.render_final(intent.ctx, True)  # the codec forgets it
                await self._refuse(i.DialectError(exc.code, exc.message, close, ctx))

    async def _one(self, intent: i.Intent) -> None:
        if isinstance(intent, i.Open):
            await self._open(intent)
            return
        if isinstance(intent, i.CloseSocket):
            self.finishing = True
            for c in self.contexts.open():
                self.contexts.finish(c)
            self._has_items.set()
            return
        found = self.contexts.get(intent.ctx)
        if found is None:
            if isinstance(intent, i.Say | i.Flush | i.Finish):
                raise p.ProtocolError(
                    "unknown_context", f"context {intent.ctx!r} is not open on this connection"
                )
            return  # a cancel of a context already over
        c = found
        if isinstance(intent, i.Say):
            await self._say(c.conv, intent.text)
        elif isinstance(intent, i.Flush):
            c.conv.flush()
        elif isinstance(intent, i.Finish):
            self.contexts.finish(c)
        elif isinstance(intent, i.Cancel):
            c.conv.cancel()
        elif isinstance(intent, i.Stop):
            self.contexts.stop(c)

    async def _say(self, conv: Conversation, text: str) -> None:
        conv.require_open("text")
        if self.key_id is not None and text:
            refused = await admission.charge_chars(self.state, self.key_id, len(text))
            if refused is not None:
                await self._fatal(i.DialectError(refused.code, refused.message, refused.ws_close))
                return
        conv.text(text)
        self.chars_in += len(text)

    async def _open(self, op: i.Open) -> None:
        if self.finishing:
            raise p.ProtocolError("socket_closing", "the connection is closing; no new context")
        self.contexts.check_room(op.ctx)
        a = op.args
        st = self.state
        engine = await pick_engine(st, a.model, a.voice)
        if a.voice:
            problem = await ensure_voice(st, engine, a.voice, self.key_id)
            if problem is not None:
                raise p.ProtocolError(*problem)
        fmt = a.fmt
        s = self.settings
        try:
            encoder = setup.encoder_for(s, fmt.encoding, fmt.sample_rate, _FRAME_MS, fmt.bitrate)
        except ValueError as exc:
            raise p.ProtocolError("unsupported_output_format", str(exc)) from None
        # The format in the native protocol's terms (logs, the frame length); the
        # encoder above is the dialect's own.
        out = p.OutputFormat(
            encoding=_NATIVE.get(fmt.encoding, "pcm_s16le"),
            sample_rate=fmt.sample_rate,
            frame_ms=_FRAME_MS,
        )
        spec = setup.resolve(
            s, st.workers, engine, a.voice, a.language, a.speed, out, encoder=encoder
        )
        conv = Conversation(
            f"{self.id}.{op.ctx}",
            self.settings,
            st.workers,
            st.metrics,
            st.chunk_policy,
            protocol=self.codec.protocol,
        )
        conv.timings = a.timings
        conv.notify = self._has_items.set
        conv.start(spec)
        self.contexts.add(op.ctx, conv)
        conv.log.info(
            "context_start",
            protocol=self.codec.protocol,
            context=op.ctx,
            engine=spec.engine,
            voice=spec.voice,
            output=fmt.name,
        )

    # ------------------------------------------------------------------ sending

    async def _send(self, w: i.Wire) -> None:
        self._sending = True
        try:
            if isinstance(w, bytes):
                await self.ws.send_bytes(w)
            else:
                await self.ws.send_text(w)
        finally:
            self._sending = False

    async def _sender(self) -> None:
        try:
            while True:
                sent = await self._send_some()
                if sent:
                    continue
                if self.finishing and not self.contexts.any():
                    if self.draining:  # every context is finished: say why, then 1012
                        await self._fatal(
                            i.DialectError("server_draining", DRAIN_MESSAGE, CLOSE_SERVICE_RESTART)
                        )
                    else:
                        await self._close(CLOSE_NORMAL, "done")
                    return
                self._has_items.clear()
                await self._has_items.wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client went away mid-send
            self.log.debug("send_stopped", error=repr(exc))

    async def _send_some(self) -> bool:
        """One round over the contexts (and the connection's own messages); False when
        nothing was there to send."""
        any_sent = False
        for w in self.contexts.take_said():
            await self._send(w)
            any_sent = True
        for c in self.contexts.all():
            out = c.conv.pop()
            if out is None:
                continue
            any_sent = True
            _, item = out
            if isinstance(item, bytes):
                await self._send_audio(c, item)
            else:
                for w in self._render(c, item):
                    await self._send(w)
        return any_sent

    async def _send_audio(self, c: Contexts.Entry, first: bytes) -> None:
        """The frame, and those queued right behind it, in one message."""
        conv = c.conv
        frames = [first]
        while len(frames) < _COALESCE_FRAMES and conv.frame_next():
            out = conv.pop()
            assert out is not None and isinstance(out[1], bytes)
            frames.append(out[1])
        data = b"".join(frames)
        if data:  # an encoder that buffers (MP3) may give nothing for a frame
            await self._send(self.codec.render_audio(c.ctx, data))
        for f in frames:
            conv.sent(len(f))
        self.frames_sent += len(frames)
        self.audio_s += len(frames) * _FRAME_MS / 1000.0

    def _render(self, c: Contexts.Entry, item: object) -> list[i.Wire]:
        codec, ctx = self.codec, c.ctx
        if isinstance(item, p.Segment):
            return codec.render_segment(ctx, item)
        if isinstance(item, p.Words):
            return codec.render_words(ctx, item)
        if isinstance(item, p.Flushed):
            return codec.render_flushed(ctx)
        if isinstance(item, p.Cancelled):
            return [] if c.stopped else codec.render_cancelled(ctx)
        if isinstance(item, p.Done):
            spec = c.conv.spec
            out: list[i.Wire] = []
            # what a buffering encoder still holds (an MP3 tail, the Ogg end page)
            if (
                spec is not None
                and not c.stopped
                and (rest := flush_encoder(spec.pipeline.encoder))
            ):
                out.append(codec.render_audio(ctx, rest))
            self.contexts.remove(c)
            return out + codec.render_final(ctx, c.stopped)
        if isinstance(item, p.Error):
            self.log.info("client_error", code=item.code, message=item.message, fatal=False)
            return codec.render_error(i.DialectError(item.code, item.message, None, ctx))
        return []  # ready: the dialects have their own greeting

    async def _close(self, code: int, reason: str, timeout: float | None = None) -> None:
        self.close_code = code
        self.close_reason = reason
        self._ended = True
        await edge.close(self.ws, code, reason, timeout or self.settings.close_grace_s)

    async def _fatal(self, err: i.DialectError) -> None:
        """Say what was wrong in the dialect's words, then close with its code."""
        if self._ended:
            return
        self._ended = True
        self.contexts.close_all()
        self.state.metrics.errors.labels(err.code).inc()
        self.log.info("client_error", code=err.code, message=err.message, fatal=True)
        me = asyncio.current_task()
        for t in self._tasks:
            if t is not me:
                t.cancel()
        grace = self.settings.close_grace_s
        deadline = time.monotonic() + grace
        with contextlib.suppress(Exception):
            async with asyncio.timeout(grace):
                # what was said before (non-fatal errors the sender had not sent yet)
                for w in [*self.contexts.take_said(), *self.codec.render_error(err)]:
                    await self._send(w)
        code = err.close_code if err.close_code is not None else CLOSE_POLICY
        await self._close(code, err.code, max(0.1, deadline - time.monotonic()))

    # ------------------------------------------------------------------ drain (SIGTERM)

    def begin_drain(self) -> None:
        """Finish what every context has in hand, then close (1012)."""
        self.draining = True
        self.finishing = True
        for c in self.contexts.open():
            self.contexts.finish(c)
        self._has_items.set()

    async def drain_now(self) -> None:
        await self._fatal(i.DialectError("server_draining", DRAIN_MESSAGE, CLOSE_SERVICE_RESTART))

    def moved(self) -> None:
        """Dialect sessions cannot be resumed, so never taken over."""

    # ------------------------------------------------------------------ watchdog

    async def _watchdog(self) -> None:
        keys = edge.KeyWatch(self.state, self.key_id, self.id)
        while not self._ended:
            await asyncio.sleep(edge.WATCHDOG_PERIOD_S)
            now = time.monotonic()
            keys.key_id = self.key_id  # set later when the key came in the first message
            if await keys.revoked(now):
                r = edge.REVOKED
                await self._fatal(i.DialectError(r.code, r.message, r.close_code))
                return
            unsent = edge.unsent_audio_s(
                self._unsent_bytes(), self.contexts.bytes_sent(), self.audio_s
            )
            for c in self.contexts.all():
                c.conv.socket_sampled(unsent)
            fault = self.liveness.check(self.contexts.view(), now, self._sending)
            if fault is not None:
                await self._fatal(i.DialectError(fault.code, fault.message, fault.close_code))
                return

    def _log_end(self) -> None:
        self.log.info(
            "session_end",
            protocol=self.codec.protocol,
            duration_s=round(time.monotonic() - self._started, 3),
            contexts=self.contexts.opened,
            chars=self.chars_in,
            frames_sent=self.frames_sent,
            audio_s=round(self.audio_s, 3),
            ttfa_ms=[round(t * 1000, 1) for t in self.contexts.ttfa[:8]],
            close_code=self.close_code,
            close_reason=self.close_reason,
        )


def _liveness_settings(settings: Settings, codec: i.Codec) -> Settings:
    """A dialect's own inactivity timeout (ElevenLabs' ``inactivity_timeout``), within
    the server's ``idle_timeout_s``."""
    idle = getattr(codec, "inactivity_s", None)
    if idle is None:
        return settings
    return msgspec.structs.replace(settings, idle_timeout_s=min(idle, settings.idle_timeout_s))


async def pick_engine(state: AppState, model: str | None, voice: str | None) -> str:
    """The engine of a dialect's stream: the one its model id names (as ``GET
    /v1/models`` lists them: an engine, or OpenAI's ids for the default engine), else
    the one that has the voice, else the server's."""
    named = resolve_model(state, model) if model else None
    if named is not None:
        return named
    if voice:
        for name, worker in state.workers.items():
            if voice in {v.id for v in worker.engine.voices()}:
                return name
        with contextlib.suppress(Exception):
            meta = await state.voices.meta(voice)
            if meta is not None and meta.engine in state.workers:
                return str(meta.engine)
    return state.settings.engine
