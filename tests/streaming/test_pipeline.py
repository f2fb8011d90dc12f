from __future__ import annotations

import shlex
import shutil
import subprocess

import numpy as np
import numpy.typing as npt
import opuslib_next
import pytest

from server.streaming.encoder import MulawEncoder, OpusEncoder, PcmS16Encoder, make_encoder
from server.streaming.pipeline import AudioPipeline
from server.streaming.resampler import StreamResampler

ODD_PIECES = [1, 333, 7, 1777, 64, 1000, 2]


def _speechlike(rate: int, seconds: float, f0: float = 140.0) -> npt.NDArray[np.float32]:
    t = np.arange(int(rate * seconds)) / rate
    sig = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8))
    return (0.25 * sig * (0.6 + 0.4 * np.sin(2 * np.pi * 2.5 * t))).astype(np.float32)


def _push_in_pieces(p: AudioPipeline, x: npt.NDArray[np.float32]) -> list[bytes]:
    out: list[bytes] = []
    pos = 0
    i = 0
    while pos < x.size:
        n = ODD_PIECES[i % len(ODD_PIECES)]
        out += p.push(x[pos : pos + n])
        pos += n
        i += 1
    return out


def _faded(x: npt.NDArray[np.float32], n: int) -> npt.NDArray[np.float32]:
    """Reference fade written independently: sin² ramps over the first and last n samples."""
    y = x.astype(np.float64)
    ramp = np.sin(0.5 * np.pi * np.arange(n) / n) ** 2
    k = min(n, y.size)
    y[:k] *= ramp[:k]
    y[y.size - k :] *= ramp[::-1][n - k :]
    return y.astype(np.float32)


def _reference(
    chunks: list[npt.NDArray[np.float32]], rate: int, out_rate: int, fade_ms: float
) -> npt.NDArray[np.float32]:
    """Each chunk faded, resampled on its own and flushed, then joined."""
    n = round(rate * fade_ms / 1000)
    parts = []
    for c in chunks:
        rs = StreamResampler(rate, out_rate)
        parts.append(np.concatenate([rs.process(_faded(c, n)), rs.flush()]))
    return np.concatenate(parts)


def _opus_decode(packets: list[bytes], rate: int, frame: int) -> npt.NDArray[np.float32]:
    dec = opuslib_next.Decoder(rate, 1)
    return np.concatenate(
        [np.frombuffer(dec.decode_float(p, frame), dtype=np.float32) for p in packets]
    )


@pytest.mark.parametrize(
    ("engine_rate", "opus_rate"), [(22050, 48000), (22050, 24000), (24000, 16000)]
)
def test_two_chunks_opus(engine_rate: int, opus_rate: int) -> None:
    enc = OpusEncoder(opus_rate, 20, 32000)
    p = AudioPipeline(engine_rate, enc)
    a = _speechlike(engine_rate, 0.7, 140)
    b = _speechlike(engine_rate, 0.45, 180)
    packets = _push_in_pieces(p, a)
    packets += p.end_chunk()
    packets += _push_in_pieces(p, b)
    packets += p.finish()

    ref = _reference([a, b], engine_rate, opus_rate, 4.0)
    r = ref.size
    assert abs(r - (a.size + b.size) * opus_rate / engine_rate) <= 2
    f = enc.frame_samples
    assert len(packets) == p.frames_out == -(-(r + enc.lookahead) // f)
    assert p.end_trim == len(packets) * f - r - enc.lookahead
    assert p.pending_samples == 0

    y = _opus_decode(packets, opus_rate, f)
    real = y[enc.lookahead : enc.lookahead + r]
    assert np.corrcoef(real, ref)[0, 1] > 0.8
    assert np.abs(y[enc.lookahead + r :]).max() < 0.05  # only padding after the end


def _loud_edges(rate: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    # Chunk A ends on a positive peak, chunk B starts on a negative one: a 1.6 jump if joined raw.
    t = np.arange(int(rate * 0.3)) / rate
    a = 0.8 * np.sin(2 * np.pi * 300 * t + np.pi / 2 - 2 * np.pi * 300 * t[-1])
    b = -0.8 * np.cos(2 * np.pi * 300 * t)
    return a.astype(np.float32), b.astype(np.float32)


def _join_jump(engine_rate: int, out_rate: int, fade_ms: float) -> tuple[float, float, int]:
    """Largest step at the join and in the rest of the decoded signal, and the join index."""
    enc = PcmS16Encoder(out_rate, 20)
    p = AudioPipeline(engine_rate, enc, fade_ms=fade_ms)
    a, b = _loud_edges(engine_rate)
    packets = _push_in_pieces(p, a) + p.end_chunk() + _push_in_pieces(p, b) + p.finish()
    y = np.frombuffer(b"".join(packets), dtype="<i2").astype(np.float64) / 32768
    join = round(a.size * out_rate / engine_rate)
    d = np.abs(np.diff(y))
    w = out_rate // 100  # 10 ms either side
    around = d[join - w : join + w].max()
    elsewhere = max(d[w : join - 2 * w].max(), d[join + 2 * w : join + b.size - 2 * w].max())
    return float(around), float(elsewhere), join


@pytest.mark.parametrize(
    ("engine_rate", "out_rate"), [(24000, 24000), (22050, 48000), (22050, 8000)]
)
def test_join_has_no_click(engine_rate: int, out_rate: int) -> None:
    around, own, _ = _join_jump(engine_rate, out_rate, fade_ms=4.0)
    # The fade's own slope adds a little to the sine's; a click would be ~20x the sine's step.
    assert around <= 1.3 * own
    # Control: without the fade the same join jumps by the full 1.6.
    raw_around, raw_own, _ = _join_jump(engine_rate, out_rate, fade_ms=0.0)
    assert raw_around > 1.0 and raw_around > 4 * raw_own


def test_join_has_no_click_through_opus() -> None:
    enc = OpusEncoder(48000, 20, 32000)
    p = AudioPipeline(24000, enc)
    a, b = _loud_edges(24000)
    packets = _push_in_pieces(p, a) + p.end_chunk() + _push_in_pieces(p, b) + p.finish()
    y = _opus_decode(packets, 48000, enc.frame_samples)[enc.lookahead :]
    join = a.size * 2
    d = np.abs(np.diff(y))
    assert d[join - 480 : join + 480].max() <= 1.3 * d[2000 : join - 2000].max()


def test_fade_shape_and_odd_pieces_exact() -> None:
    # Passthrough PCM: the output is exactly the faded input, whatever the piece sizes.
    p = AudioPipeline(24000, PcmS16Encoder(24000, 20), fade_ms=4.0)
    dc = np.full(2000, 0.5, dtype=np.float32)
    short = np.full(50, 0.5, dtype=np.float32)  # shorter than the 96-sample fade
    out = _push_in_pieces(p, dc) + p.end_chunk() + _push_in_pieces(p, short) + p.finish()
    y = np.frombuffer(b"".join(out), dtype="<i2").astype(np.float64) / 32768
    expected = np.concatenate([_faded(dc, 96), _faded(short, 96)])
    assert y.size == -(-expected.size // 480) * 480
    np.testing.assert_allclose(y[: expected.size], expected, atol=1.5 / 32768)
    assert not y[expected.size :].any()
    assert y[0] == 0 and y[1999] == 0 and y[2000] == 0 and y[2049] == 0
    assert p.end_trim == y.size - expected.size


def test_caller_array_is_not_modified() -> None:
    p = AudioPipeline(22050, PcmS16Encoder(8000, 20))
    x = np.full(5000, 0.5, dtype=np.float32)
    p.push(x)
    p.end_chunk()
    assert np.all(x == 0.5)


def test_pcm_8k_matches_reference() -> None:
    enc = make_encoder("pcm_s16le", 8000, 20, None)
    p = AudioPipeline(22050, enc)
    a = _speechlike(22050, 0.5)
    b = _speechlike(22050, 0.33, 200)
    packets = _push_in_pieces(p, a) + p.end_chunk() + _push_in_pieces(p, b) + p.finish()
    ref = _reference([a, b], 22050, 8000, 4.0)
    assert len(packets) == p.frames_out == -(-ref.size // 160)
    assert all(len(pk) == 320 for pk in packets)
    y = np.frombuffer(b"".join(packets), dtype="<i2").astype(np.float64) / 32768
    np.testing.assert_allclose(y[: ref.size], ref, atol=1 / 32768)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_mulaw_8k_decodes_with_ffmpeg() -> None:
    p = AudioPipeline(22050, MulawEncoder(8000, 20))
    t = np.arange(22050) / 22050
    a = (0.5 * np.sin(2 * np.pi * 700 * t[:11025])).astype(np.float32)
    b = (0.5 * np.sin(2 * np.pi * 700 * t[11025:])).astype(np.float32)
    packets = _push_in_pieces(p, a) + p.end_chunk() + _push_in_pieces(p, b) + p.finish()
    assert len(packets) == 50 and all(len(pk) == 160 for pk in packets)
    pcm = subprocess.run(
        shlex.split("ffmpeg -v error -f mulaw -ar 8000 -ac 1 -i - -f s16le -"),
        input=b"".join(packets),
        capture_output=True,
        check=True,
    ).stdout
    y = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768
    ref = _reference([a, b], 22050, 8000, 4.0)
    assert y.size == 8000 == ref.size
    snr = 10 * np.log10(np.sum(ref**2) / np.sum((y - ref) ** 2))
    assert snr > 30
    spec = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    assert abs(np.argmax(spec) * 8000 / y.size - 700) <= 2


def test_reset_drops_everything() -> None:
    p = AudioPipeline(22050, PcmS16Encoder(8000, 20))
    p.push(np.full(3000, 0.9, dtype=np.float32))  # some frames out, some held at every stage
    before = p.frames_out
    assert before > 0
    p.reset()
    assert p.pending_samples == 0
    assert p.finish() == []  # nothing left to send
    out = p.push(np.zeros(2205, dtype=np.float32)) + p.finish()
    y = np.frombuffer(b"".join(out), dtype="<i2")
    assert y.size == 800 and not y.any()
    assert p.frames_out == before + 5


def test_reset_opus_encoder_state() -> None:
    enc = OpusEncoder(24000, 20, 32000)
    p = AudioPipeline(24000, enc)
    p.push(_speechlike(24000, 0.5))
    p.reset()
    out = p.push(np.zeros(4800, dtype=np.float32)) + p.finish()
    assert len(out) == 11  # 10 frames + 1 to flush the lookahead
    y = _opus_decode(out, 24000, enc.frame_samples)
    assert np.abs(y).max() < 1e-3  # nothing of the dropped audio leaks out


def test_empty_chunks_and_finish() -> None:
    enc = OpusEncoder(48000, 20, 32000)
    p = AudioPipeline(24000, enc)
    assert p.end_chunk() == []
    assert p.push(np.zeros(0, dtype=np.float32)) == []
    assert p.finish() == []
    assert p.frames_out == 0
    # A second utterance after finish() starts cleanly.
    out = p.push(np.full(480, 0.1, dtype=np.float32)) + p.finish()
    assert len(out) == 2  # 960 samples at 48 kHz + 312 lookahead -> 2 frames
    with pytest.raises(ValueError, match="fade_ms"):
        AudioPipeline(24000, enc, fade_ms=-1)
