"""Finding and loading F5 checkpoints and the Vocos vocoder, locally or from the hub.

A file reference is a local path or ``hf://owner/repo/path/in/repo``. With
``offline`` nothing touches the network: hub files must already be in the local hub
cache, and a missing one raises MissingFile naming the file, the setting and how to
get it. Downloads show huggingface_hub's progress bar on stderr and log a line before
and after.

The architecture comes from a config in f5-tts's own format: the name of one shipped
with the package (``F5TTS_v1_Base``; ``F5TTS_Base`` / ``F5TTS_Small`` for the v0
models most community fine-tunes use) or a path to such a YAML file. The model is
built with the package's classes (``CFM`` around ``DiT``) and its checkpoint is read
by the package's own ``load_checkpoint`` (safetensors or .pt, EMA weights).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

if TYPE_CHECKING:
    import torch

log = structlog.get_logger("voxwire.f5")

HUB = "hf://"
DEFAULT_CHECKPOINT = "hf://SWivid/F5-TTS/F5TTS_v1_Base/model_1250000.safetensors"
DEFAULT_VOCOS = "hf://charactr/vocos-mel-24khz"
MEL = {
    "target_sample_rate": 24000,
    "n_mel_channels": 100,
    "hop_length": 256,
    "win_length": 1024,
    "n_fft": 1024,
    "mel_spec_type": "vocos",
}


class MissingFile(FileNotFoundError):
    """A checkpoint, vocab, config or vocoder file that is not there; says which and why."""


class ModelSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One F5 checkpoint and the languages it speaks (an entry of the registry)."""

    key: str
    checkpoint: str
    config: str = "F5TTS_v1_Base"
    vocab: str = ""  # empty: vocab.txt beside a local checkpoint, else the package's base vocab
    languages: tuple[str, ...] = ()


def _split_hub(ref: str) -> tuple[str, str]:
    parts = ref[len(HUB) :].split("/")
    if len(parts) < 3 or not all(parts):
        raise ValueError(f"hub reference {ref!r} must look like hf://owner/repo/path/to/file")
    return "/".join(parts[:2]), "/".join(parts[2:])


def resolve(ref: str, *, offline: bool, what: str, setting: str) -> Path:
    """The local path of ``ref``, downloading it from the hub when allowed."""
    if not ref.startswith(HUB):
        path = Path(ref).expanduser()
        if not path.exists():
            raise MissingFile(f"{what} not found: {path} (setting {setting})")
        return path
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo, filename = _split_hub(ref)
    try:
        return Path(hf_hub_download(repo, filename, local_files_only=True))
    except LocalEntryNotFoundError:
        if offline:
            raise MissingFile(
                f"{what} {ref} is not in the local hub cache and f5_offline is set, so it "
                f"was not downloaded (setting {setting}); fetch it once with "
                f"`huggingface-cli download {repo} {filename}` or point {setting} at a local "
                "file"
            ) from None
    t0 = time.perf_counter()
    log.info("f5_download_start", what=what, repo=repo, file=filename)
    try:
        path = Path(hf_hub_download(repo, filename))  # tqdm progress bar on stderr
    except Exception as exc:  # the hub client raises many types: say what failed
        raise MissingFile(
            f"{what} {ref} could not be downloaded (setting {setting}): {exc}"
        ) from exc
    log.info(
        "f5_download_done",
        what=what,
        file=str(path),
        mb=round(path.stat().st_size / 1e6, 1),
        seconds=round(time.perf_counter() - t0, 1),
    )
    return path


def arch_config(config: str) -> dict[str, Any]:
    """The DiT arguments of a config shipped with f5-tts (by name) or a YAML path."""
    from importlib.resources import files

    import yaml

    if config.endswith((".yaml", ".yml")) or "/" in config:
        path = Path(config).expanduser()
        if not path.exists():
            raise MissingFile(f"F5 model config not found: {path} (setting f5_model_config)")
    else:
        path = Path(str(files("f5_tts").joinpath(f"configs/{config}.yaml")))
        if not path.exists():
            shipped = sorted(p.stem for p in path.parent.glob("F5TTS*.yaml"))
            raise MissingFile(
                f"no F5 model config named {config!r}; shipped: {', '.join(shipped)}, "
                "or give a path to a YAML file in the same format"
            )
    data = yaml.safe_load(path.read_text())
    model = data.get("model", {}) if isinstance(data, dict) else {}
    if model.get("backbone", "DiT") != "DiT" or not isinstance(model.get("arch"), dict):
        raise ValueError(
            f"{path}: voxwire serves F5-TTS DiT models (model.backbone DiT, model.arch)"
        )
    mel = model.get("mel_spec", {})
    for k, v in MEL.items():
        if k in mel and mel[k] != v:
            raise ValueError(f"{path}: model.mel_spec.{k} is {mel[k]!r}; voxwire supports {v!r}")
    return dict(model["arch"])


def default_vocab() -> Path:
    """The vocab of the base models, shipped with f5-tts."""
    from importlib.resources import files

    return Path(str(files("f5_tts").joinpath("infer/examples/vocab.txt")))


def vocab_path(spec: ModelSpec, checkpoint: Path, offline: bool) -> Path:
    if spec.vocab:
        return resolve(spec.vocab, offline=offline, what="F5 vocab", setting=f"vocab of {spec.key}")
    beside = checkpoint.parent / "vocab.txt"
    if not spec.checkpoint.startswith(HUB) and beside.exists():
        return beside
    return default_vocab()


def load_cfm(
    spec: ModelSpec,
    *,
    device: str,
    dtype: torch.dtype,
    offline: bool,
    batch_mask: bool,
) -> torch.nn.Module:
    """Build the model from its config and read its checkpoint, as f5-tts does."""
    from f5_tts.infer.utils_infer import load_checkpoint
    from f5_tts.model import CFM, DiT
    from f5_tts.model.utils import get_tokenizer

    setting = "f5_checkpoint" if spec.key == "default" else f"checkpoint of {spec.key}"
    ckpt = resolve(spec.checkpoint, offline=offline, what="F5 checkpoint", setting=setting)
    vocab = vocab_path(spec, ckpt, offline)
    arch = arch_config(spec.config)
    # Masking keeps padded frames of a batch out of every item's attention, so a
    # batched item comes out as it would alone (the configs ship it off).
    arch["attn_mask_enabled"] = batch_mask
    vocab_char_map, vocab_size = get_tokenizer(str(vocab), "custom")
    with warnings.catch_warnings():
        # f5-tts warns that the mask costs memory with the torch attention backend.
        warnings.simplefilter("ignore", UserWarning)
        model = CFM(
            transformer=DiT(**arch, text_num_embeds=vocab_size, mel_dim=MEL["n_mel_channels"]),
            mel_spec_kwargs={k: v for k, v in MEL.items()},
            odeint_kwargs={"method": "euler"},
            vocab_char_map=vocab_char_map,
        )
    model = load_checkpoint(model.to(device), str(ckpt), device, dtype=dtype, use_ema=True)
    model.eval()
    log.info(
        "f5_model_loaded",
        key=spec.key,
        checkpoint=str(ckpt),
        vocab=str(vocab),
        config=spec.config,
        params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        dtype=str(dtype).removeprefix("torch."),
        device=device,
    )
    return model


def load_vocos(ref: str, *, device: str, offline: bool) -> torch.nn.Module:
    """Vocos from a local directory (config.yaml + pytorch_model.bin) or the hub, through
    f5-tts's ``load_vocoder``."""
    from f5_tts.infer.utils_infer import load_vocoder

    if ref.startswith(HUB):
        repo = ref[len(HUB) :].strip("/")
        config = resolve(
            f"{HUB}{repo}/config.yaml", offline=offline, what="Vocos config", setting="f5_vocos"
        )
        resolve(
            f"{HUB}{repo}/pytorch_model.bin",
            offline=offline,
            what="Vocos weights",
            setting="f5_vocos",
        )
        local = config.parent
    else:
        local = Path(ref).expanduser()
        for name in ("config.yaml", "pytorch_model.bin"):
            if not (local / name).exists():
                raise MissingFile(f"Vocos {name} not found in {local} (setting f5_vocos)")
    vocoder = load_vocoder("vocos", is_local=True, local_path=str(local), device=device)
    return vocoder
