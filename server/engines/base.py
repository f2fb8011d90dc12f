"""What an engine is: a blocking synthesizer the worker runs on its own threads."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import msgspec
import numpy as np
import numpy.typing as npt

Audio = npt.NDArray[np.float32]


def to_pcm16(x: Audio) -> bytes:
    """Audio as stored (uploaded voices, a chunk's journaled audio): 16-bit little-endian."""
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def from_pcm16(data: bytes) -> Audio:
    x: Audio = np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(32767.0)
    return x


class VoiceInfo(msgspec.Struct, kw_only=True):
    id: str
    name: str
    engine: str
    language: str
    sample_rate: int
    builtin: bool = True


class EngineInfo(msgspec.Struct, kw_only=True):
    name: str
    sample_rate: int
    languages: list[str]
    default_voice: str
    loaded: bool
    streaming: bool  # True when audio of one chunk arrives in pieces before the chunk is done


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
