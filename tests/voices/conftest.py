"""Voice upload fixtures: real speech (Piper reading a sentence) encoded by ffmpeg into
every accepted format, and the F5 files (tiny random-weight model) for real servers."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from server.engines.base import Audio
from tests.engines.f5.conftest import ALICE_TEXT, F5Files, piper_speech
from tests.engines.f5.conftest import f5_files as f5_files
from tests.support import RedisProcess, ServerProcess

TRANSCRIPT = ALICE_TEXT
WAV_ARGS = ["-c:a", "pcm_s16le", "-f", "wav"]
# ffmpeg arguments for each accepted format, as browsers and tools make them
ACCEPTED = {
    "wav": ["-c:a", "pcm_s16le", "-f", "wav"],
    "flac": ["-c:a", "flac", "-f", "flac"],
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"],
    "ogg-opus": ["-c:a", "libopus", "-b:a", "32k", "-f", "ogg"],
    "ogg-vorbis": ["-c:a", "libvorbis", "-f", "ogg"],
    "webm-opus": ["-c:a", "libopus", "-b:a", "32k", "-f", "webm"],
}


def encode(audio: Audio, rate: int, args: list[str], channels: int = 1) -> bytes:
    """``audio`` (mono float) through ffmpeg with ``args``; the file's bytes."""
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "in.f32"
        x = np.asarray(audio, dtype="<f4")
        if channels == 2:
            x = np.stack([x, x * 0.5], axis=1)
        src.write_bytes(x.tobytes())
        out = subprocess.run(
            [
                *("ffmpeg", "-v", "error", "-f", "f32le", "-ar", str(rate)),
                *("-ac", str(channels), "-i", str(src), *args, "pipe:1"),
            ],
            capture_output=True,
            check=True,
        ).stdout
    return out


@pytest.fixture(scope="session")
def speech() -> tuple[Audio, int]:
    """Real speech of TRANSCRIPT (Piper), mono float32 and its rate."""
    return piper_speech(TRANSCRIPT)


@pytest.fixture(scope="session")
def samples(speech: tuple[Audio, int]) -> dict[str, bytes]:
    audio, rate = speech
    return {name: encode(audio, rate, args) for name, args in ACCEPTED.items()}


KEY = "vx-test-voices-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@dataclass
class Nodes:
    a: ServerProcess
    b: ServerProcess
    redis: RedisProcess


@pytest.fixture(scope="package")
def nodes(f5_files: F5Files) -> Iterator[Nodes]:
    """Two real servers with F5 (the tiny random-weight model) sharing one private
    Redis, with an API key: every voices route needs it."""
    redis = RedisProcess()
    settings: dict[str, object] = {
        **f5_files.settings(),
        "redis_url": redis.url,
        "api_keys": KEY,
        "max_session_s": 600,
        "voice_max_bytes": 1_000_000,
        "voice_max_count": 6,
    }
    started: list[ServerProcess] = []
    try:
        started.append(ServerProcess(**settings))
        started.append(ServerProcess(**settings))
        for srv in started:
            srv.wait_ready(timeout=180)
        yield Nodes(started[0], started[1], redis)
    finally:
        for srv in started:
            srv.stop()
        redis.stop()
