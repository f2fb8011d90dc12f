"""Cartesia ``/tts/websocket`` (sans-I/O codec).

Every request names its ``context_id``; the first request of a context sets it up
(``voice``, ``output_format``, ``model_id``, ``language``, ``add_timestamps``),
``continue: true`` keeps it open for more ``transcript``, ``continue: false``
ends its input, and ``{"context_id", "cancel": true}`` stops it (nothing more is
sent for it). ``max_buffer_delay_ms: 0`` (what Pipecat sends with whole
sentences) speaks each transcript at once. docs/dialects.md lists every field.
"""

from __future__ import annotations

import uuid
from typing import Any

from server import protocol as p
from server.dialects import intents as i
from server.dialects.alignment import word_end
from server.dialects.common import b64, clamp_speed, encode, field, json_object

MAX_CONTEXTS = 16
_ENCODER = {
    "pcm_s16le": "pcm_s16le",
    "pcm_f32le": "pcm_f32le",
    "pcm_mulaw": "mulaw",
    "pcm_alaw": "alaw",
}
_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
_SPEEDS = {"slowest": 0.6, "slow": 0.8, "normal": 1.0, "fast": 1.25, "fastest": 1.5}


def output_format(obj: dict[str, Any], ctx: str) -> i.AudioFormat:
    container = field(obj, "container", str, "raw")
    enc = field(obj, "encoding", str, "pcm_s16le")
    rate = field(obj, "sample_rate", int, 24000)
    if container != "raw":
        raise i.DialectError(
            "invalid_output_format",
            f"output_format.container {container!r} is not supported on the WebSocket; use raw",
            ctx=ctx,
        )
    if enc not in _ENCODER:
        raise i.DialectError(
            "invalid_output_format",
            f"output_format.encoding {enc!r} is not supported; use " + ", ".join(_ENCODER),
            ctx=ctx,
        )
    if rate not in _RATES:
        raise i.DialectError(
            "invalid_output_format",
            f"output_format.sample_rate {rate} is not supported; use one of "
            + ", ".join(map(str, _RATES)),
            ctx=ctx,
        )
    return i.AudioFormat(_ENCODER[enc], rate, f"{enc}@{rate}")


class CartesiaCodec:
    protocol = "cartesia"
    max_contexts = MAX_CONTEXTS
    fatal_codes: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self._open: set[str] = set()
        self._ended: set[str] = set()  # input over (continue: false), audio still going
        self._timestamps: set[str] = set()
        self._flush_ids: dict[str, int] = {}
        self._texts: dict[str, str] = {}  # the context's current segment's text

    def greeting(self) -> list[i.Wire]:
        return []

    def opening(self) -> list[i.Intent]:
        return []

    def decode(self, text: str) -> list[i.Intent]:
        msg = json_object(text)
        ctx = field(msg, "context_id", str) or ""
        try:
            return self._request(msg, ctx)
        except i.DialectError as err:
            if err.ctx is None and ctx:
                err.ctx = ctx  # the client routes an error by the request's context
            raise

    def _request(self, msg: dict[str, Any], ctx: str) -> list[i.Intent]:
        if field(msg, "cancel", bool, False):
            if not ctx:
                raise i.DialectError("missing_context_id", "a cancel needs its 'context_id'")
            return [i.Stop(ctx)] if ctx in self._open else []
        said = field(msg, "transcript", str)
        if said is None:
            raise i.DialectError(
                "invalid_request",
                "a request needs a 'transcript' (or 'cancel': true with a 'context_id')",
                ctx=ctx or None,
            )
        # every field is read before anything changes: a refused request leaves no trace
        more = field(msg, "continue", bool, False)
        flush = field(msg, "flush", bool, False) or field(msg, "max_buffer_delay_ms", int, -1) == 0
        ctx = ctx or uuid.uuid4().hex
        if ctx in self._ended:
            raise i.DialectError(
                "context_closed",
                f"context {ctx!r} has ended its input (continue: false); use a new context_id",
                ctx=ctx,
            )
        out: list[i.Intent] = []
        if ctx not in self._open:
            out.append(i.Open(ctx, self._args(msg, ctx)))
            self._open.add(ctx)
        if said:
            out.append(i.Say(ctx, said))
        if not more:
            self._ended.add(ctx)
            return [*out, i.Finish(ctx)]  # which speaks what is buffered anyway
        if flush:
            out.append(i.Flush(ctx))
        return out

    def _args(self, msg: dict[str, Any], ctx: str) -> i.StreamArgs:
        voice = field(msg, "voice", (dict, str), {})
        if isinstance(voice, str):
            voice = {"mode": "id", "id": voice}  # the SDK's bare id
        mode = field(voice, "mode", str, "id")
        if mode != "id":
            raise i.DialectError(
                "invalid_voice", f"voice.mode {mode!r} is not supported; use id", ctx=ctx
            )
        args = i.StreamArgs(
            voice=field(voice, "id", str),
            model=field(msg, "model_id", str),
            fmt=output_format(field(msg, "output_format", dict, {}), ctx),
            language=field(msg, "language", str),
            speed=_speed(msg, voice),
            timings=field(msg, "add_timestamps", bool, False),
        )
        if args.timings:
            self._timestamps.add(ctx)
        return args

    # ------------------------------------------------------------------ server -> client

    def render_audio(self, ctx: str, data: bytes) -> i.Wire:
        return self._msg("chunk", ctx, data=b64(data), step_time=0)

    def render_segment(self, ctx: str, seg: p.Segment) -> list[i.Wire]:
        self._texts[ctx] = seg.text
        return []

    def render_words(self, ctx: str, words: p.Words) -> list[i.Wire]:
        if ctx not in self._timestamps or not words.words:
            return []
        text = self._texts.get(ctx, "")
        ts = {
            # a word with the punctuation that follows it, as Cartesia reports them
            "words": [
                text[w.char : word_end(text, w.char + len(w.text))] or w.text for w in words.words
            ],
            "start": [round(w.start, 3) for w in words.words],
            "end": [round(w.end, 3) for w in words.words],
        }
        return [self._msg("timestamps", ctx, word_timestamps=ts)]

    def render_flushed(self, ctx: str) -> list[i.Wire]:
        n = self._flush_ids.get(ctx, 0) + 1
        self._flush_ids[ctx] = n
        return [self._msg("flush_done", ctx, flush_id=n, flush_done=True)]

    def render_cancelled(self, ctx: str) -> list[i.Wire]:
        return []

    def render_final(self, ctx: str, cancelled: bool) -> list[i.Wire]:
        self._open.discard(ctx)
        self._ended.discard(ctx)
        self._timestamps.discard(ctx)
        self._flush_ids.pop(ctx, None)
        self._texts.pop(ctx, None)
        if cancelled:
            return []  # after a cancel nothing more is sent for the context
        return [
            encode({"type": "done", "context_id": ctx, "status_code": 200, "done": True}).decode()
        ]

    def render_error(self, err: i.DialectError) -> list[i.Wire]:
        msg = {
            "type": "error",
            "context_id": err.ctx or "",
            "status_code": 400 if err.close_code is None else 500,
            "done": True,
            "error": err.message,
            "title": err.code,
        }
        # The request the error answers is dropped; an open context goes on (one that
        # could not open is forgotten by render_final, which the edge calls then).
        return [encode(msg).decode()]

    def _msg(self, kind: str, ctx: str, **extra: object) -> str:
        msg: dict[str, object] = {
            "type": kind,
            "context_id": ctx,
            "status_code": 206,
            "done": False,
        }
        msg.update(extra)
        return encode(msg).decode()


def _speed(msg: dict[str, Any], voice: dict[str, Any]) -> float:
    """``speed`` (a number, or Cartesia's slowest … fastest), at the top level or in
    the voice's ``__experimental_controls``."""
    raw = msg.get("speed")
    if raw is None:
        controls = voice.get("__experimental_controls")
        raw = controls.get("speed") if isinstance(controls, dict) else None
    if isinstance(raw, str):
        return _SPEEDS.get(raw, 1.0)
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        # Cartesia's numeric speed is -1..1 around normal; a plain factor is taken as is
        return clamp_speed(1.0 + raw * 0.5 if -1 <= raw <= 1 else raw)
    return 1.0
