"""A zero-cost engine for capacity runs: real speech from the default voice,
synthesized once at load, replayed instantly.

``synthesize`` returns a slice of that speech whose length follows the text
(about 15 characters a second, as the real voice speaks), so a load test sees
the same audio volume as with Piper while the model costs nothing. This measures
the server's own cost apart from the model's.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from server.engines.base import Audio, Engine, EngineInfo, VoiceInfo

_SOURCE_TEXT = (
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins "
    "with a single step. Please call Stella and ask her to bring these things with her "
    "from the store. Six spoons of fresh snow peas, five thick slabs of blue cheese."
)
CHARS_PER_S = 15.0


class ReplayEngine:
    name = "replay"

    def __init__(self, source: Engine) -> None:
        self._source = source
        self.sample_rate = source.sample_rate
        self._audio: Audio = np.zeros(0, dtype=np.float32)
        self._cursor = 0

    def load(self) -> None:
        self._source.load()
        self.sample_rate = self._source.sample_rate
        voice = self._source.info().default_voice
        self._audio = np.concatenate(list(self._source.synthesize(_SOURCE_TEXT, voice, 1.0)))

    def info(self) -> EngineInfo:
        src = self._source.info()
        return EngineInfo(
            name=self.name,
            sample_rate=self.sample_rate,
            languages=src.languages,
            default_voice=src.default_voice,
            loaded=len(self._audio) > 0,
            streaming=False,
        )

    def voices(self) -> list[VoiceInfo]:
        return [
            VoiceInfo(
                id=v.id,
                name=v.name,
                engine=self.name,
                language=v.language,
                sample_rate=v.sample_rate,
                builtin=True,
            )
            for v in self._source.voices()
        ]

    def plan(self, text: str, voice: str, speed: float, first: bool) -> list[str] | None:
        return None  # one generation per chunk

    def synthesize(self, text: str, voice: str, speed: float) -> Iterator[Audio]:
        n = int(len(text) / CHARS_PER_S / speed * self.sample_rate)
        src = self._audio
        # Walk through the source so consecutive chunks differ; wrap around.
        start = self._cursor % len(src)
        idx = np.arange(start, start + n) % len(src)
        self._cursor = start + n
        yield src[idx]
