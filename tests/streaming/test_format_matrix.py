"""Every output format the native protocol offers, decoded by a decoder we did not write:
Opus at each rate, frame size and channel count by libopus; 16-bit PCM in both byte
orders and G.711 µ-law/A-law by ffmpeg. A 440 Hz tone must come back as 440 Hz, at its
level, the same in both channels."""

from __future__ import annotations

import subprocess

import numpy as np
import numpy.typing as npt
import pytest

from server.protocol import OPUS_FRAME_MS, OPUS_RATES
from server.streaming.encoder import make_encoder

F = 440.0
AMP = 0.3


def _tone(rate: int, seconds: float = 0.6) -> npt.NDArray[np.float32]:
    t = np.arange(int(rate * seconds)) / rate
    return (AMP * np.sin(2 * np.pi * F * t)).astype(np.float32)


def _frames(encoding: str, rate: int, frame_ms: int, channels: int) -> list[bytes]:
    enc = make_encoder(encoding, rate, frame_ms, None, channels=channels)
    n = rate * frame_ms // 1000
    x = _tone(rate)
    return [enc.encode(x[i : i + n]) for i in range(0, len(x) - n + 1, n)]


def _check(y: npt.NDArray[np.float32], rate: int, channels: int) -> None:
    st = y.reshape(-1, channels)
    if channels == 2:
        assert np.corrcoef(st[:, 0], st[:, 1])[0, 1] > 0.99
    mono = st[len(st) // 4 :, 0]  # past the codec's start-up
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    peak = np.fft.rfftfreq(len(mono), 1 / rate)[int(np.argmax(spectrum))]
    assert abs(peak - F) < 5, peak
    rms = float(np.sqrt(np.mean(mono**2)))
    assert 0.75 * AMP / np.sqrt(2) < rms < 1.25 * AMP / np.sqrt(2), rms


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("frame_ms", OPUS_FRAME_MS)
@pytest.mark.parametrize("rate", OPUS_RATES)
def test_opus(rate: int, frame_ms: int, channels: int) -> None:
    import opuslib_next

    dec = opuslib_next.Decoder(rate, channels)
    n = rate * frame_ms // 1000
    pcm = b"".join(dec.decode(f, n) for f in _frames("opus", rate, frame_ms, channels))
    y = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    _check(y, rate, channels)


_FFMPEG_FORMAT = {"pcm_s16le": "s16le", "pcm_s16be": "s16be", "mulaw": "mulaw", "alaw": "alaw"}


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize(
    ("encoding", "rate", "frame_ms"),
    [
        *[(e, r, f) for e in ("pcm_s16le", "pcm_s16be") for r in (8000, 16000, 48000)
          for f in (10, 20, 100)],
        *[(e, 8000, f) for e in ("mulaw", "alaw") for f in (10, 20, 60)],
    ],
)  # fmt: skip
def test_pcm_and_g711(encoding: str, rate: int, frame_ms: int, channels: int) -> None:
    frames = _frames(encoding, rate, frame_ms, channels)
    width = 1 if encoding in ("mulaw", "alaw") else 2
    assert {len(f) for f in frames} == {rate * frame_ms // 1000 * channels * width}
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", _FFMPEG_FORMAT[encoding], "-ar", str(rate),
         "-ac", str(channels), "-i", "pipe:0", "-f", "s16le", "pipe:1"],
        input=b"".join(frames),
        capture_output=True,
        check=True,
    ).stdout  # fmt: skip
    _check(np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0, rate, channels)
