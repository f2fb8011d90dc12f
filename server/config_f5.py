"""F5-TTS settings (issue 3; they need the voxwire[f5] extra): a part of
``server.config.Settings``, kept apart so that module stays readable."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

_D = msgspec.Meta


class F5Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    f5_enabled: Annotated[
        bool, _D(description="Serve the F5-TTS voice-cloning engine `f5` (`voxwire[f5]` extra).")
    ] = False
    f5_checkpoint: Annotated[
        str,
        _D(
            description="F5 checkpoint of the default model: a local .safetensors/.pt "
            "file or `hf://owner/repo/file`."
        ),
    ] = "hf://SWivid/F5-TTS/F5TTS_v1_Base/model_1250000.safetensors"
    f5_model_config: Annotated[
        str,
        _D(
            description="Architecture of `f5_checkpoint`: a config shipped with f5-tts "
            "(`F5TTS_v1_Base`; `F5TTS_Base`/`F5TTS_Small` for v0 fine-tunes) or a YAML path."
        ),
    ] = "F5TTS_v1_Base"
    f5_vocab: Annotated[
        str,
        _D(
            description="vocab.txt of `f5_checkpoint` (path or `hf://`); empty: vocab.txt "
            "beside a local checkpoint, else the base models' vocab shipped with f5-tts."
        ),
    ] = ""
    f5_languages: Annotated[
        str, _D(description="Languages `f5_checkpoint` speaks (comma-separated).")
    ] = "en,zh"
    f5_registry: Annotated[
        str,
        _D(
            description="TOML file of more F5 models (language → checkpoint, config, vocab); "
            "see docs/f5.md."
        ),
    ] = ""
    f5_max_resident: Annotated[
        int, _D(ge=1, description="F5 models kept loaded at once (least recently used unloads).")
    ] = 2
    f5_vocos: Annotated[
        str,
        _D(
            description="Vocos vocoder: a directory with config.yaml + pytorch_model.bin, "
            "or `hf://owner/repo`."
        ),
    ] = "hf://charactr/vocos-mel-24khz"
    f5_offline: Annotated[
        bool,
        _D(
            description="Never touch the network for F5 files: use local paths and the hub "
            "cache only; a missing file is named in the error."
        ),
    ] = False
    f5_device: Annotated[
        str, _D(description="Torch device for F5 (`auto`: cuda when available, else cpu).")
    ] = "auto"
    f5_dtype: Annotated[
        Literal["auto", "float32", "float16", "bfloat16"],
        _D(description="F5 weights' type (`auto`: float16 on CUDA, float32 on CPU)."),
    ] = "auto"
    f5_cpu_threads: Annotated[
        int, _D(ge=0, description="Torch CPU threads when F5 runs on the CPU (0: torch's choice).")
    ] = 0
    f5_nfe_steps: Annotated[
        int, _D(ge=1, le=64, description="F5 ODE steps per generation (32 upstream default).")
    ] = 16
    f5_cfg_strength: Annotated[
        float, _D(ge=0, description="F5 classifier-free guidance strength.")
    ] = 2.0
    f5_seed: Annotated[
        int, _D(ge=-1, description="F5 noise seed (-1: random; fixed: reproducible output).")
    ] = -1
    f5_max_batch: Annotated[
        int,
        _D(
            ge=0,
            le=64,
            description="Most pieces from different sessions in one F5 forward pass (0: 8 "
            "on CUDA, 1 on the CPU, where batching measured slower).",
        ),
    ] = 0
    f5_batch_mask: Annotated[
        bool,
        _D(
            description="Mask padding in batched attention so a batched piece equals the "
            "same piece alone (costs memory on the torch attention backend)."
        ),
    ] = True
    f5_voices_dir: Annotated[
        str,
        _D(
            description="Directory of F5 voices: `<id>.wav` + `<id>.txt` transcript "
            "(`<lang>/<id>.wav` for other languages)."
        ),
    ] = ""
    f5_fallback_engine: Annotated[
        str, _D(description="Engine a session moves to when F5 fails or its breaker is open.")
    ] = "piper"
    f5_breaker_failures: Annotated[
        int, _D(ge=1, description="Consecutive failed F5 passes that open a model's breaker.")
    ] = 3
    f5_breaker_cooldown_s: Annotated[
        float, _D(gt=0, description="How long an open F5 breaker waits before one probe.")
    ] = 30.0
    f5_deadline_s: Annotated[
        float,
        _D(
            gt=0,
            description="With `engine_isolation=process`, time an F5 batch may take in the "
            "generation process: this much, plus `f5_deadline_per_audio_s` (or 4 times "
            "the measured time, if more) per second of audio in the batch; past it the "
            "process is killed and restarted, and the batch's sessions fail over.",
        ),
    ] = 20.0
    f5_deadline_per_audio_s: Annotated[
        float,
        _D(
            ge=0,
            description="F5 batch time allowed per second of audio (reference and "
            "generated, every item of the batch), at least.",
        ),
    ] = 0.25
