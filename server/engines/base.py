"""What an engine is: a blocking synthesizer the worker runs on its own threads."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import msgspec
import numpy as np
import numpy.typing as npt

from server.protocol import EngineOptions as EngineOptions  # engines' side of it

Audio = npt.NDArray[np.float32]


def to_pcm16(x: Audio) -> bytes:
    """Audio as stored (uploaded voices, a chunk's journaled audio): 16-bit little-endian."""
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def from_pcm16(data: bytes) -> Audio:
    x: Audio = np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(32767.0)
    return x


class VoiceInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A voice as the voices routes list it; what a voice does not say is left out."""

    id: str
    name: str
    engine: str
    language: str
    sample_rate: int
    builtin: bool
    locale: str | None = None  # as the voice names it, e.g. "de_DE"
    quality: str | None = None  # Piper's x_low, low, medium, high
    speakers: list[str] | None = None  # a multi-speaker voice's `speaker` values


class EngineInfo(msgspec.Struct, kw_only=True):
    name: str
    sample_rate: int
    languages: list[str]
    default_voice: str
    loaded: bool
    streaming: bool  # True when audio of one chunk arrives in pieces before the chunk is done
    # The per-stream options (EngineOptions' fields) it honours, with its defaults (None:
    # the voice's own, e.g. a Piper voice's config); stream set-up refuses the others.
    options: dict[str, float | int | str | None] = {}
    clones: bool = False  # makes voices from uploaded references
    voices: list[str] = []  # ids of the voices anyone may name (GET /v1/engines fills it)
    word_timings: Literal["aligned", "estimated"] | None = None


class WordSpan(msgspec.Struct, array_like=True, frozen=True):
    """A word of the text an engine was given and when it is spoken: ``[start, end)`` in
    that text; ``t0``/``t1`` in seconds from the start of the piece of audio that carries
    it (``t0`` is negative for a word begun in an earlier piece)."""

    start: int
    end: int
    t0: float
    t1: float


@dataclass(slots=True)
class Timed:
    """A piece of audio with the words that end in it (``TimedEngine``)."""

    audio: Audio
    words: list[WordSpan]
    estimated: bool = False  # times spread by phoneme count, not the model's alignment


class EngineError(Exception):
    """The engine could not synthesize; ``code`` goes to the client in an error event."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Engine(Protocol):
    """A synthesizer. ``load`` and ``synthesize`` block and run on worker threads."""

    name: str
    sample_rate: int

    def load(self) -> None: ...

    def info(self) -> EngineInfo: ...

    def voices(self) -> list[VoiceInfo]: ...

    def synthesize(self, text: str, voice: str, speed: float) -> Iterator[Audio]:
        """Yield mono float32 audio in [-1, 1] at ``sample_rate`` as it is produced.

        The caller may stop iterating at any time (barge-in); the engine must not
        rely on being drained.
        """
        ...

    def plan(self, text: str, voice: str, speed: float, first: bool) -> list[str] | None:
        """How the engine will split ``text`` into separate generations, as spans of it,
        or None when it makes a chunk in one go. A conversation that journals (resume)
        submits an engine's pieces as chunks of their own, so each leaves when made."""
        ...


class TimedEngine(Engine, Protocol):
    """An engine that can say when each word is spoken (Piper, from its phoneme
    alignments). The worker asks for it only when a job wants word timings."""

    def synthesize_timed(self, text: str, voice: str, speed: float) -> Iterator[Audio | Timed]:
        """As ``synthesize``, but a piece may come as ``Timed``: its audio and the words
        of ``text`` that end in it. A piece without known words comes as plain audio."""
        ...
