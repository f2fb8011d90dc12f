"""F5-TTS: zero-shot voice cloning from a few seconds of reference audio.

The engine is driven by ``BatchedEngineWorker`` (``batch_worker.py``): the worker asks
``plan`` how a chunk of text splits into generations, then calls ``generate`` on its
device thread with up to ``max_batch`` pieces from different sessions, which run as one
padded batch with per-item durations through ``CFM.sample``. ``synthesize`` (the plain
Engine interface, used for the warm-up) runs the same path one piece at a time.

The model itself (``device.py``) runs in this process with ``engine_isolation=thread``
and in a supervised child process, the generation host, with ``process`` (``remote.py``
here, ``host.py`` there); the planning and the voices stay here either way.

torch and f5-tts are imported only inside methods, so importing this module (and the
core server) needs neither.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from server.engines.base import Audio, EngineError, EngineInfo, EngineOptions, VoiceInfo
from server.engines.f5.checkpoints import ModelSpec
from server.engines.f5.device import F5Device, Row
from server.engines.f5.metrics import device_events
from server.engines.f5.options import F5Options, Sampling
from server.engines.f5.policy import (
    HOP,
    SAMPLE_RATE,
    CrossFader,
    duration_frames,
    nbytes,
    split_pieces,
)
from server.engines.f5.registry import ModelRegistry, read_registry
from server.engines.f5.remote import EventHook, GenerationHost, HostLost
from server.engines.f5.voices import (
    F5Voice,
    VoiceError,
    builtin_voices,
    prepare_reference,
    scan_voices_dir,
)
from server.text import Part, Verbalized, verbalize

log = structlog.get_logger("voxwire.f5")


class PreparedVoices(Protocol):
    """Where uploaded voices come ready (the node's voice cache, server/state/voices.py)."""

    def get(self, voice_id: str) -> PreparedVoice | None: ...

    def values(self) -> list[PreparedVoice]: ...


@dataclass(slots=True, frozen=True)
class PreparedVoice:
    """An uploaded voice ready to speak: the prepared reference and its mel (frames,
    mels) on the engine's device, computed once (None: it lives in the generation host)."""

    voice: F5Voice
    mel: Any


@dataclass(slots=True)
class GenRequest:
    """One piece of one session's text, a row of a batch (whose rows share ``sampling``)."""

    voice: str
    text: str
    speed: float
    sampling: Sampling | None = None  # None: the settings'


class F5Engine:
    name = "f5"
    sample_rate = SAMPLE_RATE

    def __init__(self, opts: F5Options) -> None:
        self.opts = opts
        self.policy = opts.policy
        specs = model_specs(opts)
        # engine_isolation=thread: the model in this process; process: in the
        # generation host (remote.py), started by load().
        self._dev: F5Device | None = None
        self._host: GenerationHost | None = None
        self._specs = specs
        if opts.host.isolation == "process":
            self.registry: ModelRegistry[Any] = ModelRegistry(
                specs, _not_here, _not_here, opts.max_resident
            )
        else:
            self._dev = F5Device(opts, specs)
            self.registry = self._dev.registry
        self._voices: dict[str, F5Voice] = {}
        self._mels: dict[str, Any] = {}  # voice id -> reference mel (frames, 100) on the device
        # Uploaded voices (issue 4), installed by the app: a bounded LRU that the voices
        # registry fills from the shared store and that delete notices evict.
        self.uploaded: PreparedVoices | None = None
        self._default_voice = ""
        self._loaded = False
        self._lock = threading.Lock()  # load() vs a concurrent first generate()
        # Restarts of the generation host, for the metrics (the app installs it).
        self.events: EventHook = lambda _k, _e, _r: None

    @property
    def device(self) -> str:
        if self._host is not None:
            return self._host.device
        return self._dev.device if self._dev is not None else "cpu"

    @property
    def device_name(self) -> str:
        if self._host is not None:
            return self._host.device_name
        return self._dev.device_name if self._dev is not None else "cpu"

    @property
    def host_pid(self) -> int:
        """The generation host's process id (0: none is up, or F5 runs in this process)."""
        return self._host.pid if self._host is not None else 0

    # ------------------------------------------------------------------ loading

    def load(self) -> None:
        with self._lock:
            if self._loaded:
                return
            if self._dev is not None:
                self._dev.setup()
            self._prepare_voices()  # a bad voice is a configuration error: start-up fails
            self._loaded = True
            if self._dev is None:
                self._start_host()
                return
            try:
                # The default model now (the app warms it up); others when first used.
                self._dev.preload(self.model_key(self._default_voice))
                device_events(self.events, *self._dev.stats())
            except Exception as exc:
                # A missing or broken checkpoint must not keep the server down: generations
                # retry the load, fail, and the worker's breaker sends sessions elsewhere.
                log.error("f5_model_load_failed", error=f"{type(exc).__name__}: {exc}")

    def _start_host(self) -> None:
        key = self.model_key(self._default_voice)
        self._host = GenerationHost(self.opts, self._specs, key, lambda *a: self.events(*a))
        self._host.start()
        # The host logs a model that does not load; one that does not start at all must
        # not keep the server down either: its supervisor goes on trying.
        if not self._host.wait_ready(self.opts.host.start_timeout_s + 5):
            why = self._host.start_error or "no answer within engine_start_timeout_s"
            log.error("f5_host_not_ready", error=why)

    def close(self) -> None:
        """Stop the generation host (with engine_isolation=process)."""
        if self._host is not None:
            self._host.close()

    def release_memory(self) -> None:
        """Return the CUDA caching allocator's free blocks (after an out-of-memory; the
        generation host does that itself)."""
        if self._dev is not None:
            self._dev.release_memory()

    def _prepare_voices(self) -> None:
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
        for v in voices:
            if v.id in self._voices:
                raise VoiceError(f"two F5 voices are named {v.id!r}")
            if self._dev is not None:  # (the generation host computes its own)
                self._mels[v.id] = self._dev.mel(v.audio)
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
            clones=True,  # no word timings: F5 has no alignment (docs/protocol.md)
            options={
                "cfg_strength": self.opts.cfg_strength,
                "nfe_steps": self.opts.nfe_steps,
                "seed": self.opts.seed if self.opts.seed >= 0 else None,  # None: random
                "cross_fade_s": self.policy.crossfade_s,
            },
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
        preparation, then its mel on the device (in the generation host: when a batch
        first uses it). Blocks (run it on a thread); raises VoiceError when the reference
        cannot be used, EngineError before ``load``."""
        if not self._loaded:
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
        return PreparedVoice(voice, self._dev.mel(ref) if self._dev is not None else None)

    def _prepared(self, voice: str) -> tuple[F5Voice, Any]:
        v = self._voices.get(voice)
        if v is not None:
            return v, self._mels.get(voice)  # (none here with the generation host)
        p = self.uploaded.get(voice) if self.uploaded is not None else None
        if p is None:
            raise EngineError("unknown_voice", f"f5 has no voice {voice!r}")
        return p.voice, p.mel

    def synthesize(
        self, text: str, voice: str, speed: float, options: EngineOptions | None = None
    ) -> Iterator[Audio]:
        """Unbatched: the pieces of ``text`` one after another, cross-faded."""
        key = self.model_key(voice)
        fader = CrossFader(self.opts.stream_policy(options))
        how = self.opts.sampling(options)
        for piece in self.speech(text, voice, speed, first=True):
            out = fader.push(self.generate(key, [GenRequest(voice, piece.text, speed, how)])[0])
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
        """How ``text`` splits into generations: consecutive spans of ``text`` (what each
        piece says, written as the client wrote it; ``speech`` has what F5 is given)."""
        return [p.source for p in self.speech(text, voice, speed, first)]

    def say(self, text: str, voice: str) -> Verbalized:
        """What F5 is given for ``text``: numbers, currency, dates, times, units and
        abbreviations written out in the voice's language (server/text/; F5 reads digits
        and symbols as written), with the map back to ``text``; ``text`` itself with
        ``text_normalization`` off."""
        if not self.opts.text_normalization:
            return Verbalized.same(text)
        return verbalize(text, self.voice(voice).language)

    def speech(self, text: str, voice: str, speed: float, first: bool) -> list[Part]:
        """The pieces F5 generates for ``text``, cut by the length of what it says: each
        piece's spoken text, and the span of ``text`` it says."""
        v = self.voice(voice)
        said = self.say(text, voice)
        pieces = split_pieces(said.text, v.bytes_per_s, speed, first, v.seconds, self.policy)
        return said.split(pieces) or [Part(p, p) for p in pieces]

    def durations(self, reqs: list[GenRequest]) -> list[int]:
        """Total frames (reference + output) of each request, by F5's duration rule."""
        out = []
        for r in reqs:
            v, mel = self._prepared(r.voice)
            out.append(self._frames(v, mel, r))
        return out

    def _frames(self, v: F5Voice, mel: Any, r: GenRequest) -> int:
        # Without the mel here (it is in the generation host), its length: the mel's
        # STFT is centred, so it has a frame per hop plus one.
        ref_frames = int(mel.shape[0]) if mel is not None else len(v.audio) // HOP + 1
        return duration_frames(ref_frames, v.text_bytes, nbytes(r.text), r.speed, self.policy)

    def generate(self, key: str, reqs: list[GenRequest]) -> list[Audio]:
        """One padded batch through the model of ``key``: a waveform per request, its
        trailing silence trimmed. Blocks; runs on the device thread. Raises on failure
        (HostLost when the generation host died or hung: the whole batch failed)."""
        # One look-up per request: an uploaded voice evicted meanwhile stays usable here.
        prepared = [self._prepared(r.voice) for r in reqs]
        how = reqs[0].sampling if reqs else None  # the worker batches equal ones only
        if self._host is not None:
            frames = sum(self._frames(v, m, r) for (v, m), r in zip(prepared, reqs, strict=True))
            rows = [(v, r.text, r.speed) for (v, _), r in zip(prepared, reqs, strict=True)]
            return self._host.generate(key, rows, frames * HOP / SAMPLE_RATE, how)
        if self._dev is None:
            raise EngineError("not_ready", "the f5 engine is not loaded yet")
        out = self._dev.generate(
            key,
            [Row(v, m, r.text, r.speed) for (v, m), r in zip(prepared, reqs, strict=True)],
            how,
        )
        device_events(self.events, *self._dev.stats())  # (the generation host sends its own)
        return out

    def generate_each(self, key: str, reqs: list[GenRequest]) -> list[Audio | Exception]:
        """``generate``, with a failed batch retried item by item, so one bad item (or
        a batch too big for memory) fails alone. Never raises."""
        try:
            return list(self.generate(key, reqs))
        except HostLost as exc:
            # The host died or hung: the same items again would mostly restart it again.
            return [exc] * len(reqs)
        except Exception as exc:
            if _out_of_memory(exc):
                self.release_memory()  # give the cached blocks back before retrying
            if len(reqs) == 1:
                return [exc]
            log.warning("f5_batch_failed", model=key, size=len(reqs), error=repr(exc))
        out: list[Audio | Exception] = []
        for r in reqs:
            try:
                out.append(self.generate(key, [r])[0])
            except Exception as exc:
                out.append(exc)
        return out


def model_specs(opts: F5Options) -> list[ModelSpec]:
    """The default model, then those of the registry file."""
    default = ModelSpec(
        key="default",
        checkpoint=opts.checkpoint,
        config=opts.config,
        vocab=opts.vocab,
        languages=opts.languages,
    )
    extra = read_registry(Path(opts.registry).expanduser()) if opts.registry else []
    return [default, *extra]


def _not_here(_arg: Any) -> Any:
    raise RuntimeError("the F5 models live in the generation host, not in this process")


def failure_code(exc: Exception) -> str:
    """The error code a session is told for a failed piece."""
    if isinstance(exc, HostLost):  # engine_crashed, engine_timeout, engine_unavailable
        return exc.code
    if isinstance(exc, EngineError) and exc.code == "engine_out_of_memory":  # from the host
        return exc.code
    return "engine_out_of_memory" if "OutOfMemory" in type(exc).__name__ else "engine_error"


def _out_of_memory(exc: Exception) -> bool:
    return failure_code(exc) == "engine_out_of_memory"
