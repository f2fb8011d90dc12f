"""Piper: the embedded CPU default, with the en_US-joe-medium voice shipped in a wheel and
any others in ``piper_voices_dir`` (server/engines/piper_voices.py)."""

from __future__ import annotations

import functools
import inspect
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from server.engines.base import (
    Audio,
    EngineError,
    EngineInfo,
    EngineOptions,
    Timed,
    VoiceInfo,
)
from server.engines.piper_session import load_voice
from server.engines.piper_voices import DEFAULT_VOICE as DEFAULT_VOICE  # its home, before
from server.engines.piper_voices import PiperOptions, catalogue
from server.engines.timing import ChunkTimer
from server.engines.widths import Widths

log = structlog.get_logger("voxwire.piper")

# Piper peak-normalises every sentence; this keeps peaks off full scale so the Opus
# encoder and µ-law never clip, and sentences keep an even loudness.
_VOLUME = 0.8
# Every voice's audio leaves at this rate (the medium and high voices' own); a 16 kHz
# "low" voice is resampled in the engine, so a stream's pipeline has one input rate
# whichever voice speaks.
ENGINE_RATE = 22050


class PiperEngine:
    name = "piper"

    def __init__(self, options: PiperOptions | None = None) -> None:
        self.options = options or PiperOptions()
        self._files = catalogue(self.options)
        # Loaded voices, the one used longest ago first (at most options.max_resident).
        self._voices: OrderedDict[str, Any] = OrderedDict()
        # The same voices' models on sessions of options.busy_threads (when that differs).
        self._busy_sessions: dict[str, Any] = {}
        # Set by an engine process's host: each sentence's width (server/engines/widths.py).
        self.widths: Widths | None = None
        self._lock = threading.Lock()
        self.sample_rate = ENGINE_RATE
        self._loaded = False
        # The metrics' hook (``Metrics.engine_event``, as ProcessEngine's): with
        # engine_isolation=thread this engine says itself how many voices it holds. In an
        # engine process nothing is hooked: its host reports ``resident()`` instead.
        self.events: Callable[[str, str, str], None] = lambda _k, _e, _v: None

    def load(self) -> None:
        """Load the default voice; the others load on first use."""
        self._voice(DEFAULT_VOICE)
        self._loaded = True

    def info(self) -> EngineInfo:
        return EngineInfo(
            name=self.name,
            sample_rate=self.sample_rate,
            languages=sorted({v.language for v in self._files.values()}),
            default_voice=DEFAULT_VOICE,
            loaded=self._loaded,
            streaming=False,
            # None: the voice's own (its config's inference section)
            options={"noise_scale": None, "noise_w": None, "speaker": None},
            word_timings="aligned" if _alignments() else "estimated",
        )

    def voices(self) -> list[VoiceInfo]:
        return [
            VoiceInfo(
                id=v.id,
                name=v.id,
                engine=self.name,
                language=v.language,
                sample_rate=v.sample_rate,
                builtin=True,
                locale=v.locale,
                quality=v.quality,
                speakers=v.speakers or None,
            )
            for v in self._files.values()
        ]

    def resident(self) -> list[str]:
        with self._lock:
            return list(self._voices)

    def plan(self, text: str, voice: str, speed: float, first: bool) -> list[str] | None:
        return None  # one generation per chunk

    def _voice(self, voice: str) -> Any:
        with self._lock:
            pv = self._voices.get(voice)
            if pv is not None:
                self._voices.move_to_end(voice)
                return pv
            f = self._files.get(voice)
            if f is None:
                raise EngineError("unknown_voice", f"piper has no voice {voice!r}")
            from piper import PiperVoice

            # Under the lock: two threads asking for one new voice load it once. A load
            # takes about a second. An engine process runs one request at a time, so
            # nothing waits on it there; with engine_isolation=thread, other threads'
            # look-ups wait for it (syntheses already running do not).
            o = self.options
            pv = _load(PiperVoice, Path(f.model), Path(f.config), o.threads)
            self._voices[voice] = pv
            if o.busy_threads and o.busy_threads != o.threads:
                # With it, not on first use: a load mid-conversation is a second's gap.
                busy = _load(PiperVoice, Path(f.model), Path(f.config), o.busy_threads)
                self._busy_sessions[voice] = busy.session
            while len(self._voices) > self.options.max_resident:
                dropped, _ = self._voices.popitem(last=False)
                self._busy_sessions.pop(dropped, None)
                log.info("piper_voice_unloaded", voice=dropped, resident=len(self._voices))
            log.info("piper_voice_loaded", voice=voice, resident=len(self._voices))
            self.events("resident_voices", self.name, str(len(self._voices)))
            return pv

    def warm_busy(self, text: str) -> None:
        """Run the default voice's busy-time session once (its first run allocates)."""
        pv = self._voice(DEFAULT_VOICE)
        session = self._busy_sessions.get(DEFAULT_VOICE)
        if session is None:
            return
        wide, pv.session = pv.session, session
        try:
            for _ in pv.synthesize(text):
                pass
        finally:
            pv.session = wide

    def _sentences(self, pv: Any, voice: str, chunks: Iterator[Any]) -> Iterator[Any]:
        """Piper's sentences of one request, each on the session ``widths`` picks as it
        starts: Piper reads ``pv.session`` at each sentence, and an engine process runs
        one request at a time, so switching it between sentences is safe there."""
        w = self.widths
        with self._lock:
            busy = self._busy_sessions.get(voice)
        if w is None or busy is None:
            yield from chunks
            return
        wide = pv.session
        try:
            pv.session = wide if w.take() else busy
            for chunk in chunks:
                yield chunk
                pv.session = wide if w.take() else busy
        finally:
            w.done()
            pv.session = wide

    def synthesize(
        self, text: str, voice: str, speed: float, options: EngineOptions | None = None
    ) -> Iterator[Audio]:
        pv = self._voice(voice)
        cfg = self._config(pv, voice, speed, options)
        rate = int(pv.config.sample_rate)
        # Piper yields one array per sentence of the chunk; pass each on at once.
        for chunk in self._sentences(pv, voice, pv.synthesize(text, syn_config=cfg)):
            yield _at_engine_rate(chunk.audio_float_array, rate)

    def synthesize_timed(
        self, text: str, voice: str, speed: float, options: EngineOptions | None = None
    ) -> Iterator[Audio | Timed]:
        """Each sentence's audio with the words of ``text`` that end in it, timed from the
        model's phoneme durations (the samples it made for each phoneme, ``speed``
        included). Without alignments (the onnx package missing) the words' times are
        spread by phoneme count; if even the plan fails, the audio comes alone."""
        pv = self._voice(voice)
        cfg = self._config(pv, voice, speed, options)
        rate = int(pv.config.sample_rate)
        timer = _timer(pv, text, rate)
        # A Piper before alignments has no such argument: its words' times are spread.
        aligned = {"include_alignments": True} if _alignments() else {}
        for chunk in self._sentences(pv, voice, pv.synthesize(text, syn_config=cfg, **aligned)):
            audio = np.ascontiguousarray(chunk.audio_float_array, dtype=np.float32)
            if timer is None:
                yield _at_engine_rate(audio, rate)
                continue
            # Times are in seconds, so they hold at the engine's rate too.
            words, estimated = timer.piece(chunk.phonemes, _alignment(chunk), len(audio))
            yield Timed(_at_engine_rate(audio, rate), words, estimated)

    def _config(self, pv: Any, voice: str, speed: float, o: EngineOptions | None) -> Any:
        from piper import SynthesisConfig

        cfg = SynthesisConfig(length_scale=1.0 / speed, volume=_VOLUME)
        if o is None:
            return cfg
        if o.noise_scale is not None:
            cfg.noise_scale = o.noise_scale
        if o.noise_w is not None:
            cfg.noise_w_scale = o.noise_w
        if o.speaker is not None:
            sid = pv.config.speaker_id_map.get(o.speaker)
            if sid is None:
                names = ", ".join(sorted(pv.config.speaker_id_map)) or "none"
                raise EngineError(
                    "unknown_speaker", f"voice {voice!r} has no speaker {o.speaker!r}: {names}"
                )
            cfg.speaker_id = sid
        return cfg


def _at_engine_rate(audio: Any, rate: int) -> Audio:
    x = np.ascontiguousarray(audio, dtype=np.float32)
    if rate == ENGINE_RATE:
        return x
    import soxr

    out: Audio = soxr.resample(x, rate, ENGINE_RATE, quality="HQ").astype(np.float32, copy=False)
    return out


@functools.cache
def _alignments() -> bool:
    """Whether this Piper gives phoneme alignments (1.8 does; earlier ones have no such
    argument)."""
    from piper import PiperVoice

    return "include_alignments" in inspect.signature(PiperVoice.synthesize).parameters


def _load(piper_voice: Any, model: Path, config: Path, threads: int = 0) -> Any:
    """A voice whose model also gives phoneme durations: patched once and kept on disk,
    or else patched by Piper in memory (which keeps about 100 MB more resident in every
    engine process). Either needs the onnx package; without it Piper loads it plain.
    ``threads`` > 0: on an onnxruntime session of that many threads that never spin
    (server/engines/piper_session.py); the in-memory patch keeps Piper's own."""
    if not _alignments():
        return (
            load_voice(model, config, threads)
            if threads
            else piper_voice.load(model, config_path=config)
        )
    patched = _aligned_model(model)
    if patched is not None:
        if threads:
            return load_voice(patched, config, threads)
        return piper_voice.load(patched, config_path=config)
    return piper_voice.load(model, config_path=config, include_alignments=True)


def _aligned_model(model: Path) -> Path | None:
    """``model`` with its phoneme durations as an output, in the user's cache (written
    once, atomically); None where that cannot be done."""
    try:
        from importlib.metadata import version

        model = model.resolve()  # voices linked to one model share its patched copy
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
