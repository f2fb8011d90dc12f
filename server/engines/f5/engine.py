"""F5-TTS: zero-shot voice cloning from a few seconds of reference audio.

The engine is driven by ``BatchedEngineWorker`` (``batch_worker.py``): the worker asks
``plan`` how a chunk of text splits into generations, then calls ``generate`` on its
device thread with up to ``max_batch`` pieces from different sessions, which run as one
padded batch with per-item durations through ``CFM.sample``. ``synthesize`` (the plain
Engine interface, used for the warm-up) runs the same path one piece at a time.

torch and f5-tts are imported only inside methods, so importing this module (and the
core server) needs neither.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import structlog

from server.engines.base import Audio, EngineError, EngineInfo, VoiceInfo
from server.engines.f5.checkpoints import ModelSpec, load_cfm, load_vocos
from server.engines.f5.policy import (
    SAMPLE_RATE,
    CrossFader,
    StreamPolicy,
    duration_frames,
    nbytes,
    split_pieces,
    trim_trailing_silence,
)
from server.engines.f5.registry import ModelRegistry, read_registry
from server.engines.f5.voices import (
    F5Voice,
    VoiceError,
    builtin_voices,
    prepare_reference,
    scan_voices_dir,
)

if TYPE_CHECKING:
    from server.config import Settings
    from server.state.voices import VoiceCache

log = structlog.get_logger("voxwire.f5")


class F5Options(msgspec.Struct, frozen=True, kw_only=True):
    checkpoint: str
    config: str = "F5TTS_v1_Base"
    vocab: str = ""
    languages: tuple[str, ...] = ("en", "zh")
    registry: str = ""
    max_resident: int = 2
    vocos: str = "hf://charactr/vocos-mel-24khz"
    offline: bool = False
    device: str = "auto"
    dtype: str = "auto"
    cpu_threads: int = 0
    nfe_steps: int = 16
    cfg_strength: float = 2.0
    sway_sampling_coef: float = -1.0
    seed: int = -1
    batch_mask: bool = True
    voices_dir: str = ""
    policy: StreamPolicy = StreamPolicy()

    @classmethod
    def from_settings(cls, s: Settings) -> F5Options:
        return cls(
            checkpoint=s.f5_checkpoint,
            config=s.f5_model_config,
            vocab=s.f5_vocab,
            languages=tuple(x.strip().lower() for x in s.f5_languages.split(",") if x.strip()),
            registry=s.f5_registry,
            max_resident=s.f5_max_resident,
            vocos=s.f5_vocos,
            offline=s.f5_offline,
            device=s.f5_device,
            dtype=s.f5_dtype,
            cpu_threads=s.f5_cpu_threads,
            nfe_steps=s.f5_nfe_steps,
            cfg_strength=s.f5_cfg_strength,
            seed=s.f5_seed,
            batch_mask=s.f5_batch_mask,
            voices_dir=s.f5_voices_dir,
        )


@dataclass(slots=True, frozen=True)
class PreparedVoice:
    """An uploaded voice ready to speak: the prepared reference and its mel (frames,
    mels) on the engine's device, computed once."""

    voice: F5Voice
    mel: Any


@dataclass(slots=True)
class GenRequest:
    """One piece of one session's text, a row of a batch."""

    voice: str
    text: str
    speed: float


class F5Engine:
    name = "f5"
    sample_rate = SAMPLE_RATE

    def __init__(self, opts: F5Options) -> None:
        self.opts = opts
        self.policy = opts.policy
        default = ModelSpec(
            key="default",
            checkpoint=opts.checkpoint,
            config=opts.config,
            vocab=opts.vocab,
            languages=opts.languages,
        )
        extra = read_registry(Path(opts.registry).expanduser()) if opts.registry else []
        self.registry: ModelRegistry[Any] = ModelRegistry(
            [default, *extra], self._load_model, self._unload_model, opts.max_resident
        )
        self._voices: dict[str, F5Voice] = {}
        self._mels: dict[str, Any] = {}  # voice id -> reference mel (frames, 100) on the device
        self._mel_spec: Any = None
        # Uploaded voices (issue 4), installed by the app: a bounded LRU that the voices
        # registry fills from the shared store and that delete notices evict.
        self.uploaded: VoiceCache[PreparedVoice] | None = None
        self._vocos: Any = None
        self._default_voice = ""
        self._loaded = False
        self._lock = threading.Lock()  # load() vs a concurrent first generate()
        self.device = "cpu"
        self.dtype: Any = None
        self.device_name = "cpu"

    # ------------------------------------------------------------------ loading

    def load(self) -> None:
        import torch

        with self._lock:
            if self._loaded:
                return
            opts = self.opts
            device = opts.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            self.device = device
            cuda = device.startswith("cuda")
            dtypes = {
                "float32": torch.float32,
                "float16": torch.float16,
                "bfloat16": torch.bfloat16,
            }
            if opts.dtype == "auto":
                self.dtype = torch.float16 if cuda else torch.float32
            else:
                self.dtype = dtypes[opts.dtype]
            self.device_name = torch.cuda.get_device_name(device) if cuda else "cpu"
            if not cuda and opts.cpu_threads:
                # On a shared CPU, torch's default (a thread per core) can be far slower.
                torch.set_num_threads(opts.cpu_threads)
            self._prepare_voices()  # a bad voice is a configuration error: start-up fails
            self._loaded = True
            try:
                # The default model now (the app warms it up); others when first used.
                self._vocoder()
                self.registry.get(self.model_key(self._default_voice))
            except Exception as exc:
                # A missing or broken checkpoint must not keep the server down: generations
                # retry the load, fail, and the worker's breaker sends sessions elsewhere.
                log.error("f5_model_load_failed", error=f"{type(exc).__name__}: {exc}")

    def _vocoder(self) -> Any:
        if self._vocos is None:
            self._vocos = load_vocos(self.opts.vocos, device=self.device, offline=self.opts.offline)
        return self._vocos

    def _load_model(self, spec: ModelSpec) -> Any:
        return load_cfm(
            spec,
            device=self.device,
            dtype=self.dtype,
            offline=self.opts.offline,
            batch_mask=self.opts.batch_mask,
        )

    def _unload_model(self, model: Any) -> None:
        import torch

        del model
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def release_memory(self) -> None:
        """Return the CUDA caching allocator's free blocks (after an out-of-memory)."""
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def _prepare_voices(self) -> None:
        import torch
        from f5_tts.model.modules import MelSpec

        from server.engines.f5.checkpoints import MEL

        langs = set(self.registry.languages)
        voices = [v for v in builtin_voices() if v.language in langs]
        if self.opts.voices_dir:
            voices += scan_voices_dir(
                Path(self.opts.voices_dir).expanduser(), self.opts.languages[0]
            )
        for v in voices:
            if v.language not in langs:
                raise VoiceError(
                    f"voice {v.id!r} is {v.language!r}, which no F5 model speaks "
                    f"(f5_languages, f5_registry: {', '.join(sorted(langs))})"
                )
        if not voices:
            raise VoiceError("no F5 voice: add <id>.wav + <id>.txt files to f5_voices_dir")
        mel_spec = self._mel_spec = MelSpec(**MEL).to(self.device)
        for v in voices:
            if v.id in self._voices:
                raise VoiceError(f"two F5 voices are named {v.id!r}")
            wave = torch.from_numpy(v.audio).to(self.device)[None]
            with torch.inference_mode():
                # (1, mels, frames) -> (frames, mels), kept on the device for every generation
                self._mels[v.id] = mel_spec(wave)[0].transpose(0, 1).contiguous()
            self._voices[v.id] = v
            if v.clipped_from_s is not None:
                log.info(
                    "f5_voice_clipped",
                    voice=v.id,
                    from_s=round(v.clipped_from_s, 2),
                    to_s=round(v.seconds, 2),
                )
        self._default_voice = voices[0].id
        log.info("f5_voices", voices=[v.id for v in voices])

    # ------------------------------------------------------------------ Engine interface

    def info(self) -> EngineInfo:
        return EngineInfo(
            name=self.name,
            sample_rate=self.sample_rate,
            languages=self.registry.languages,
            default_voice=self._default_voice,
            loaded=self._loaded,
            streaming=True,
        )

    def voices(self) -> list[VoiceInfo]:
        """Built-in and configured voices, then the uploaded voices this node has ready."""
        uploaded = [p.voice for p in self.uploaded.values()] if self.uploaded else []
        return [
            VoiceInfo(
                id=v.id,
                name=v.name or v.id,
                engine=self.name,
                language=v.language,
                sample_rate=self.sample_rate,
                builtin=v.builtin,
            )
            for v in [*self._voices.values(), *(u for u in uploaded if u.id not in self._voices)]
        ]

    def prepare_uploaded(
        self, voice_id: str, name: str, language: str, transcript: str, audio: Audio
    ) -> PreparedVoice:
        """An uploaded reference (mono float32 at 24 kHz) made ready to speak: F5's
        preparation, then its mel on the device. Blocks (run it on a thread); raises
        VoiceError when the reference cannot be used, EngineError before ``load``."""
        import torch

        if not self._loaded or self._mel_spec is None:
            raise EngineError("not_ready", "the f5 engine is not loaded yet")
        if language not in self.registry.languages:
            raise VoiceError(
                f"voice {voice_id!r} is {language!r}, which no F5 model speaks "
                f"({', '.join(self.registry.languages)})"
            )
        ref, text, gain, clipped = prepare_reference(audio, SAMPLE_RATE, transcript, voice_id)
        voice = F5Voice(
            id=voice_id,
            language=language,
            text=text,
            audio=ref,
            gain=gain,
            clipped_from_s=clipped,
            name=name,
        )
        wave = torch.from_numpy(ref).to(self.device)[None]
        with torch.inference_mode():
            mel = self._mel_spec(wave)[0].transpose(0, 1).contiguous()
        return PreparedVoice(voice, mel)

    def _prepared(self, voice: str) -> tuple[F5Voice, Any]:
        v = self._voices.get(voice)
        if v is not None:
            return v, self._mels[voice]
        p = self.uploaded.get(voice) if self.uploaded is not None else None
        if p is None:
            raise EngineError("unknown_voice", f"f5 has no voice {voice!r}")
        return p.voice, p.mel

    def synthesize(self, text: str, voice: str, speed: float) -> Iterator[Audio]:
        """Unbatched: the pieces of ``text`` one after another, cross-faded."""
        key = self.model_key(voice)
        fader = CrossFader(self.policy)
        for piece in self.plan(text, voice, speed, first=True):
            out = fader.push(self.generate(key, [GenRequest(voice, piece, speed)])[0])
            if out.size:
                yield out
        tail = fader.end()
        if tail.size:
            yield tail

    # ------------------------------------------------------------------ batching

    def voice(self, voice: str) -> F5Voice:
        return self._prepared(voice)[0]

    def model_key(self, voice: str) -> str:
        v = self.voice(voice)
        key = self.registry.key_for(v.language)
        if key is None:
            raise EngineError("unsupported_language", f"no F5 model speaks {v.language!r}")
        return key

    def plan(self, text: str, voice: str, speed: float, first: bool) -> list[str]:
        v = self.voice(voice)
        return split_pieces(text, v.bytes_per_s, speed, first, v.seconds, self.policy)

    def durations(self, reqs: list[GenRequest]) -> list[int]:
        """Total frames (reference + output) of each request, by F5's duration rule."""
        out = []
        for r in reqs:
            v, mel = self._prepared(r.voice)
            ref_frames = int(mel.shape[0])
            out.append(
                duration_frames(ref_frames, v.text_bytes, nbytes(r.text), r.speed, self.policy)
            )
        return out

    def generate(self, key: str, reqs: list[GenRequest]) -> list[Audio]:
        """One padded batch through the model of ``key``: a waveform per request, its
        trailing silence trimmed. Blocks; runs on the device thread. Raises on failure."""
        import torch
        from f5_tts.model.utils import convert_char_to_pinyin
        from torch.nn.utils.rnn import pad_sequence

        vocos = self._vocoder()
        model = self.registry.get(key)
        # One look-up per request: an uploaded voice evicted meanwhile stays usable here.
        prepared = [self._prepared(r.voice) for r in reqs]
        voices = [v for v, _ in prepared]
        mels = [m for _, m in prepared]
        lens = [int(m.shape[0]) for m in mels]
        durs = [
            duration_frames(n, v.text_bytes, nbytes(r.text), r.speed, self.policy)
            for n, v, r in zip(lens, voices, reqs, strict=True)
        ]
        # Input text is the reference transcript followed by the new text, as F5 was trained.
        texts = convert_char_to_pinyin([v.text + r.text for v, r in zip(voices, reqs, strict=True)])
        dev = self.device
        with torch.inference_mode():
            mel, _ = model.sample(
                cond=pad_sequence(mels, batch_first=True),
                text=texts,
                duration=torch.tensor(durs, device=dev, dtype=torch.long),
                lens=torch.tensor(lens, device=dev, dtype=torch.long),
                steps=self.opts.nfe_steps,
                cfg_strength=self.opts.cfg_strength,
                sway_sampling_coef=self.opts.sway_sampling_coef,
                seed=self.opts.seed if self.opts.seed >= 0 else None,
            )
            mel = mel.float()
            out: list[Audio] = []
            for i, v in enumerate(voices):
                # Each item is vocoded alone: Vocos' convolutions would see a padded
                # neighbour's frames at the item's end.
                gen = mel[i, lens[i] : durs[i]].transpose(0, 1)[None]
                wave = vocos.decode(gen)[0].cpu().numpy().astype(np.float32)
                wave = np.clip(wave * v.gain, -1.0, 1.0)
                out.append(trim_trailing_silence(wave, self.policy))
        return out
