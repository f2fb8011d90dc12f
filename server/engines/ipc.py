"""Messages between the server and an engine process (server/engines/process.py).

Sent with ``multiprocessing.connection.Connection.send_bytes`` (length-framed) as
msgpack: audio travels as raw float32 bytes, so a piece costs one copy each way.
"""

from __future__ import annotations

import msgspec

from server.engines.base import EngineInfo, EngineOptions, VoiceInfo, WordSpan


class Hello(msgspec.Struct, tag="hello"):
    """The engine is loaded and warm: what it offers."""

    pid: int
    info: EngineInfo
    voices: list[VoiceInfo]


class Synthesize(msgspec.Struct, tag="synth"):
    id: int
    text: str
    voice: str
    speed: float
    timed: bool = False  # word timings wanted: pieces come with their words
    options: EngineOptions | None = None  # the stream's engine options, if it set any
    # The session it is for, as a small int (0: none): its own requests don't narrow
    # each other's sentences (server/engines/widths.py).
    group: int = 0


class Cancel(msgspec.Struct, tag="cancel"):
    """Stop request ``id`` at its next piece (a barge-in; the server dropped it)."""

    id: int


class Piece(msgspec.Struct, tag="piece"):
    id: int
    audio: bytes  # mono float32, little-endian, at the engine's rate
    # The words that end in this piece (a timed request): spans of the request's text,
    # seconds from the piece's start. None: no timings for this piece.
    words: list[WordSpan] | None = None
    estimated: bool = False


class Finished(msgspec.Struct, tag="done"):
    id: int
    rss_bytes: int
    # The process is over its memory bound and exits now: the server starts another.
    retiring: bool = False
    resident_voices: int = -1  # voices the engine has loaded (-1: it does not say)


class Failed(msgspec.Struct, tag="failed"):
    """An EngineError (``id`` > 0), or the engine could not load (``id`` == 0)."""

    id: int
    code: str
    message: str


ToEngine = Synthesize | Cancel
FromEngine = Hello | Piece | Finished | Failed

encode = msgspec.msgpack.Encoder().encode
decode_to_engine = msgspec.msgpack.Decoder(ToEngine).decode
decode_from_engine = msgspec.msgpack.Decoder(FromEngine).decode
