"""Random-weight F5 checkpoints and Vocos vocoders, built with the packages' own classes.

For tests and benchmarks where no real checkpoint can be had (CI has no hub access):
the files have the layout of real ones (safetensors with EMA keys + vocab.txt + an
f5-tts style config YAML; Vocos config.yaml + pytorch_model.bin), so the server loads
them through exactly the code path a real checkpoint takes. The work per generation
does not depend on the weights' values, so a random full-size model gives true timings.

``DiT.initialize_weights`` zeroes the AdaLN modulation and the output projection: a
fresh model predicts zero flow (it would return its input noise) and its attention
would have no effect (zero gates). Those layers are re-initialised here.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import yaml

from server.engines.f5.checkpoints import MEL, arch_config, default_vocab

TINY_ARCH: dict[str, Any] = {
    "dim": 64,
    "depth": 2,
    "heads": 2,
    "dim_head": 32,
    "ff_mult": 2,
    "text_dim": 32,
    "text_mask_padding": True,
    "conv_layers": 4,
    "pe_attn_head": None,
    "attn_backend": "torch",
    "attn_mask_enabled": False,
}
TINY_VOCOS = {"dim": 64, "intermediate_dim": 192, "num_layers": 2}
FULL_VOCOS = {"dim": 512, "intermediate_dim": 1536, "num_layers": 8}  # charactr/vocos-mel-24khz


def ascii_vocab() -> list[str]:
    """A small character vocab (space first: index 0 is also F5's unknown token)."""
    return [" ", *(c for c in string.printable if not c.isspace())]


def write_checkpoint(
    out: Path,
    arch: dict[str, Any] | str = "tiny",
    vocab: list[str] | None = None,
    seed: int = 0,
    name: str = "model.safetensors",
) -> Path:
    """Write ``out/name`` + ``out/vocab.txt`` + ``out/model.yaml``; returns the checkpoint.

    ``arch`` is a DiT argument dict, ``"tiny"``, or the name of a config shipped with
    f5-tts (``"F5TTS_v1_Base"``: the full-size architecture). ``vocab`` defaults to a
    small ASCII vocab for ``"tiny"`` and to the base models' vocab otherwise.
    """
    import torch
    from f5_tts.model import CFM, DiT
    from f5_tts.model.utils import get_tokenizer
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    if arch == "tiny":
        arch_args = dict(TINY_ARCH)
        chars = vocab or ascii_vocab()
    elif isinstance(arch, str):
        arch_args = arch_config(arch)
        chars = vocab or default_vocab().read_text(encoding="utf-8").split("\n")[:-1]
    else:
        arch_args = dict(arch)
        chars = vocab or ascii_vocab()
    vocab_file = out / "vocab.txt"
    vocab_file.write_text("".join(c + "\n" for c in chars), encoding="utf-8")
    vocab_map, vocab_size = get_tokenizer(str(vocab_file), "custom")
    torch.manual_seed(seed)
    dit = DiT(**arch_args, text_num_embeds=vocab_size, mel_dim=MEL["n_mel_channels"])
    with torch.no_grad():
        for block in dit.transformer_blocks:
            torch.nn.init.normal_(block.attn_norm.linear.weight, std=0.05)
        torch.nn.init.normal_(dit.norm_out.linear.weight, std=0.05)
        # Output scale ~1 per unit of flow whatever the width (inputs are layer-normed).
        torch.nn.init.normal_(dit.proj_out.weight, std=0.8 / float(arch_args["dim"]) ** 0.5)
    model = CFM(transformer=dit, mel_spec_kwargs=dict(MEL), vocab_char_map=vocab_map)
    # Real checkpoints hold the EMA copy under "ema_model."; f5-tts strips the prefix.
    state = {f"ema_model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    ckpt = out / name
    save_file(state, str(ckpt))
    config = {
        "model": {
            "name": out.name,
            "backbone": "DiT",
            "arch": arch_args,
            "mel_spec": dict(MEL),
        }
    }
    (out / "model.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return ckpt


def write_vocos(out: Path, size: dict[str, int] | None = None, seed: int = 0) -> Path:
    """A random Vocos in the hub layout (config.yaml + pytorch_model.bin); returns ``out``."""
    import torch
    from vocos import Vocos
    from vocos.feature_extractors import MelSpectrogramFeatures
    from vocos.heads import ISTFTHead
    from vocos.models import VocosBackbone

    s = size or TINY_VOCOS
    out.mkdir(parents=True, exist_ok=True)
    rate, n_fft, hop, mels = 24000, 1024, 256, 100
    config = {
        "feature_extractor": {
            "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
            "init_args": {
                "sample_rate": rate,
                "n_fft": n_fft,
                "hop_length": hop,
                "n_mels": mels,
                "padding": "center",
            },
        },
        "backbone": {
            "class_path": "vocos.models.VocosBackbone",
            "init_args": {
                "input_channels": mels,
                "dim": s["dim"],
                "intermediate_dim": s["intermediate_dim"],
                "num_layers": s["num_layers"],
            },
        },
        "head": {
            "class_path": "vocos.heads.ISTFTHead",
            "init_args": {"dim": s["dim"], "n_fft": n_fft, "hop_length": hop, "padding": "center"},
        },
    }
    torch.manual_seed(seed)
    vocos = Vocos(
        MelSpectrogramFeatures(rate, n_fft, hop, mels, "center"),
        VocosBackbone(mels, s["dim"], s["intermediate_dim"], s["num_layers"]),
        ISTFTHead(s["dim"], n_fft, hop, "center"),
    )
    with torch.no_grad():
        # Keep the random magnitudes speech-like in level instead of saturating.
        vocos.head.out.weight.mul_(0.05)
        vocos.head.out.bias.fill_(4.0)
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    torch.save(vocos.state_dict(), out / "pytorch_model.bin")
    return out
