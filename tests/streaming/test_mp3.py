"""Streaming MP3 through LAME (server/streaming/mp3.py), checked with FFmpeg's decoder."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from server.streaming.encoder import FlushingEncoder, flush_encoder, make_encoder
from server.streaming.mp3 import MP3_DECODE_DELAY, MP3_RATES, Mp3Encoder
from server.streaming.pipeline import AudioPipeline

needs_ffmpeg = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("ffmpeg", "ffprobe")), reason="ffmpeg not installed"
)


def _sweep(rate: int, seconds: float) -> npt.NDArray[np.float32]:
    """A 150 Hz -> 3 kHz linear chirp with a slow envelope."""
    t = np.arange(int(rate * seconds)) / rate
    phase = 2 * np.pi * (150 * t + (3000 - 150) / (2 * seconds) * t**2)
    return (0.5 * np.sin(phase) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))).astype(np.float32)


def _decode(data: bytes) -> npt.NDArray[np.float32]:
    """The MP3 stream decoded by FFmpeg at its own rate."""
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "mp3", "-i", "-", "-f", "f32le", "-ac", "1", "-"],
        input=data,
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(out, dtype="<f4")


def _probe(data: bytes) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", "-"],
        input=data,
        capture_output=True,
        check=True,
    ).stdout
    stream: dict[str, Any] = json.loads(out)["streams"][0]
    return stream


def _best_lag(y: npt.NDArray[np.float32], x: npt.NDArray[np.float32], max_lag: int) -> int:
    n = x.size - max_lag
    scores = [float(np.dot(y[lag : lag + n], x[:n])) for lag in range(max_lag)]
    return int(np.argmax(scores))


def _encode(enc: Mp3Encoder, x: npt.NDArray[np.float32]) -> list[bytes]:
    n = enc.frame_samples
    return [enc.encode(frame) for frame in x[: x.size - x.size % n].reshape(-1, n)]


@needs_ffmpeg
@pytest.mark.parametrize(
    ("rate", "bitrate"),
    [(8000, 64000), (16000, 64000), (22050, 64000), (24000, 64000), (44100, 128000),
     (48000, 128000), (24000, 32000)],
)  # fmt: skip
def test_mp3_decodes_with_ffmpeg(rate: int, bitrate: int) -> None:
    enc = Mp3Encoder(rate, 20, bitrate)
    assert (enc.encoding, enc.sample_rate, enc.lookahead) == ("mp3", rate, 0)
    x = _sweep(rate, 3.0)
    frames = _encode(enc, x)
    # LAME buffers: some frames come out empty, but most of the stream streams.
    assert any(f == b"" for f in frames)
    streamed = b"".join(frames)
    tail = enc.flush()
    assert tail and len(streamed) > 5 * len(tail)
    data = streamed + tail
    assert data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xe3")  # an MPEG-1/2/2.5 frame sync

    probe = _probe(data)
    assert probe["codec_name"] == "mp3" and int(probe["sample_rate"]) == rate
    assert int(probe["bit_rate"]) == bitrate and probe["channels"] == 1
    y = _decode(data)
    # No gapless tag: LAME's encoder delay plus the decoder's filterbank delay lead the
    # audio, and the flush pads the end to a whole MP3 frame (1152 or 576 samples).
    assert _best_lag(y, x, 3000) == MP3_DECODE_DELAY == 1105
    extra = y.size - x.size - MP3_DECODE_DELAY
    assert 0 <= extra <= 1152
    aligned = y[MP3_DECODE_DELAY : MP3_DECODE_DELAY + x.size]
    assert np.corrcoef(aligned, x)[0, 1] > 0.98
    snr = 10 * np.log10(np.sum(x**2.0) / np.sum((aligned - x) ** 2.0))
    assert snr > 15


@needs_ffmpeg
def test_mp3_goes_on_after_flush_and_through_the_pipeline() -> None:
    # Two utterances from a 22050 Hz engine, each finished and flushed: one valid MP3
    # stream holding both, one after the other.
    enc = make_encoder("mp3", 24000, 20, None)
    assert isinstance(enc, Mp3Encoder) and isinstance(enc, FlushingEncoder)
    assert enc.bitrate == 64000
    p = AudioPipeline(24000, enc)
    x = _sweep(24000, 1.5)
    utterances = []
    for _ in range(2):
        out: list[bytes] = []
        for i in range(0, x.size, 1000):
            out += p.push(x[i : i + 1000])
        out += p.finish()
        assert p.end_trim < enc.frame_samples  # no lookahead padding needed
        out.append(flush_encoder(enc))
        utterances.append(b"".join(out))
    assert flush_encoder(enc) == b""  # nothing since the last flush
    y = _decode(utterances[0] + utterances[1])
    first = _decode(utterances[0])
    assert first.size >= x.size + MP3_DECODE_DELAY
    # The second utterance starts where the first one's MP3 frames end, delayed the same.
    assert _best_lag(y[first.size :], x, 3000) == MP3_DECODE_DELAY
    for start in (MP3_DECODE_DELAY, first.size + MP3_DECODE_DELAY):
        part = y[start : start + x.size]
        mid = slice(200, x.size - 200)  # past the pipeline's fades
        assert np.corrcoef(part[mid], x[mid])[0, 1] > 0.98


@needs_ffmpeg
def test_mp3_reset_drops_the_buffered_audio() -> None:
    enc = Mp3Encoder(16000, 20, 64000)
    loud = np.full(enc.frame_samples, 0.5, np.float32)
    held = b"".join(enc.encode(loud) for _ in range(3))  # LAME holds most of it
    enc.reset()
    assert enc.flush() == b""  # the fresh encoder holds nothing
    x = _sweep(16000, 1.0)
    data = held + b"".join(_encode(enc, x)) + enc.flush()
    y = _decode(data)
    assert y.size > x.size  # still one decodable stream


def test_mp3_flush_before_encoding_is_empty() -> None:
    enc = Mp3Encoder(48000, 20, 128000)
    assert enc.flush() == b"" and enc.flush() == b""
    enc.reset()
    assert enc.encode(np.zeros(960, np.float32)) == b""  # LAME needs more before a frame


@pytest.mark.parametrize(
    ("rate", "bitrate", "message"),
    [
        (44000, 128000, "44100"),  # the message lists the rates LAME can do
        (96000, 128000, "48000"),
        (8000, 128000, "64000"),  # MPEG-2.5 tops out at 64 kb/s
        (24000, 192000, "160000"),  # MPEG-2 at 160
        (48000, 16000, "320000"),  # MPEG-1 starts at 32
        (44100, 100000, "128000"),  # not a Layer III bitrate
        (44100, 128500, "128000"),
    ],
)
def test_mp3_rejects_what_lame_cannot_do(rate: int, bitrate: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Mp3Encoder(rate, 20, bitrate)


def test_mp3_default_bitrates_and_rates() -> None:
    for rate in MP3_RATES:
        frame_ms = 40 if rate % 50 else 20  # 11025 Hz has no whole 20 ms frame
        enc = make_encoder("mp3", rate, frame_ms, None)
        assert isinstance(enc, Mp3Encoder)
        assert enc.bitrate == (64000 if rate <= 24000 else 128000)
    with pytest.raises(ValueError, match="frame_ms"):
        make_encoder("mp3", 11025, 20, None)
