"""The I/O-free half of `voxwire voices fetch`: reading voices.json, finding the voice
a name means, planning its files, checking digests and configs."""

from __future__ import annotations

import json

import msgspec
import pytest

from server.voices.piper_catalog import (
    FetchError,
    PlannedFile,
    config_problem,
    listing,
    mismatch,
    parse_catalog,
    plan,
    resolve,
    suggestions,
)


def _voice(code: str, name: str, quality: str, **extra: object) -> dict[str, object]:
    folder = f"{code[:2]}/{code}/{name}/{quality}"
    key = f"{code}-{name}-{quality}"
    return {
        "key": key,
        "name": name,
        "language": {
            "code": code,
            "family": code[:2],
            "region": code[3:],
            "name_native": "Deutsch",
            "name_english": "German",
            "country_english": "Germany",
        },
        "quality": quality,
        "num_speakers": 1,
        "speaker_id_map": {},
        "files": {
            f"{folder}/{key}.onnx": {"size_bytes": 63_000_000, "md5_digest": "AB" * 16},
            f"{folder}/{key}.onnx.json": {"size_bytes": 5000, "md5_digest": "cd" * 16},
            f"{folder}/MODEL_CARD": {"size_bytes": 300, "md5_digest": "ef" * 16},
        },
        "aliases": [],
        "unknown_future_field": True,
        **extra,
    }


CATALOG = parse_catalog(
    json.dumps(
        {
            "de_DE-thorsten-medium": _voice(
                "de_DE", "thorsten", "medium", aliases=["de-thorsten-low"]
            ),
            "de_DE-thorsten-high": _voice("de_DE", "thorsten", "high"),
            "fr_FR-siwis-low": _voice("fr_FR", "siwis", "low"),
        }
    ).encode(),
    "voices.json",
)


def test_a_name_resolves_to_its_key_by_key_alias_or_case() -> None:
    assert resolve(CATALOG, "de_DE-thorsten-high") == "de_DE-thorsten-high"
    assert resolve(CATALOG, "de-thorsten-low") == "de_DE-thorsten-medium"
    assert resolve(CATALOG, "DE_de-Thorsten-High") == "de_DE-thorsten-high"


def test_an_unknown_name_gets_suggestions() -> None:
    assert suggestions(CATALOG, "thorsten") == ["de_DE-thorsten-high", "de_DE-thorsten-medium"]
    assert suggestions(CATALOG, "fr_FR-siwis-medium") == ["fr_FR-siwis-low"]
    with pytest.raises(FetchError) as exc:
        resolve(CATALOG, "de_DE-thorstn-medium")
    assert str(exc.value) == (
        "unknown voice 'de_DE-thorstn-medium'; did you mean de_DE-thorsten-medium, "
        "de_DE-thorsten-high? (`voxwire voices list` shows every voice)"
    )
    with pytest.raises(FetchError, match=r"^unknown voice 'zz' \(`voxwire"):
        resolve(CATALOG, "zz")


def test_a_plan_has_the_config_then_the_model_under_flat_names() -> None:
    key = "de_DE-thorsten-medium"
    folder = "de/de_DE/thorsten/medium"
    assert plan(key, CATALOG[key]) == [
        PlannedFile(f"{folder}/{key}.onnx.json", f"{key}.onnx.json", 5000, "cd" * 16),
        PlannedFile(f"{folder}/{key}.onnx", f"{key}.onnx", 63_000_000, "ab" * 16),
    ]


def test_a_key_that_is_not_a_file_name_or_lacks_a_model_is_refused() -> None:
    entry = CATALOG["fr_FR-siwis-low"]
    for bad in ("../../etc/x", "a/b", ".hidden", "x..y", ""):
        with pytest.raises(FetchError, match="cannot be a file name"):
            plan(bad, entry)
    no_model = msgspec.structs.replace(
        entry, files={k: v for k, v in entry.files.items() if not k.endswith(".onnx")}
    )
    with pytest.raises(FetchError, match=r"lists 0 \.onnx files for fr_FR-siwis-low, not one"):
        plan("fr_FR-siwis-low", no_model)


def test_mismatch_names_the_file_and_both_digests() -> None:
    f = PlannedFile("a/x.onnx", "x.onnx", 10, "ab" * 16)
    assert mismatch(f, 10, "AB" * 16) is None
    assert (
        mismatch(f, 10, "00" * 16)
        == f"x.onnx: md5 {'00' * 16} does not match voices.json's {'ab' * 16}"
    )
    assert mismatch(f, 9, "00" * 16) == (
        f"x.onnx has 9 bytes, voices.json lists 10 (md5 {'00' * 16}, expected {'ab' * 16})"
    )


def test_bad_voices_json_and_configs_are_named() -> None:
    with pytest.raises(FetchError, match=r"^http://x/voices\.json is not a Piper voices\.json"):
        parse_catalog(b'{"a": {"name": 1}}', "http://x/voices.json")
    assert config_problem(b'{"audio": {"sample_rate": 22050}, "espeak": {}}') is None
    assert config_problem(b'{"audio": {"sample_rate": 0}}') == "audio.sample_rate must be positive"
    problem = config_problem(b"<html>")
    assert problem is not None and problem.startswith("not a Piper voice config")


def test_listing_filters_by_language_or_locale() -> None:
    rows = listing(CATALOG, "de-de")
    assert rows[0].split() == ["VOICE", "LANGUAGE", "QUALITY", "SPEAKERS", "MB"]
    assert [r.split()[0] for r in rows[1:]] == ["de_DE-thorsten-high", "de_DE-thorsten-medium"]
    assert rows[1].split()[1:] == ["de_DE", "German", "(Germany)", "high", "1", "63"]
    assert len(listing(CATALOG, "fr")) == 2 and len(listing(CATALOG)) == 4
