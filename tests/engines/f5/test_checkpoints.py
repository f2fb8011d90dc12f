"""Finding and loading F5 checkpoints: v1 vs v0 architectures, vocab, offline hub
misses, and the lazily loaded, bounded language registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.engines.f5.checkpoints import (
    MissingFile,
    ModelSpec,
    arch_config,
    load_cfm,
    resolve,
    vocab_path,
)
from server.engines.f5.random_model import TINY_ARCH, write_checkpoint
from server.engines.f5.registry import ModelRegistry, read_registry
from tests.engines.f5.conftest import F5Files


def test_shipped_configs_give_the_v1_and_v0_architectures() -> None:
    v1 = arch_config("F5TTS_v1_Base")
    assert (v1["dim"], v1["depth"], v1["heads"], v1["text_dim"], v1["conv_layers"]) == (
        1024,
        22,
        16,
        512,
        4,
    )
    assert v1["text_mask_padding"] is True and v1["pe_attn_head"] is None
    v0 = arch_config("F5TTS_Base")
    assert v0["text_mask_padding"] is False and v0["pe_attn_head"] == 1
    small = arch_config("F5TTS_Small")
    assert (small["dim"], small["depth"], small["heads"]) == (768, 18, 12)
    with pytest.raises(MissingFile, match=r"no F5 model config named 'F5TTS_v9'.*F5TTS_v1_Base"):
        arch_config("F5TTS_v9")


def test_a_v0_checkpoint_loads_with_its_own_config_and_vocab(tmp_path: Path) -> None:
    import torch

    arch = dict(TINY_ARCH, text_mask_padding=False, pe_attn_head=1)
    vocab = [" ", *"abcdefghijklmnopqrstuvwxyz.,"]
    ckpt = write_checkpoint(tmp_path / "v0", arch=arch, vocab=vocab, name="model_last.safetensors")
    spec = ModelSpec(key="fr", checkpoint=str(ckpt), config=str(tmp_path / "v0" / "model.yaml"))
    assert vocab_path(spec, ckpt, offline=True) == tmp_path / "v0" / "vocab.txt"
    model = load_cfm(spec, device="cpu", dtype=torch.float32, offline=True, batch_mask=True)
    dit = model.transformer
    assert dit.text_embed.mask_padding is False
    assert dit.transformer_blocks[0].attn.processor.pe_attn_head == 1
    assert dit.transformer_blocks[0].attn.processor.attn_mask_enabled is True
    assert dit.text_embed.text_embed.num_embeddings == len(vocab) + 1  # its own vocab
    assert model.vocab_char_map["a"] == 1
    # The weights are the file's, not a fresh model's (whose output layer is zero).
    assert float(dit.proj_out.weight.abs().sum()) > 0


def test_missing_files_are_named_with_the_setting(tmp_path: Path) -> None:
    with pytest.raises(MissingFile, match=r"F5 checkpoint not found: .*nope\.pt \(setting x\)"):
        resolve(str(tmp_path / "nope.pt"), offline=False, what="F5 checkpoint", setting="x")
    spec = ModelSpec(key="default", checkpoint=str(tmp_path / "gone.safetensors"))
    with pytest.raises(MissingFile, match="setting f5_checkpoint"):
        load_cfm(spec, device="cpu", dtype=None, offline=True, batch_mask=False)


def test_offline_never_downloads_and_says_what_to_fetch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    # An empty hub cache: the file is not there, and offline forbids fetching it.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    ref = "hf://SWivid/F5-TTS/F5TTS_v1_Base/model_1250000.safetensors"
    with pytest.raises(MissingFile) as err:
        resolve(ref, offline=True, what="F5 checkpoint", setting="f5_checkpoint")
    msg = str(err.value)
    assert "not in the local hub cache and f5_offline is set" in msg
    assert "huggingface-cli download SWivid/F5-TTS F5TTS_v1_Base/model_1250000.safetensors" in msg
    # A file already in the cache is used offline.
    snap = tmp_path / "hub" / "models--SWivid--F5-TTS" / "snapshots" / "abc"
    (snap / "F5TTS_v1_Base").mkdir(parents=True)
    (snap / "F5TTS_v1_Base" / "vocab.txt").write_text(" \na\n")
    refs = tmp_path / "hub" / "models--SWivid--F5-TTS" / "refs"
    refs.mkdir()
    (refs / "main").write_text("abc")
    got = resolve(
        "hf://SWivid/F5-TTS/F5TTS_v1_Base/vocab.txt", offline=True, what="vocab", setting="v"
    )
    assert got.read_text() == " \na\n"


def test_registry_file_entries_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        '[[model]]\nkey = "fr"\ncheckpoint = "hf://o/r/model.pt"\nvocab = "hf://o/r/vocab.txt"\n'
        'config = "F5TTS_Base"\nlanguages = ["fr"]\n'
    )
    (spec,) = read_registry(path)
    assert (spec.key, spec.config, spec.languages) == ("fr", "F5TTS_Base", ("fr",))
    path.write_text('[[model]]\nkey = "fr"\ncheckpoint = "x"\nlanguage = ["fr"]\n')
    with pytest.raises(ValueError, match="language"):
        read_registry(path)
    path.write_text('[[model]]\nkey = "fr"\ncheckpoint = "x"\n')
    with pytest.raises(ValueError, match="names no languages"):
        read_registry(path)
    with pytest.raises(FileNotFoundError, match="f5_registry"):
        read_registry(tmp_path / "absent.toml")


def test_models_load_lazily_and_at_most_max_resident_stay() -> None:
    loaded: list[str] = []
    unloaded: list[str] = []
    specs = [
        ModelSpec(key="default", checkpoint="a", languages=("en", "zh")),
        ModelSpec(key="fr", checkpoint="b", languages=("fr",)),
        ModelSpec(key="de", checkpoint="c", languages=("de",)),
    ]

    def load(spec: ModelSpec) -> str:
        if spec.key == "de" and len(loaded) < 4:
            raise OSError("disk on fire")
        loaded.append(spec.key)
        return f"model-{spec.key}"

    reg: ModelRegistry[str] = ModelRegistry(specs, load, unloaded.append, max_resident=2)
    assert reg.languages == ["de", "en", "fr", "zh"]
    assert reg.key_for("fr-CA") == "fr" and reg.key_for("ja") is None
    assert loaded == []  # nothing until asked
    assert reg.get("default") == "model-default"
    assert reg.get("fr") == "model-fr"
    assert reg.get("default") == "model-default"  # resident: not loaded again
    assert loaded == ["default", "fr"]
    with pytest.raises(OSError, match="disk on fire"):
        reg.get("de")  # the least recently used (fr) made room; the load failed
    assert unloaded == ["model-fr"]
    assert reg.resident() == ["default"]
    reg.get("fr")
    reg.get("default")
    loaded.append("x")  # the failure above is not cached: the next call loads again
    assert reg.get("de") == "model-de"
    assert reg.resident() == ["default", "de"]


def test_tiny_fixture_checkpoint_layout(f5_files: F5Files) -> None:
    ckpt = f5_files.checkpoint
    assert ckpt.suffix == ".safetensors" and (ckpt.parent / "vocab.txt").exists()
    from safetensors import safe_open

    with safe_open(str(ckpt), "pt") as f:
        keys = list(f.keys())
    assert all(k.startswith("ema_model.") for k in keys)
    assert any(k.endswith("transformer.proj_out.weight") for k in keys)
    assert {p.name for p in f5_files.vocos.iterdir()} == {"config.yaml", "pytorch_model.bin"}
