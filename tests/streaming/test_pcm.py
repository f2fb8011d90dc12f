"""Linear PCM encoders (server/streaming/pcm.py): s16be (RTP L16) and f32le."""

from __future__ import annotations

import shlex
import shutil
import subprocess

import numpy as np
import numpy.typing as npt
import pytest

from server.streaming.encoder import make_encoder
from server.streaming.pcm import PcmF32Encoder, PcmS16BeEncoder, PcmS16Encoder
from server.streaming.pipeline import AudioPipeline

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


def _sweep(rate: int, seconds: float) -> npt.NDArray[np.float32]:
    """A 100 Hz -> 0.45·rate linear chirp with a slow envelope."""
    t = np.arange(int(rate * seconds)) / rate
    f1 = 0.45 * rate
    phase = 2 * np.pi * (100 * t + (f1 - 100) / (2 * seconds) * t**2)
    return (0.7 * np.sin(phase) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))).astype(np.float32)


def _ffmpeg_decode(in_fmt: str, rate: int, data: bytes) -> npt.NDArray[np.float32]:
    out = subprocess.run(
        shlex.split(f"ffmpeg -v error -f {in_fmt} -ar {rate} -ac 1 -i - -f f32le -"),
        input=data,
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(out, dtype="<f4")


def _through_pipeline(encoding: str, rate: int, x: npt.NDArray[np.float32]) -> bytes:
    """x at `rate` through the pipeline without fades (same rate: the resampler passes it)."""
    p = AudioPipeline(rate, make_encoder(encoding, rate, 20, None), fade_ms=0)
    out: list[bytes] = []
    for i in range(0, x.size, 777):
        out += p.push(x[i : i + 777])
    out += p.finish()
    assert all(len(f) == len(out[0]) for f in out)
    return b"".join(out)


def test_s16be_is_s16le_byteswapped_for_every_int16() -> None:
    values = np.arange(-32768, 32768, dtype=np.int16)
    x = values.astype(np.float32) / np.float32(32768)
    le, be = PcmS16Encoder(16000, 16), PcmS16BeEncoder(16000, 16)
    assert (be.encoding, be.frame_samples, be.lookahead) == ("pcm_s16be", 256, 0)
    out = b"".join(be.encode(f) for f in x.reshape(-1, 256))
    np.testing.assert_array_equal(np.frombuffer(out, dtype=">i2"), values)
    assert (
        out
        == np.frombuffer(b"".join(le.encode(f) for f in x.reshape(-1, 256)), "<i2")
        .astype(">i2")
        .tobytes()
    )
    assert be.encode(np.array([1.5, -1.5] + [0] * 254, np.float32))[:4] == b"\x7f\xff\x80\x00"


def test_f32le_clips_to_unit_range() -> None:
    enc = PcmF32Encoder(1000, 10)
    assert (enc.encoding, enc.frame_samples, enc.lookahead) == ("pcm_f32le", 10, 0)
    x = np.array([1.5, 1.0, -1.0, -7.0, 0.25, -0.125, 1e-9, 0.0, 0.999, -0.999], np.float32)
    frame = x.copy()
    out = np.frombuffer(enc.encode(frame), dtype="<f4")
    np.testing.assert_array_equal(out, np.clip(x, -1, 1))
    np.testing.assert_array_equal(frame, x)  # the caller's frame is not clipped in place
    with pytest.raises(ValueError, match="10"):
        enc.encode(np.zeros(9, np.float32))


@needs_ffmpeg
@pytest.mark.parametrize("rate", [8000, 16000, 24000, 48000])
def test_s16be_decodes_with_ffmpeg(rate: int) -> None:
    x = _sweep(rate, 2.5)
    data = _through_pipeline("pcm_s16be", rate, x)
    y = _ffmpeg_decode("s16be", rate, data)
    assert y.size - x.size in range(320 * rate // 16000)  # the last frame's padding
    err = y[: x.size] - x
    assert np.max(np.abs(err)) <= 0.5 / 32768 + 1e-9
    assert np.corrcoef(y[: x.size], x)[0, 1] > 0.9999
    assert np.all(y[x.size :] == 0)


@needs_ffmpeg
@pytest.mark.parametrize("rate", [16000, 44100])
def test_f32le_decodes_with_ffmpeg(rate: int) -> None:
    x = _sweep(rate, 2.0)
    x[1000:1100] *= 2.5  # a burst over full scale: clipped, not wrapped
    data = _through_pipeline("pcm_f32le", rate, x)
    y = _ffmpeg_decode("f32le", rate, data)
    assert y.size - x.size in range(rate // 50)
    np.testing.assert_array_equal(y[: x.size], np.clip(x, -1, 1))
    assert np.max(np.abs(y)) == 1.0
