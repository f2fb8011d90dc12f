"""G.711 A-law (server/streaming/g711.py); the µ-law tests are in test_encoder.py."""

from __future__ import annotations

import shlex
import shutil
import subprocess

import numpy as np
import numpy.typing as npt
import pytest

from server.streaming.encoder import make_encoder
from server.streaming.g711 import AlawEncoder
from server.streaming.pipeline import AudioPipeline
from server.streaming.resampler import StreamResampler

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


def _alaw_reference(x: int) -> int:
    """G.711 A-law, one sample, written from the standard's rule as the ITU's G.191 reference
    software codes it (alaw_compress): 16-bit -> 12-bit magnitude (one's complement for
    negatives), linear below 32, else segment = how far it must be halved to fit in 5 bits,
    sign bit set for x >= 0, even bits inverted."""
    ix = (~x if x < 0 else x) >> 4
    if ix > 15:
        exponent = 1
        while ix > 16 + 15:
            ix >>= 1
            exponent += 1
        ix -= 16
        ix += exponent << 4
    if x >= 0:
        ix |= 0x80
    return ix ^ 0x55


def _alaw_reference_decode(code: int) -> int:
    """G.191 alaw_expand: the middle of the code's quantisation interval, 16-bit scale."""
    ix = (code ^ 0x55) & 0x7F
    exponent = ix >> 4
    mantissa = ix & 0x0F
    if exponent > 0:
        mantissa += 16
    mantissa = (mantissa << 4) + 8
    if exponent > 1:
        mantissa <<= exponent - 1
    return mantissa if code > 127 else -mantissa


def _step_index(codes: npt.NDArray[np.uint8]) -> npt.NDArray[np.int32]:
    """A-law codes as positions on the quantiser's scale (-128..127), so that codes one
    quantisation step apart differ by one."""
    c = codes.astype(np.int32) ^ 0x55
    magnitude = c & 0x7F
    return np.where(c & 0x80, magnitude, -magnitude - 1)


def _frames_of(values: npt.NDArray[np.int16], n: int) -> npt.NDArray[np.float32]:
    """int16 values as float frames (v / 32768), zero-padded to whole frames."""
    x = np.zeros(-(-values.size // n) * n, dtype=np.float32)
    x[: values.size] = values.astype(np.float32) / 32768
    return x.reshape(-1, n)


def _ffmpeg(args: str, data: bytes) -> bytes:
    return subprocess.run(
        ["ffmpeg", "-v", "error", *shlex.split(args)], input=data, capture_output=True, check=True
    ).stdout


def _sweep(rate: int, seconds: float, f0: float, f1: float) -> npt.NDArray[np.float32]:
    t = np.arange(int(rate * seconds)) / rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) / (2 * seconds) * t**2)
    return (0.5 * np.sin(phase) * (0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t))).astype(np.float32)


def test_alaw_reference_spot_values() -> None:
    # G.711's codes for zero, "negative zero" and the extremes (sign bit, then xor 0x55).
    assert _alaw_reference(0) == 0xD5
    assert _alaw_reference(-1) == 0x55
    assert _alaw_reference(32767) == 0xAA
    assert _alaw_reference(-32768) == 0x2A
    assert _alaw_reference_decode(0xD5) == 8 and _alaw_reference_decode(0x55) == -8
    assert _alaw_reference_decode(0xAA) == 32256 and _alaw_reference_decode(0x2A) == -32256


def test_alaw_bit_exact_for_every_int16() -> None:
    values = np.arange(-32768, 32768, dtype=np.int16)
    enc = AlawEncoder(8000, 20)
    assert enc.frame_samples == 160 and enc.lookahead == 0 and enc.encoding == "alaw"
    codes = b"".join(enc.encode(f) for f in _frames_of(values, 160))
    out = np.frombuffer(codes, dtype=np.uint8)[: values.size]
    expected = np.array([_alaw_reference(int(v)) for v in values], dtype=np.uint8)
    mismatches = np.flatnonzero(out != expected)
    assert mismatches.size == 0, values[mismatches[:10]]
    # Every code is used, and the expansion of each code lies in the input's interval.
    assert np.unique(out).size == 256
    decoded = np.array([_alaw_reference_decode(c) for c in range(256)])[out]
    assert np.all(np.abs(decoded - values.astype(np.int32)) <= 512)


@needs_ffmpeg
def test_alaw_agrees_with_ffmpegs_encoder() -> None:
    # FFmpeg's pcm_alaw encoder puts its decision levels at the midpoints of its decoder's
    # output values (on a 14-bit scale); G.191 cuts to 12 bits, one's complement for
    # negatives. Both quantise to the same intervals, so the codes may differ only on a
    # boundary, by one step.
    values = np.arange(-32768, 32768, dtype=np.int16)
    ours = np.frombuffer(
        b"".join(AlawEncoder(8000, 20).encode(f) for f in _frames_of(values, 160)), np.uint8
    )[: values.size]
    theirs = np.frombuffer(
        _ffmpeg("-f s16le -ar 8000 -ac 1 -i - -f alaw -", values.astype("<i2").tobytes()),
        np.uint8,
    )
    assert theirs.size == values.size
    steps = np.abs(_step_index(ours) - _step_index(theirs))
    assert steps.max() <= 1
    assert np.mean(steps == 0) > 0.98


@needs_ffmpeg
def test_alaw_pipeline_decodes_with_ffmpeg() -> None:
    # 3 s sweep at an engine rate of 22050 Hz, through the whole pipeline to 8 kHz A-law.
    x = _sweep(22050, 3.0, 150, 3400)
    enc = make_encoder("alaw", 8000, 20, None)
    assert isinstance(enc, AlawEncoder)
    p = AudioPipeline(22050, enc)
    packets: list[bytes] = []
    for i in range(0, x.size, 1000):
        packets += p.push(x[i : i + 1000])
    packets += p.finish()
    assert all(len(pk) == 160 for pk in packets)
    codes = b"".join(packets)

    decoded = np.frombuffer(_ffmpeg("-f alaw -ar 8000 -ac 1 -i - -f s16le -", codes), "<i2")
    assert decoded.size == len(codes)
    # ffmpeg's decoder is G.711's expansion rule...
    np.testing.assert_array_equal(decoded, [_alaw_reference_decode(c) for c in codes])
    # ...and gives back the signal: the same sweep resampled on its own (fades aside).
    rs = StreamResampler(22050, 8000)
    ref = np.concatenate([rs.process(x), rs.flush()])
    assert abs(decoded.size - ref.size) < 160  # within a frame
    y = decoded[: ref.size].astype(np.float64) / 32768
    mid = slice(80, ref.size - 80)  # past the 4 ms fades
    assert np.corrcoef(y[mid], ref[mid])[0, 1] > 0.999
    snr = 10 * np.log10(np.sum(ref[mid] ** 2) / np.sum((y[mid] - ref[mid]) ** 2))
    assert snr > 30  # G.711 gives ~38 dB on a loud signal
