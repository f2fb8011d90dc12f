"""Voice upload fixtures: real speech (Piper reading a sentence) encoded by ffmpeg into
every accepted format, and the F5 files (tiny random-weight model) for real servers."""

from __future__ import annotations

import struct
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
# A second key: another customer of the same servers (voices belong to their key).
KEY_B = "vx-test-voices-key-b"
AUTH_B = {"Authorization": f"Bearer {KEY_B}"}


@dataclass
class Nodes:
    a: ServerProcess
    b: ServerProcess
    redis: RedisProcess


@pytest.fixture(scope="package")
def nodes(f5_files: F5Files) -> Iterator[Nodes]:
    """Two real servers with F5 (the tiny random-weight model) sharing one private
    Redis, with two API keys (``KEY``, ``KEY_B``): every voices route needs one, and
    voices are private to the key that uploaded them (the default)."""
    redis = RedisProcess()
    settings: dict[str, object] = {
        **f5_files.settings(),
        "redis_url": redis.url,
        "api_keys": f"{KEY},{KEY_B}",
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


@pytest.fixture(scope="package")
def shared_node(f5_files: F5Files) -> Iterator[ServerProcess]:
    """One real server with F5, the same two keys, ``voice_sharing: shared`` and the
    in-process (memory) voice store."""
    srv = ServerProcess(
        **f5_files.settings(),
        api_keys=f"{KEY},{KEY_B}",
        voice_sharing="shared",
        voice_max_bytes=1_000_000,
        max_session_s=600,
    )
    try:
        srv.wait_ready(timeout=180)
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="package")
def open_node(f5_files: F5Files) -> Iterator[ServerProcess]:
    """One real server with F5 and no API keys (open, as for local use)."""
    srv = ServerProcess(**f5_files.settings(), voice_max_bytes=1_000_000, max_session_s=600)
    try:
        srv.wait_ready(timeout=180)
        yield srv
    finally:
        srv.stop()


def riff_wav(
    tag: int,
    pcm: bytes,
    rate: int,
    channels: int = 1,
    bits: int = 16,
    extension: bytes = b"",
) -> bytes:
    """A WAV file built byte by byte: the RIFF header, a ``fmt `` chunk with format tag
    ``tag`` (``extension`` after its 16 bytes), then ``pcm`` as the data chunk."""
    block = channels * bits // 8
    fmt = struct.pack(
        "<HHIIHH", tag, channels, rate, rate * block & 0xFFFF_FFFF, block & 0xFFFF, bits
    )
    fmt += extension
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(pcm)) + pcm + b"\0" * (len(pcm) & 1)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def extensible(sub_tag: int, bits: int = 16) -> bytes:
    """What WAVE_FORMAT_EXTENSIBLE (0xFFFE) adds to the 16-byte fmt chunk: cbSize 22,
    valid bits, channel mask, and the sub-format GUID whose first two bytes are the
    format tag of the samples (KSDATAFORMAT_SUBTYPE_PCM for 0x0001)."""
    guid = struct.pack("<IHH", sub_tag, 0x0000, 0x0010) + bytes.fromhex("800000aa00389b71")
    return struct.pack("<HHI", 22, bits, 0x4) + guid


@pytest.fixture(scope="session")
def speech_pcm(speech: tuple[Audio, int]) -> tuple[bytes, int]:
    """TRANSCRIPT's speech as 16-bit little-endian PCM bytes, and its rate."""
    audio, rate = speech
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes(), rate
