from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from server.streaming.resampler import StreamResampler, default_quality


def _sine(freq: float, rate: int, seconds: float, amp: float = 0.5) -> npt.NDArray[np.float32]:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _stream(rs: StreamResampler, x: npt.NDArray[np.float32], piece: int) -> npt.NDArray[np.float32]:
    out = [rs.process(x[i : i + piece]) for i in range(0, x.size, piece)]
    out.append(rs.flush())
    return np.concatenate(out)


def _peak_hz(y: npt.NDArray[np.float32], rate: int) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    return float(np.argmax(spec) * rate / y.size)


RATE_PAIRS = [
    (22050, 48000),
    (22050, 24000),
    (22050, 16000),
    (22050, 8000),
    (24000, 48000),
    (24000, 8000),
    (16000, 48000),
]


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_sine_in_20ms_pieces_keeps_length_and_frequency(in_rate: int, out_rate: int) -> None:
    x = _sine(1000.0, in_rate, 1.0)
    rs = StreamResampler(in_rate, out_rate)
    y = _stream(rs, x, in_rate // 50)
    assert abs(y.size - x.size * out_rate / in_rate) <= 3
    assert y.dtype == np.float32
    assert abs(_peak_hz(y, out_rate) - 1000.0) <= 2.0
    # Not delayed: soxr compensates its filter delay, so output lines up with a direct sine.
    ref = _sine(1000.0, out_rate, y.size / out_rate)
    mid = slice(y.size // 4, 3 * y.size // 4)
    assert np.max(np.abs(y[mid] - ref[mid])) < 0.02


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
@pytest.mark.parametrize("piece", [1, 77, 441, 5000])
def test_output_length_tracks_input(in_rate: int, out_rate: int, piece: int) -> None:
    rs = StreamResampler(in_rate, out_rate)
    n = 7000
    x = np.random.default_rng(1).uniform(-0.5, 0.5, n).astype(np.float32)
    y = _stream(rs, x, piece)
    assert abs(y.size - n * out_rate / in_rate) <= 2


def test_flush_makes_it_reusable() -> None:
    rs = StreamResampler(22050, 16000)
    x = _sine(440.0, 22050, 0.5)
    first = _stream(rs, x, 441)
    second = _stream(rs, x, 441)
    np.testing.assert_array_equal(first, second)
    # Flushing with nothing pushed is a no-op.
    assert rs.flush().size == 0


def test_reset_drops_held_audio() -> None:
    rs = StreamResampler(24000, 8000)
    rs.process(np.ones(4800, dtype=np.float32))
    rs.reset()
    y = _stream(rs, np.zeros(2400, dtype=np.float32), 480)
    assert y.size == 800
    assert np.max(np.abs(y)) == 0.0


def test_passthrough_when_rates_match() -> None:
    rs = StreamResampler(24000, 24000)
    assert rs.passthrough
    x = _sine(300.0, 24000, 0.1)
    assert rs.process(x) is x
    assert rs.flush().size == 0
    # Non-float32 input is converted, not rejected.
    assert rs.process(x.astype(np.float64)).dtype == np.float32


def test_default_quality_is_low_delay() -> None:
    for in_rate, out_rate in RATE_PAIRS:
        assert default_quality(in_rate, out_rate) == "LQ"
    assert default_quality(44100, 48000) == "LQ"


@pytest.mark.parametrize(("in_rate", "out_rate"), [(22050, 48000), (22050, 16000), (24000, 48000)])
def test_default_quality_holds_back_little(in_rate: int, out_rate: int) -> None:
    # The chosen quality keeps the mean streaming hold within 15 ms for these conversions.
    rs = StreamResampler(in_rate, out_rate)
    piece = in_rate // 50
    got = 0
    holds = []
    x = np.zeros(piece, dtype=np.float32)
    for i in range(1, 101):
        got += rs.process(x).size
        holds.append(i * piece * out_rate / in_rate - got)
    assert np.mean(holds[10:]) / out_rate * 1000 <= 15.0


def test_downsampling_rejects_aliases() -> None:
    # 6 kHz does not exist at 8 kHz: the filter must remove it, not fold it to 2 kHz.
    x = _sine(6000.0, 22050, 0.5)
    y = _stream(StreamResampler(22050, 8000), x, 441)
    assert np.sqrt(np.mean(y[400:-400] ** 2)) < 1e-3


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="positive"):
        StreamResampler(0, 8000)
    with pytest.raises(ValueError, match="XQ"):
        StreamResampler(8000, 16000, quality="XQ")
