"""What a dialect's client asks for, in the core's terms, and what a codec renders.

A dialect codec (server/dialects/elevenlabs.py, deepgram.py, cartesia.py) is sans-I/O:
``decode`` turns one client message into intents on named contexts (a context is
one stream of speech: one conversation core); the ``render_*`` methods turn what
the core says (audio, segments, word timings, flushed, cancelled, done, errors)
into that dialect's messages. The edge (server/ws/dialect.py) does the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from server import protocol as p


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """An output format a dialect named, in the pipeline's terms."""

    encoding: str  # an encoder name for server.streaming.encoder.make_encoder
    sample_rate: int
    name: str  # the dialect's own spelling, for logs and errors
    bitrate: int | None = None  # bits per second (MP3, Opus)


@dataclass(frozen=True, slots=True)
class StreamArgs:
    """How a context's stream is set up."""

    voice: str | None
    model: str | None  # the dialect's model id: an engine when it names one
    fmt: AudioFormat
    language: str | None = None
    speed: float = 1.0
    timings: bool = False  # word timings wanted


@dataclass(frozen=True, slots=True)
class Open:
    ctx: str
    args: StreamArgs


@dataclass(frozen=True, slots=True)
class Say:
    ctx: str
    text: str


@dataclass(frozen=True, slots=True)
class Flush:
    ctx: str


@dataclass(frozen=True, slots=True)
class Finish:
    """No more text for the context: speak the rest, then its final message."""

    ctx: str


@dataclass(frozen=True, slots=True)
class Cancel:
    """Barge-in; the context stays open for more text."""

    ctx: str


@dataclass(frozen=True, slots=True)
class Stop:
    """Barge-in that also ends the context (its final message follows at once)."""

    ctx: str


@dataclass(frozen=True, slots=True)
class CloseSocket:
    """Finish every open context, then close the connection normally."""


Intent = Open | Say | Flush | Finish | Cancel | Stop | CloseSocket


class DialectError(Exception):
    """A client message the dialect refuses. ``close_code`` None: the connection goes on."""

    def __init__(
        self, code: str, message: str, close_code: int | None = None, ctx: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code
        self.ctx = ctx


Wire = str | bytes  # one WebSocket message: text or binary


class Codec(Protocol):
    """One connection's dialect: decodes its messages, renders the core's output."""

    protocol: str  # the metrics label: "elevenlabs", "deepgram", "cartesia"
    max_contexts: int
    fatal_codes: frozenset[str]  # refusals that close the connection (1008)

    def greeting(self) -> list[Wire]:
        """Messages to send as soon as the connection is accepted."""
        ...

    def opening(self) -> list[Intent]:
        """Intents the URL alone implies (a single-context dialect opens its stream)."""
        ...

    def decode(self, text: str) -> list[Intent]:
        """One client text message; raises DialectError naming what was wrong."""
        ...

    def render_audio(self, ctx: str, data: bytes) -> Wire: ...

    def render_segment(self, ctx: str, seg: p.Segment) -> list[Wire]: ...

    def render_words(self, ctx: str, words: p.Words) -> list[Wire]: ...

    def render_flushed(self, ctx: str) -> list[Wire]: ...

    def render_cancelled(self, ctx: str) -> list[Wire]: ...

    def render_final(self, ctx: str, cancelled: bool) -> list[Wire]: ...

    def render_error(self, err: DialectError) -> list[Wire]: ...
