"""Piper voices from a folder (server/engines/piper_voices.py) and the engine that
speaks them (server/engines/piper.py): listing, lazy loading with a bound, the
engine's one output rate, per-stream options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from server.engines.base import Audio, EngineError
from server.engines.piper import ENGINE_RATE, PiperEngine
from server.engines.piper_voices import DEFAULT_VOICE, PiperOptions, catalogue, describe, scan
from server.metrics import Metrics
from server.protocol import EngineOptions
from tests.engines.piper_voice_files import GERMAN, LOW, add_voice, voices_folder

TEXT = "Our meeting with the bank has moved to Thursday afternoon."


def test_the_bundled_voice_is_described_from_its_config() -> None:
    (v,) = catalogue(PiperOptions()).values()
    assert (v.id, v.language, v.locale, v.quality, v.sample_rate, v.speakers) == (
        DEFAULT_VOICE,
        "en",
        "en_US",
        "medium",
        22050,
        [],
    )


def test_scan_finds_flat_and_nested_voices_and_skips_broken_ones(tmp_path: Path) -> None:
    voices_folder(tmp_path)
    nested = tmp_path / "es" / "es_ES" / "x" / "medium"
    cfg = json.loads((tmp_path / f"{GERMAN}.onnx.json").read_text())
    add_voice(nested, "es_ES-x-medium", {**cfg, "language": {"code": "es_ES"}})
    (tmp_path / "lonely.onnx").write_bytes(b"no config beside it")
    add_voice(tmp_path, "broken", {"audio": {"quality": "medium"}})  # no sample_rate
    found = {v.id: v for v in scan(str(tmp_path))}
    assert sorted(found) == ["de_DE-test-medium", "en_GB-test-low", "es_ES-x-medium"]
    assert (found[GERMAN].language, found[GERMAN].locale) == ("de", "de_DE")
    assert (found[LOW].sample_rate, found[LOW].quality) == (16000, "low")
    assert found["es_ES-x-medium"].language == "es"


def test_a_folder_voice_cannot_replace_the_bundled_one(tmp_path: Path) -> None:
    cfg = json.loads((voices_folder(tmp_path) / f"{LOW}.onnx.json").read_text())
    add_voice(tmp_path, DEFAULT_VOICE, cfg)
    voices = catalogue(PiperOptions(voices_dir=str(tmp_path)))
    assert voices[DEFAULT_VOICE].sample_rate == 22050  # the bundled config, not the 16 kHz one


def test_a_missing_folder_and_a_bad_config_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a folder"):
        scan(str(tmp_path / "nowhere"))
    bad = tmp_path / "x.onnx.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match=r"x\.onnx\.json"):
        describe("x", tmp_path / "x.onnx", bad)


def test_speakers_of_a_multi_speaker_config_are_listed_in_id_order(tmp_path: Path) -> None:
    cfg = json.loads((voices_folder(tmp_path) / f"{GERMAN}.onnx.json").read_text())
    add_voice(
        tmp_path, "many", {**cfg, "num_speakers": 3, "speaker_id_map": {"b": 1, "a": 2, "c": 0}}
    )
    assert describe("many", tmp_path / "many.onnx", tmp_path / "many.onnx.json").speakers == [
        "c",
        "b",
        "a",
    ]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> PiperEngine:
    folder = voices_folder(tmp_path_factory.mktemp("voices"))
    e = PiperEngine(PiperOptions(voices_dir=str(folder), max_resident=2))
    e.load()
    return e


def _say(e: PiperEngine, voice: str, options: EngineOptions | None = None) -> Audio:
    return np.concatenate(list(e.synthesize(TEXT, voice, 1.0, options)))


def test_voices_load_on_first_use_and_at_most_max_resident_stay(engine: PiperEngine) -> None:
    assert engine.info().languages == ["de", "en"]
    _say(engine, DEFAULT_VOICE)
    _say(engine, GERMAN)
    assert engine.resident() == [DEFAULT_VOICE, GERMAN]
    _say(engine, LOW)  # a third: the one used longest ago goes
    assert engine.resident() == [GERMAN, LOW]
    _say(engine, GERMAN)
    _say(engine, DEFAULT_VOICE)
    assert engine.resident() == [GERMAN, DEFAULT_VOICE]
    with pytest.raises(EngineError, match="no voice 'nobody'"):
        _say(engine, "nobody")


def test_every_voice_leaves_at_the_engine_rate(engine: PiperEngine) -> None:
    """The 16 kHz voice's samples are resampled: the same model's audio for the same
    text, read as 16 kHz, lasts 22050/16000 as long at the engine's rate."""
    quiet = EngineOptions(noise_scale=0.0, noise_w=0.0)  # the same durations every time
    normal, low = _say(engine, DEFAULT_VOICE, quiet), _say(engine, LOW, quiet)
    assert engine.sample_rate == ENGINE_RATE
    assert len(low) / len(normal) == pytest.approx(ENGINE_RATE / 16000, rel=0.01)


def test_the_german_voice_speaks_with_other_phonemes(engine: PiperEngine) -> None:
    """The same model without noise repeats itself exactly (below); given German
    phonemes by its config, it says something else."""
    quiet = EngineOptions(noise_scale=0.0, noise_w=0.0)
    en, de = _say(engine, DEFAULT_VOICE, quiet), _say(engine, GERMAN, quiet)
    assert len(en) != len(de) or not np.allclose(en, de, atol=1e-3)
    assert np.array_equal(de, _say(engine, GERMAN, quiet))


def test_noise_options_reach_piper(engine: PiperEngine) -> None:
    """Piper samples noise on every call; with both scales at 0 the audio repeats
    exactly, which it never does with the voice's own (0.667, 0.8)."""
    quiet = EngineOptions(noise_scale=0.0, noise_w=0.0)
    assert np.array_equal(_say(engine, DEFAULT_VOICE, quiet), _say(engine, DEFAULT_VOICE, quiet))
    a, b = _say(engine, DEFAULT_VOICE), _say(engine, DEFAULT_VOICE)
    assert len(a) != len(b) or not np.array_equal(a, b)


def test_a_speaker_the_voice_lacks_is_named(engine: PiperEngine) -> None:
    with pytest.raises(EngineError, match="has no speaker 'zoe'"):
        _say(engine, DEFAULT_VOICE, EngineOptions(speaker="zoe"))


def test_the_engine_reports_the_voices_it_holds_to_the_metrics(tmp_path: Path) -> None:
    """With engine_isolation=thread no engine process reports them: the engine does, on
    each load (and the unload it brings), through the hook the app sets
    (``Metrics.engine_event``, as for ProcessEngine)."""
    e = PiperEngine(PiperOptions(voices_dir=str(voices_folder(tmp_path)), max_resident=2))
    metrics = Metrics()
    e.events = metrics.engine_event

    def gauge() -> float | None:
        return metrics.registry.get_sample_value(
            "voxwire_engine_resident_voices", {"engine": "piper"}
        )

    assert gauge() is None
    e.load()
    assert gauge() == 1
    list(e.synthesize("Hallo.", GERMAN, 1.0))
    assert gauge() == 2
    list(e.synthesize("Hello.", LOW, 1.0))  # a third: one goes, still two
    assert gauge() == 2 == len(e.resident())
