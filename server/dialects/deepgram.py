"""Deepgram Aura ``/v1/speak`` over a WebSocket (sans-I/O codec).

One stream per connection, opened by the URL (``model``, ``encoding``,
``sample_rate``): ``Speak`` adds text, ``Flush`` speaks what is buffered and
answers ``Flushed`` after its last audio, ``Clear`` is the barge-in (``Cleared``),
``Close`` speaks the rest and closes. Audio goes out as binary messages with no
header. docs/dialects.md lists every field.
"""

from __future__ import annotations

import uuid
from collections.abc import Container, Mapping

from server import protocol as p
from server.conversation.types import CLOSE_POLICY
from server.dialects import intents as i
from server.dialects.common import clamp_speed, encode, field, json_object

_RATES = {
    "linear16": (8000, 16000, 24000, 32000, 48000),
    "mulaw": (8000, 16000),
    "alaw": (8000, 16000),
}
_ENCODER = {"linear16": "pcm_s16le", "mulaw": "mulaw", "alaw": "alaw"}
_CTX = "0"


def output_format(query: Mapping[str, str]) -> i.AudioFormat:
    enc = query.get("encoding", "linear16")
    if enc not in _RATES:
        raise i.DialectError(
            "UNSUPPORTED_ENCODING",
            f"encoding {enc!r} is not supported on the WebSocket; use linear16, mulaw or alaw",
            CLOSE_POLICY,
        )
    container = query.get("container", "none")
    if container != "none":
        raise i.DialectError(
            "UNSUPPORTED_CONTAINER",
            f"container {container!r} is not supported on the WebSocket; use none",
            CLOSE_POLICY,
        )
    default = 24000 if enc == "linear16" else 8000
    raw = query.get("sample_rate", str(default))
    rate = int(raw) if raw.isdigit() else -1
    if rate not in _RATES[enc]:
        allowed = ", ".join(map(str, _RATES[enc]))
        raise i.DialectError(
            "UNSUPPORTED_SAMPLE_RATE",
            f"sample_rate {raw!r} is not supported for {enc}; use one of {allowed}",
            CLOSE_POLICY,
        )
    return i.AudioFormat(_ENCODER[enc], rate, f"{enc}@{rate}")


class DeepgramCodec:
    protocol = "deepgram"
    max_contexts = 1
    fatal_codes: frozenset[str] = frozenset()

    def __init__(
        self, query: Mapping[str, str], voices: Container[str], engines: Container[str]
    ) -> None:
        self.model = query.get("model", "")
        self.fmt = output_format(query)
        speed = query.get("speed")
        try:
            self.speed = clamp_speed(float(speed)) if speed else 1.0
        except ValueError:
            raise i.DialectError(
                "INVALID_SPEED", f"speed {speed!r} is not a number", CLOSE_POLICY
            ) from None
        # ``model`` names a voice (Aura's models are voices), else an engine.
        self.voice = self.model if self.model in voices else None
        self.engine = self.model if self.model in engines else None
        if self.model and self.voice is None and self.engine is None:
            raise i.DialectError(
                "UNKNOWN_MODEL",
                f"model {self.model!r} is neither a voice nor an engine of this server; "
                "see GET /v1/voices and GET /v1/models",
                CLOSE_POLICY,
            )
        self.request_id = str(uuid.uuid4())
        self.flushes = 0  # Flushed and Cleared carry the count of flushes so far

    def greeting(self) -> list[i.Wire]:
        meta = {
            "type": "Metadata",
            "request_id": self.request_id,
            "model_name": self.model or "default",
            "model_version": "voxwire",
            "model_uuid": self.request_id,
        }
        return [encode(meta).decode()]

    def opening(self) -> list[i.Intent]:
        args = i.StreamArgs(voice=self.voice, model=self.engine, fmt=self.fmt, speed=self.speed)
        return [i.Open(_CTX, args)]

    def decode(self, text: str) -> list[i.Intent]:
        msg = json_object(text, CLOSE_POLICY)  # a client that sends garbage is broken
        kind = field(msg, "type", str)
        if kind == "Speak":
            said = field(msg, "text", str)
            if said is None:
                raise i.DialectError("MISSING_TEXT", "a Speak message needs a 'text' string")
            return [i.Say(_CTX, said)] if said else []
        if kind == "Flush":
            return [i.Flush(_CTX)]
        if kind == "Clear":
            return [i.Cancel(_CTX)]
        if kind == "Close":
            return [i.Finish(_CTX), i.CloseSocket()]
        raise i.DialectError(
            "UNKNOWN_MESSAGE_TYPE",
            f"unknown message type {kind!r}; expected Speak, Flush, Clear or Close",
        )

    def render_audio(self, ctx: str, data: bytes) -> i.Wire:
        return data

    def render_segment(self, ctx: str, seg: p.Segment) -> list[i.Wire]:
        return []

    def render_words(self, ctx: str, words: p.Words) -> list[i.Wire]:
        return []

    def render_flushed(self, ctx: str) -> list[i.Wire]:
        self.flushes += 1
        return [encode({"type": "Flushed", "sequence_id": self.flushes - 1}).decode()]

    def render_cancelled(self, ctx: str) -> list[i.Wire]:
        return [encode({"type": "Cleared", "sequence_id": self.flushes}).decode()]

    def render_final(self, ctx: str, cancelled: bool) -> list[i.Wire]:
        return []

    def render_error(self, err: i.DialectError) -> list[i.Wire]:
        if err.close_code is None:
            msg = {
                "type": "Warning",
                "warn_code": err.code,
                "warn_msg": err.message,
                "description": err.message,
                "code": err.code,
            }
        else:
            msg = {
                "type": "Error",
                "err_code": err.code,
                "err_msg": err.message,
                "description": err.message,
            }
        return [encode(msg).decode()]
