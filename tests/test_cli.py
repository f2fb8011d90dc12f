"""``voxwire say`` writes Ogg Opus that outside decoders (ffmpeg, opusdec) accept."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support import (
    ROOT,
    Received,
    ServerProcess,
    connect,
    logged,
    recv_until,
    rms,
    send,
    transcribe,
    word_recall,
)

TEXT = "Hello from the command line. This file should play in any Opus decoder."


def _say(server: ServerProcess, *args: str, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(
        [sys.executable, "-m", "server", "say", "--url", server.ws_url, *args],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def test_say_writes_ogg_opus_that_ffmpeg_and_opusdec_decode(
    server: ServerProcess, tmp_path: Path
) -> None:
    out = tmp_path / "hello.ogg"
    _say(server, TEXT, "-o", str(out))
    probe = json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(out)],
            capture_output=True,
            check=True,
        ).stdout
    )
    stream = probe["streams"][0]
    assert stream["codec_name"] == "opus" and probe["format"]["format_name"] == "ogg"
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(out), "-f", "s16le", "-ac", "1", "-ar", "16000", "-"],
        capture_output=True,
        check=True,
    ).stdout
    audio = np.frombuffer(raw, "<i2").astype(np.float32) / np.float32(32768)
    assert 3.0 < len(audio) / 16000 < 9.0
    assert rms(audio) > 0.02
    assert word_recall(TEXT, transcribe(audio, 16000)) >= 0.5
    # opusdec (libopusfile) checks page CRCs and granules strictly
    wav = tmp_path / "hello.wav"
    res = subprocess.run(["opusdec", "--quiet", str(out), str(wav)], capture_output=True)
    assert res.returncode == 0, res.stderr.decode()
    assert wav.stat().st_size > 16000


def test_say_reads_stdin_and_writes_raw_pcm(server: ServerProcess) -> None:
    pcm = _say(server, "--format", "pcm", "--sample-rate", "16000", stdin=TEXT.encode())
    audio = np.frombuffer(pcm, "<i2").astype(np.float32) / np.float32(32768)
    assert 3.0 < len(audio) / 16000 < 9.0
    assert word_recall(TEXT, transcribe(audio, 16000)) >= 0.5


def test_say_reports_an_unreachable_server(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "server",
            "say",
            "--url",
            "ws://127.0.0.1:9/v1/stream",
            "hi",
            "-o",
            str(tmp_path / "x.ogg"),
        ],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 1
    assert b"cannot reach ws://127.0.0.1:9/v1/stream" in proc.stderr


def test_serve_help_lists_every_setting() -> None:
    """argparse formats help with %: a setting whose description has a % (the Opus
    packet loss) once made `voxwire serve --help` crash."""
    from server.config import Settings

    proc = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    for name in Settings.__struct_fields__:
        assert "--" + name.replace("_", "-") in proc.stdout, name
    assert "Expected packet loss, % (FEC acts only when > 0)." in " ".join(proc.stdout.split())


@pytest.mark.parametrize(("trusted", "seen"), [("127.0.0.1", "203.0.113.7"), ("", "127.0.0.1")])
async def test_a_trusted_proxy_gives_the_client_address(trusted: str, seen: str) -> None:
    """Behind a load balancer the node sees the balancer's address; X-Forwarded-For gives
    the client's, but only from a proxy in forwarded_allow_ips."""
    srv = ServerProcess(forwarded_allow_ips=trusted)
    try:
        srv.wait_ready()
        headers = {"X-Forwarded-For": "203.0.113.7"}
        async with await connect(srv.ws_url, additional_headers=headers) as ws:
            await send(ws, type="start")
            await recv_until(ws, Received(), stop="ready")
        starts = await logged(srv, "session_start")
        assert starts and starts[0]["client"] == seen, starts
    finally:
        srv.stop()
