"""`voxwire voices fetch` against a real HTTP server (uvicorn, Starlette StaticFiles with
Range support) holding a fake Piper voice repository: the bundled voice's real files
under other languages' names, with a voices.json of their real digests
(tests/voices/piper_repo.py). Nothing here reaches the internet."""

from __future__ import annotations

import filecmp
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from loadtests.serverproc import free_port
from server.cli import main
from server.voices.piper_catalog import FetchError
from server.voices.piper_fetch import copy_offline, fetch
from server.voices.progress import Progress
from tests.examples.serving import serving
from tests.support import ROOT
from tests.voices.piper_repo import (
    BROKEN,
    CONFIG,
    LONG,
    LONG_LISTED,
    MISSING,
    MODEL,
    FakeRepo,
    build,
    md5,
    rel,
)

DE = "de_DE-test-medium"
FR = "fr_FR-test-low"
PART_AT = 20_000_000  # bytes of the model a broken earlier transfer left


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeRepo, str]]:
    root = tmp_path_factory.mktemp("piper-voices")
    build(root)
    repo = FakeRepo(root)
    with serving(repo, "the fake voice repository") as url:
        yield repo, url


@pytest.fixture
def repo(served: tuple[FakeRepo, str]) -> FakeRepo:
    served[0].reset()
    return served[0]


@pytest.fixture
def url(served: tuple[FakeRepo, str]) -> str:
    return served[1]


def run(names: list[str], dest: Path, url: str, timeout: float = 30.0) -> str:
    """fetch(); what it printed (not to a terminal: plain lines)."""
    out = io.StringIO()
    fetch(names, dest, url, timeout, Progress(out, tty=False))
    return out.getvalue()


def refused(names: list[str], dest: Path, url: str, timeout: float = 30.0) -> str:
    with pytest.raises(FetchError) as exc:
        run(names, dest, url, timeout)
    return str(exc.value)


def installed(repo: FakeRepo, dest: Path, key: str) -> bool:
    """Both files of ``key`` in ``dest``, byte for byte the repository's."""
    return all(
        filecmp.cmp(dest / (key + s), repo.root / rel(key, s), shallow=False)
        for s in (".onnx", ".onnx.json")
    )


def test_fetch_gets_both_files_byte_identical(repo: FakeRepo, url: str, tmp_path: Path) -> None:
    dest = tmp_path / "voices"  # made by the fetch
    lines = run([DE], dest, url).splitlines()
    assert sorted(p.name for p in dest.iterdir()) == [DE + ".onnx", DE + ".onnx.json"]
    assert installed(repo, dest, DE)
    # one GET each, the config first (a model never appears without its config)
    assert [p for p, _ in repo.requests] == [
        "/voices.json",
        "/" + rel(DE, ".onnx.json"),
        "/" + rel(DE, ".onnx"),
    ]
    mb = MODEL.stat().st_size / 1e6
    assert lines[2:] == [
        f"{DE}.onnx: {mb:.1f} MB",
        f"{DE}.onnx: 25%",
        f"{DE}.onnx: 50%",
        f"{DE}.onnx: 75%",
        f"{DE}.onnx: done",
        f"{DE}: installed in {dest}",
    ]


def test_a_second_fetch_skips_a_voice_already_there(
    repo: FakeRepo, url: str, tmp_path: Path
) -> None:
    run([DE], tmp_path, url)
    repo.reset()
    assert run([DE, "de-old-medium"], tmp_path, url) == f"{DE}: already in {tmp_path}, skipped\n"
    assert repo.requests == [("/voices.json", None)]  # the alias is the same voice
    # a damaged file is replaced, the good one beside it is kept
    (tmp_path / (DE + ".onnx")).write_bytes(b"not a model")
    assert "replacing it" in run([DE], tmp_path, url)
    assert installed(repo, tmp_path, DE)
    assert [p for p, _ in repo.requests[1:]] == ["/voices.json", "/" + rel(DE, ".onnx")]


def test_a_partial_download_is_resumed_with_a_range_request(
    repo: FakeRepo, url: str, tmp_path: Path
) -> None:
    (tmp_path / (DE + ".onnx.part")).write_bytes(MODEL.read_bytes()[:PART_AT])
    out = run([DE], tmp_path, url)
    assert f"resuming at {PART_AT / 1e6:.1f} MB" in out
    assert repo.gets(rel(DE, ".onnx")) == [f"bytes={PART_AT}-"]
    assert installed(repo, tmp_path, DE)
    assert not list(tmp_path.glob("*.part"))


def test_a_server_that_ignores_range_gets_the_whole_file_again(
    repo: FakeRepo, url: str, tmp_path: Path
) -> None:
    repo.ignore_range = True  # answers 200 with the whole file
    (tmp_path / (DE + ".onnx.part")).write_bytes(MODEL.read_bytes()[:PART_AT])
    run([DE], tmp_path, url)
    assert repo.gets(rel(DE, ".onnx")) == [f"bytes={PART_AT}-"]
    assert installed(repo, tmp_path, DE)


def test_a_part_that_is_not_the_files_start_is_fetched_again_whole(
    repo: FakeRepo, url: str, tmp_path: Path
) -> None:
    (tmp_path / (DE + ".onnx.part")).write_bytes(bytes(PART_AT))
    assert "getting the whole file again" in run([DE], tmp_path, url)
    assert repo.gets(rel(DE, ".onnx")) == [f"bytes={PART_AT}-", None]
    assert installed(repo, tmp_path, DE)


def test_a_dropped_connection_keeps_the_part_and_the_next_run_resumes(
    repo: FakeRepo, url: str, tmp_path: Path
) -> None:
    repo.cut_after = 30_000_000
    message = refused([FR], tmp_path, url)
    assert "run the command again to resume" in message and rel(FR, ".onnx") in message
    part = tmp_path / (FR + ".onnx.part")
    have = part.stat().st_size
    assert 0 < have <= 30_000_000
    assert (
        not (tmp_path / (FR + ".onnx")).exists() and not (tmp_path / (FR + ".onnx.json")).exists()
    )
    repo.reset()
    run([FR], tmp_path, url)
    assert repo.gets(rel(FR, ".onnx")) == [f"bytes={have}-"]
    assert installed(repo, tmp_path, FR)


def test_a_corrupted_file_fails_its_checksum_and_leaves_nothing_installed(
    repo: FakeRepo, url: str, tmp_path: Path
) -> None:
    message = refused([BROKEN], tmp_path, url)
    served_md5 = md5(repo.root / rel(BROKEN, ".onnx"))
    assert f"{BROKEN}.onnx: md5 {served_md5} does not match voices.json's {md5(MODEL)}" in message
    assert "deleted it" in message
    assert not (tmp_path / (BROKEN + ".onnx")).exists()
    assert not (tmp_path / (BROKEN + ".onnx.part")).exists()
    # the config checked out, but without its model it stays a .part: no voice appears
    assert not (tmp_path / (BROKEN + ".onnx.json")).exists()


def test_a_file_larger_than_listed_is_cut_off_and_refused(
    repo: FakeRepo, url: str, tmp_path: Path
) -> None:
    assert refused([LONG], tmp_path, url) == (
        f"{LONG}.onnx is larger than the {LONG_LISTED} bytes voices.json lists; got it "
        f"from {url}/{rel(LONG, '.onnx')} and deleted it"
    )
    assert not (tmp_path / (LONG + ".onnx")).exists()
    assert not (tmp_path / (LONG + ".onnx.part")).exists()


def test_an_unknown_name_is_refused_with_suggestions_before_any_download(
    repo: FakeRepo, url: str, tmp_path: Path
) -> None:
    message = refused([DE, "de_DE-tset-medium"], tmp_path, url)
    assert message.startswith("unknown voice 'de_DE-tset-medium'; did you mean de_DE-test-medium")
    assert repo.requests == [("/voices.json", None)]
    assert "fr_FR-test-low" in refused(["test"], tmp_path, url)


def test_http_and_network_failures_name_the_url(repo: FakeRepo, url: str, tmp_path: Path) -> None:
    missing = f"{url}/{rel(MISSING, '.onnx.json')}"
    assert refused([MISSING], tmp_path, url) == f"HTTP 404 Not Found from {missing}"
    assert not list(tmp_path.iterdir())
    nowhere = f"http://127.0.0.1:{free_port()}"
    message = refused([DE], tmp_path, nowhere)
    assert message.startswith(f"cannot reach {nowhere}/voices.json: ")
    assert "refused" in message
    repo.stall_s = 2.0
    assert refused([DE], tmp_path, url, timeout=0.3) == f"cannot reach {url}/voices.json: timed out"


def test_a_folder_that_cannot_be_written_is_named(repo: FakeRepo, url: str, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    message = refused([DE], blocker / "voices", url)
    assert message == f"cannot create voices folder {blocker / 'voices'}: Not a directory"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_is_reported_and_its_part_deleted(
    repo: FakeRepo, url: str, tmp_path: Path
) -> None:
    part = tmp_path / (DE + ".onnx.part")
    part.symlink_to("/dev/full")  # every write: ENOSPC
    message = refused([DE], tmp_path, url)
    assert message == f"no space left on the device writing {part}; deleted it"
    assert not part.exists() and not part.is_symlink()
    assert not (tmp_path / (DE + ".onnx")).exists()


# --------------------------------------------------------------------------- offline


def test_offline_copies_from_a_copy_of_the_repository(repo: FakeRepo, tmp_path: Path) -> None:
    out = io.StringIO()
    assert copy_offline([DE], tmp_path, repo.root, Progress(out, tty=False)) == [DE]
    assert installed(repo, tmp_path, DE)
    assert copy_offline(["de-old-medium"], tmp_path, repo.root, Progress(out, tty=False)) == [DE]
    assert out.getvalue().endswith(f"{DE}: already in {tmp_path}, skipped\n")
    with pytest.raises(FetchError, match=f"{BROKEN}.onnx: md5 .* does not match"):
        copy_offline([BROKEN], tmp_path, repo.root, Progress(out, tty=False))
    assert not (tmp_path / (BROKEN + ".onnx")).exists()
    assert repo.requests == []


def test_offline_without_voices_json_checks_the_config(tmp_path: Path) -> None:
    src = tmp_path / "src" / "nested"
    src.mkdir(parents=True)
    (src / "xx_XX-flat-low.onnx").symlink_to(MODEL)
    (src / "xx_XX-flat-low.onnx.json").symlink_to(CONFIG)
    (src / "xx_XX-bad-low.onnx").symlink_to(MODEL)
    (src / "xx_XX-bad-low.onnx.json").write_text('{"audio": {}}')
    dest = tmp_path / "voices"
    quiet = Progress(io.StringIO(), tty=False)
    copy_offline(["xx_XX-flat-low"], dest, tmp_path / "src", quiet)
    assert filecmp.cmp(dest / "xx_XX-flat-low.onnx", MODEL, shallow=False)
    assert filecmp.cmp(dest / "xx_XX-flat-low.onnx.json", CONFIG, shallow=False)
    with pytest.raises(FetchError, match=r"xx_XX-bad-low\.onnx\.json: not a Piper voice config"):
        copy_offline(["xx_XX-bad-low"], dest, tmp_path / "src", quiet)
    with pytest.raises(FetchError, match=r"has no xx_XX-none-low\.onnx\.json"):
        copy_offline(["xx_XX-none-low"], dest, tmp_path / "src", quiet)
    assert sorted(p.name for p in dest.iterdir()) == [
        "xx_XX-flat-low.onnx",
        "xx_XX-flat-low.onnx.json",
    ]


# ------------------------------------------------------------------------------- CLI


def test_cli_fetches_into_the_configured_folder(
    repo: FakeRepo,
    url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("VOXWIRE_PIPER_VOICES_URL", url)
    monkeypatch.setenv("VOXWIRE_PIPER_VOICES_DIR", str(tmp_path))
    assert main(["voices", "fetch", FR]) == 0
    assert installed(repo, tmp_path, FR)
    assert f"{FR}: installed in {tmp_path}" in capsys.readouterr().err
    assert main(["voices", "fetch", "fr-test"]) == 1
    assert "unknown voice 'fr-test'; did you mean fr_FR-test-low" in capsys.readouterr().err
    assert main(["voices", "list", "--language", "de"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].split() == ["VOICE", "LANGUAGE", "QUALITY", "SPEAKERS", "MB"]
    assert [line.split()[:2] for line in listed[1:]] == [[DE, "de_DE"]]
    assert listed[1].split()[2:] == ["German", "(DE)", "medium", "1", "63"]


def test_cli_needs_a_voices_folder(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("VOXWIRE_PIPER_VOICES_DIR", raising=False)
    assert main(["voices", "fetch", DE, "--url", url]) == 2
    err = capsys.readouterr().err
    assert "--dir" in err and "piper_voices_dir (VOXWIRE_PIPER_VOICES_DIR)" in err


def test_cli_copies_offline(repo: FakeRepo, tmp_path: Path) -> None:
    assert main(["voices", "fetch", "--offline", str(repo.root), DE, "--dir", str(tmp_path)]) == 0
    assert installed(repo, tmp_path, DE)


def test_python_m_server_voices_fetch(repo: FakeRepo, url: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "server",
            "voices",
            "fetch",
            FR,
            "--dir",
            str(tmp_path),
            "--url",
            url,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert installed(repo, tmp_path, FR)
    assert f"{FR}.onnx: 25%" in proc.stderr.splitlines()  # not a terminal: plain lines


def test_progress_on_a_terminal_redraws_one_line() -> None:
    out = io.StringIO()
    progress = Progress(out, tty=True)
    progress.start("x.onnx", 4_000_000, 1_000_000)
    progress.advance(3_000_000)
    progress.finish()
    text = out.getvalue()
    assert text.startswith("\rx.onnx [") and " 25% 1.0/4.0 MB" in text
    assert "\rx.onnx [##############################] 100% 4.0/4.0 MB" in text
    assert text.endswith("\nx.onnx: done\n")


# ------------------------------------------------------------------- servable


def test_a_fetched_voice_is_served_by_the_piper_engine(
    repo: FakeRepo, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.engines.piper import PiperEngine
    from server.engines.piper_voices import PiperOptions

    dest = tmp_path / "voices"
    run([DE], dest, url)
    (dest / "half.onnx.part").write_bytes(b"")  # a transfer's leftovers are no voice
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the aligned model
    engine = PiperEngine(PiperOptions(voices_dir=str(dest)))
    ours = [v for v in engine.voices() if v.id == DE]
    assert len(ours) == 1 and ours[0].language == "de" and ours[0].locale == "de_DE"
    assert {v.id for v in engine.voices()} == {"en_US-joe-medium", DE}
    audio = np.concatenate(list(engine.synthesize("Guten Morgen, wie geht es dir?", DE, 1.0)))
    assert len(audio) > 0.5 * engine.sample_rate and float(np.abs(audio).max()) > 0.05
