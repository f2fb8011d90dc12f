"""F5's options: what the engine, its device and its generation host are built from."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from server.engines.f5.policy import StreamPolicy
from server.protocol import EngineOptions

if TYPE_CHECKING:
    from server.config import Settings


class HostOptions(msgspec.Struct, frozen=True, kw_only=True):
    isolation: str = "thread"  # "process": the model runs in the generation host
    deadline_s: float = 20.0
    deadline_per_audio_s: float = 0.25
    start_timeout_s: float = 120.0
    backoff_max_s: float = 30.0
    log_level: str = "info"
    log_format: str = "json"


class Sampling(msgspec.Struct, frozen=True, array_like=True):
    """How a batch is sampled: one set per batch (its rows share the flow-matching
    loop), so the worker batches only pieces that ask for the same."""

    steps: int
    cfg_strength: float
    seed: int  # -1: random


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
    # Numbers, dates, units... written out before F5 reads the text (server/text/).
    text_normalization: bool = True
    policy: StreamPolicy = StreamPolicy()
    host: HostOptions = HostOptions()

    def sampling(self, o: EngineOptions | None = None) -> Sampling:
        """The settings' sampling, with what a stream's ``engine_options`` set."""
        steps = self.nfe_steps if o is None or o.nfe_steps is None else o.nfe_steps
        cfg = self.cfg_strength if o is None or o.cfg_strength is None else o.cfg_strength
        seed = self.seed if o is None or o.seed is None else o.seed
        return Sampling(steps, cfg, seed)

    def stream_policy(self, o: EngineOptions | None = None) -> StreamPolicy:
        """The planning and joining rules, with a stream's cross-fade."""
        if o is None or o.cross_fade_s is None:
            return self.policy
        return msgspec.structs.replace(self.policy, crossfade_s=o.cross_fade_s)

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
            text_normalization=s.text_normalization,
            host=HostOptions(
                isolation=s.engine_isolation,
                deadline_s=s.f5_deadline_s,
                deadline_per_audio_s=s.f5_deadline_per_audio_s,
                start_timeout_s=s.engine_start_timeout_s,
                backoff_max_s=s.engine_restart_backoff_max_s,
                log_level=s.log_level,
                log_format=s.log_format,
            ),
        )
