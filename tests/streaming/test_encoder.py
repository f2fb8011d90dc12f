from __future__ import annotations

import shlex
import shutil
import subprocess

import numpy as np
import numpy.typing as npt
import opuslib_next
import opuslib_next.api.ctl
import opuslib_next.api.encoder
import pytest

from server.streaming.encoder import (
    ENCODINGS,
    AlawEncoder,
    AudioEncoder,
    FlushingEncoder,
    Mp3Encoder,
    MulawEncoder,
    OggOpusEncoder,
    OpusEncoder,
    PcmF32Encoder,
    PcmS16BeEncoder,
    PcmS16Encoder,
    flush_encoder,
    make_encoder,
    pre_skip,
)


def _speechlike(rate: int, seconds: float) -> npt.NDArray[np.float32]:
    """Voiced-ish test signal: a gliding 120-240 Hz pitch with harmonics, syllable envelope."""
    t = np.arange(int(rate * seconds)) / rate
    f0 = 120 + 60 * (1 + np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    harmonics = sum(np.sin(k * phase) / k for k in range(1, 12) if k * 240 < rate / 2)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    return (0.2 * envelope * harmonics).astype(np.float32)


def _encode_all(enc: AudioEncoder, x: npt.NDArray[np.float32]) -> list[bytes]:
    n = enc.frame_samples
    usable = x[: x.size - x.size % n]
    return [enc.encode(frame) for frame in usable.reshape(-1, n)]


def _opus_decode(packets: list[bytes], rate: int, frame: int) -> npt.NDArray[np.float32]:
    dec = opuslib_next.Decoder(rate, 1)
    return np.concatenate(
        [np.frombuffer(dec.decode_float(p, frame), dtype=np.float32) for p in packets]
    )


# --- Opus ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [48000, 24000, 16000])
def test_opus_output_is_the_input_delayed_by_lookahead(rate: int) -> None:
    # CELT (application "audio", high bitrate) keeps the waveform, so the delay shows exactly.
    enc = OpusEncoder(rate, 20, bitrate=64000, application="audio")
    la = enc.lookahead
    assert la == round(0.0065 * rate)  # 6.5 ms
    x = _speechlike(rate, 1.0)
    packets = _encode_all(enc, x)
    y = _opus_decode(packets, rate, enc.frame_samples)
    assert y.size == len(packets) * enc.frame_samples == x.size
    lags = list(range(la - 30, la + 31))
    corrs = [np.corrcoef(y[lag:], x[: y.size - lag])[0, 1] for lag in lags]
    assert lags[int(np.argmax(corrs))] == la
    assert max(corrs) > 0.99


@pytest.mark.parametrize(("rate", "frame_ms"), [(48000, 20), (24000, 20), (16000, 10), (8000, 60)])
def test_opus_voip_decodes_close_to_the_input(rate: int, frame_ms: int) -> None:
    enc = OpusEncoder(rate, frame_ms, bitrate=32000)
    assert enc.frame_samples == rate * frame_ms // 1000
    x = _speechlike(rate, 1.2)
    packets = _encode_all(enc, x)
    y = _opus_decode(packets, rate, enc.frame_samples)
    la = enc.lookahead
    # SILK does not keep the waveform exactly (its best match sits up to 0.2 ms early), so
    # allow for that and a looser correlation than CELT's.
    corr = np.corrcoef(y[la:], x[: y.size - la])[0, 1]
    best = max(np.corrcoef(y[lag:], x[: y.size - lag])[0, 1] for lag in range(la - 12, la + 1))
    assert corr > 0.75
    assert best > 0.85
    assert 0.8 < np.std(y) / np.std(x) < 1.25


def test_opus_lowdelay_lookahead() -> None:
    assert OpusEncoder(48000, 20, 32000, application="lowdelay").lookahead == 120  # 2.5 ms
    assert OpusEncoder(48000, 20, 32000, application="audio").lookahead == 312


@pytest.mark.parametrize(
    ("bitrate", "complexity", "fec", "loss", "dtx"),
    [(6000, 0, False, 0, False), (24000, 5, True, 10, True), (300000, 10, True, 100, False)],
)
def test_opus_settings_reach_libopus(
    bitrate: int, complexity: int, fec: bool, loss: int, dtx: bool
) -> None:
    enc = OpusEncoder(
        24000, 20, bitrate, complexity=complexity, fec=fec, packet_loss_perc=loss, dtx=dtx
    )
    expected = {
        "bitrate": bitrate,
        "complexity": complexity,
        "inband_fec": int(fec),
        "packet_loss_perc": loss,
        "dtx": int(dtx),
    }
    assert enc.ctl_settings() == expected
    # Read back once more through the raw ctl entry points, independent of ctl_settings().
    ctl = opuslib_next.api.ctl
    state = enc._state

    def get(request: object) -> int:
        value: int = opuslib_next.api.encoder.encoder_ctl(state, request)
        return value

    assert get(ctl.get_bitrate) == bitrate
    assert get(ctl.get_complexity) == complexity
    assert get(ctl.get_inband_fec) == int(fec)
    assert get(ctl.get_packet_loss_perc) == loss
    assert get(ctl.get_dtx) == int(dtx)
    # OPUS_RESET_STATE keeps the configuration.
    enc.encode(np.zeros(enc.frame_samples, dtype=np.float32))
    enc.reset()
    assert enc.ctl_settings() == expected


def test_opus_settings_change_the_packets() -> None:
    x = _speechlike(24000, 1.0)
    silence = np.zeros(48000, dtype=np.float32)

    def mean_size(**kw: int | bool) -> float:
        enc = OpusEncoder(24000, 20, **kw)  # type: ignore[arg-type]
        return float(np.mean([len(p) for p in _encode_all(enc, x)]))

    small, large = mean_size(bitrate=12000), mean_size(bitrate=64000)
    assert large > 3 * small
    # FEC with expected loss spends bits on redundancy (at the same bitrate target the
    # primary gets fewer; the packets carry LBRR data the decoder can use).
    dec = opuslib_next.Decoder(24000, 1)
    with_fec = _encode_all(OpusEncoder(24000, 20, 24000, fec=True, packet_loss_perc=20), x)
    recovered = np.frombuffer(dec.decode_float(with_fec[20], 480, decode_fec=True), np.float32)
    assert np.abs(recovered).max() > 0.01  # LBRR for frame 19 was found in packet 20
    # DTX: silence collapses to packets of at most 2 bytes only when enabled.
    dtx_sizes = [len(p) for p in _encode_all(OpusEncoder(24000, 20, 24000, dtx=True), silence)]
    plain_sizes = [len(p) for p in _encode_all(OpusEncoder(24000, 20, 24000), silence)]
    # (DTX still sends one comfort-noise update every 400 ms.)
    assert sum(size <= 2 for size in dtx_sizes[10:]) >= 0.9 * len(dtx_sizes[10:])
    assert min(plain_sizes) > 2


def test_opus_caps_mono_bitrate_at_300k() -> None:
    enc = OpusEncoder(48000, 20, 510000)
    assert enc.ctl_settings()["bitrate"] == 300000


def test_opus_without_fec_has_no_redundancy() -> None:
    x = _speechlike(24000, 1.0)
    packets = _encode_all(OpusEncoder(24000, 20, 24000, fec=False, packet_loss_perc=20), x)
    dec = opuslib_next.Decoder(24000, 1)
    # Without LBRR, FEC decoding falls back to concealment of a never-decoded stream: silence.
    recovered = np.frombuffer(dec.decode_float(packets[20], 480, decode_fec=True), np.float32)
    assert np.abs(recovered).max() < 0.01


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"sample_rate": 44100}, "44100"),
        ({"frame_ms": 25}, "25"),
        ({"bitrate": 5999}, "5999"),
        ({"bitrate": 510001}, "510001"),
        ({"complexity": 11}, "11"),
        ({"packet_loss_perc": 101}, "101"),
        ({"application": "music"}, "music"),
    ],
)
def test_opus_rejects_bad_values(kwargs: dict[str, object], bad: str) -> None:
    args: dict[str, object] = {"sample_rate": 24000, "frame_ms": 20, "bitrate": 24000}
    args.update(kwargs)
    with pytest.raises(ValueError, match=bad):
        OpusEncoder(**args)  # type: ignore[arg-type]


def test_opus_checks_frame_size() -> None:
    enc = OpusEncoder(24000, 20, 24000)
    with pytest.raises(ValueError, match="480"):
        enc.encode(np.zeros(479, dtype=np.float32))


# --- PCM ----------------------------------------------------------------------------------


def _frames_of(values: npt.NDArray[np.int16], n: int) -> npt.NDArray[np.float32]:
    """int16 values as float frames (v / 32768), zero-padded to whole frames."""
    x = np.zeros(-(-values.size // n) * n, dtype=np.float32)
    x[: values.size] = values.astype(np.float32) / 32768
    return x.reshape(-1, n)


def test_pcm_is_exact_for_every_int16() -> None:
    values = np.arange(-32768, 32768, dtype=np.int16)
    enc = PcmS16Encoder(8000, 20)
    assert enc.frame_samples == 160 and enc.lookahead == 0 and enc.encoding == "pcm_s16le"
    out = b"".join(enc.encode(f) for f in _frames_of(values, 160))
    np.testing.assert_array_equal(np.frombuffer(out, dtype="<i2")[: values.size], values)


def test_pcm_clips_and_rounds() -> None:
    enc = PcmS16Encoder(1000, 10)
    x = np.array([1.5, 1.0, -1.0, -1.5, 0.6 / 32768, -0.6 / 32768, 0.4 / 32768, 0, 0.5, -0.5])
    out = np.frombuffer(enc.encode(x.astype(np.float32)), dtype="<i2")
    np.testing.assert_array_equal(out, [32767, 32767, -32768, -32768, 1, -1, 0, 0, 16384, -16384])


# --- µ-law --------------------------------------------------------------------------------


def _ulaw_reference(x: int) -> int:
    """G.711 µ-law, one sample, written from the standard's rule (ITU-T G.711 table 2 as
    coded in the ITU's G.191 reference software): 16-bit -> 14-bit sign-magnitude, add the
    bias 33, segment = highest set bit, 4-bit mantissa below it, all bits inverted."""
    magnitude = (-x - 1) >> 2 if x < 0 else x >> 2
    biased = min(magnitude + 33, 0x1FFF)
    segment = 0
    while biased >= (64 << segment):  # segment s covers [32 << s, 64 << s)
        segment += 1
    mantissa = (biased >> (segment + 1)) & 0x0F
    sign = 0x00 if x < 0 else 0x80
    code = sign | (segment << 4) | mantissa
    return code ^ 0x7F  # invert everything but the (already positive-is-1) sign bit


def _ulaw_reference_decode(code: int) -> int:
    c = ~code & 0xFF
    segment = (c >> 4) & 0x07
    mantissa = c & 0x0F
    magnitude = ((mantissa << 3) + 0x84 << segment) - 0x84
    return -magnitude if c & 0x80 else magnitude


def test_mulaw_reference_spot_values() -> None:
    assert _ulaw_reference(0) == 0xFF
    assert _ulaw_reference(-1) == 0x7F
    assert _ulaw_reference(32767) == 0x80
    assert _ulaw_reference(-32768) == 0x00


def test_mulaw_bit_exact_for_every_int16() -> None:
    values = np.arange(-32768, 32768, dtype=np.int16)
    enc = MulawEncoder(8000, 20)
    assert enc.frame_samples == 160 and enc.lookahead == 0 and enc.encoding == "mulaw"
    codes = b"".join(enc.encode(f) for f in _frames_of(values, 160))
    out = np.frombuffer(codes, dtype=np.uint8)[: values.size]
    expected = np.array([_ulaw_reference(int(v)) for v in values], dtype=np.uint8)
    mismatches = np.flatnonzero(out != expected)
    assert mismatches.size == 0, values[mismatches[:10]]


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_mulaw_ffmpeg_round_trip(tmp_path: object) -> None:
    rng = np.random.default_rng(3)
    t = np.arange(8000) / 8000
    x = (0.6 * np.sin(2 * np.pi * 440 * t) * np.linspace(0, 1, t.size)).astype(np.float32)
    x[:1600] = rng.uniform(-1, 1, 1600).astype(np.float32)
    enc = MulawEncoder(8000, 20)
    codes = b"".join(enc.encode(f) for f in x.reshape(-1, 160))
    decoded_bytes = subprocess.run(
        shlex.split("ffmpeg -v error -f mulaw -ar 8000 -ac 1 -i - -f s16le -"),
        input=codes,
        capture_output=True,
        check=True,
    ).stdout
    decoded = np.frombuffer(decoded_bytes, dtype="<i2").astype(np.int32)
    assert decoded.size == x.size
    # ffmpeg's decoder agrees with the G.711 expansion rule...
    expected = [_ulaw_reference_decode(c) for c in codes]
    np.testing.assert_array_equal(decoded, expected)
    # ...and gives back the input within half a quantisation step (plus the 14-bit cut), once
    # the input is clipped to µ-law's largest magnitude, 32124.
    s16 = np.clip(np.rint(x * 32768), -32124, 32124).astype(np.int32)
    segment = (~np.frombuffer(codes, np.uint8) >> 4) & 0x07
    step = 8 << segment.astype(np.int32)
    assert np.all(np.abs(decoded - s16) <= step // 2 + 4)
    snr = 10 * np.log10(np.sum(s16[1600:] ** 2.0) / np.sum((decoded - s16)[1600:] ** 2.0))
    assert snr > 30


# --- factory ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "bitrate"),
    [(8000, 16000), (12000, 16000), (16000, 24000), (24000, 32000), (48000, 32000)],
)
def test_make_encoder_default_bitrates(rate: int, bitrate: int) -> None:
    enc = make_encoder("opus", rate, 20, None)
    assert isinstance(enc, OpusEncoder)
    assert enc.ctl_settings()["bitrate"] == bitrate
    assert enc.encoding == "opus" and enc.sample_rate == rate


def test_make_encoder_passes_options() -> None:
    enc = make_encoder(
        "opus", 16000, 40, 20000, complexity=3, fec=True, packet_loss_perc=5, dtx=True
    )
    assert isinstance(enc, OpusEncoder)
    assert enc.frame_samples == 640
    assert enc.ctl_settings() == {
        "bitrate": 20000,
        "complexity": 3,
        "inband_fec": 1,
        "packet_loss_perc": 5,
        "dtx": 1,
    }
    pcm = make_encoder("pcm_s16le", 8000, 20, None)
    mu = make_encoder("mulaw", 8000, 20, 64000)
    assert isinstance(pcm, PcmS16Encoder) and isinstance(mu, MulawEncoder)
    for e in (enc, pcm, mu):
        assert isinstance(e, AudioEncoder)
    with pytest.raises(ValueError, match="flac"):
        make_encoder("flac", 8000, 20, None)
    with pytest.raises(ValueError, match="frame_ms"):
        make_encoder("pcm_s16le", 22050, 1, None)


@pytest.mark.parametrize(
    ("encoding", "rate", "cls", "bytes_per_frame"),
    [
        ("opus", 24000, OpusEncoder, None),
        ("ogg_opus", 24000, OggOpusEncoder, None),
        ("pcm_s16le", 24000, PcmS16Encoder, 960),
        ("pcm_s16be", 16000, PcmS16BeEncoder, 640),
        ("pcm_f32le", 24000, PcmF32Encoder, 1920),
        ("mulaw", 8000, MulawEncoder, 160),
        ("alaw", 8000, AlawEncoder, 160),
        ("mp3", 22050, Mp3Encoder, None),
    ],
)
def test_make_encoder_builds_every_encoding(
    encoding: str, rate: int, cls: type, bytes_per_frame: int | None
) -> None:
    assert encoding in ENCODINGS
    enc = make_encoder(encoding, rate, 20, None)
    assert isinstance(enc, cls) and isinstance(enc, AudioEncoder)
    assert (enc.encoding, enc.sample_rate, enc.frame_samples) == (encoding, rate, rate // 50)
    buffering = encoding in ("mp3", "ogg_opus")
    assert isinstance(enc, FlushingEncoder) == buffering
    if bytes_per_frame is not None:
        assert len(enc.encode(np.zeros(enc.frame_samples, np.float32))) == bytes_per_frame
    if not buffering:
        assert flush_encoder(enc) == b""
    assert pre_skip(enc) == (enc.lookahead * 48000 // rate if encoding == "opus" else 0)


def test_encodings_are_all_buildable() -> None:
    assert set(ENCODINGS) == {
        "opus", "ogg_opus", "pcm_s16le", "pcm_s16be", "pcm_f32le", "mulaw", "alaw", "mp3"
    }  # fmt: skip
    for name in ENCODINGS:
        assert make_encoder(name, 48000 if name != "alaw" else 8000, 20, None).encoding == name


def test_make_encoder_ogg_opus_and_mp3_options() -> None:
    enc = make_encoder("ogg_opus", 16000, 40, 20000, complexity=3, fec=True, packet_loss_perc=5)
    assert isinstance(enc, OggOpusEncoder)
    assert enc.frame_samples == 640 and enc.lookahead == enc.opus.lookahead
    assert enc.opus.ctl_settings() == {
        "bitrate": 20000,
        "complexity": 3,
        "inband_fec": 1,
        "packet_loss_perc": 5,
        "dtx": 0,
    }
    mp3 = make_encoder("mp3", 44100, 20, 192000)
    assert isinstance(mp3, Mp3Encoder) and mp3.bitrate == 192000
    with pytest.raises(ValueError, match="44100"):
        make_encoder("mp3", 44000, 20, None)
    with pytest.raises(ValueError, match="48000"):
        make_encoder("ogg_opus", 44100, 20, None)


def test_stereo_opus_and_interleaved_raw_carry_the_signal_in_both_channels() -> None:
    import opuslib_next

    from server.streaming.encoder import Interleaved, make_encoder

    t = np.arange(960 * 50) / 48000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    enc = make_encoder("opus", 48000, 20, None, channels=2)
    dec = opuslib_next.Decoder(48000, 2)
    pcm = b"".join(dec.decode(enc.encode(tone[i : i + 960]), 960) for i in range(0, len(tone), 960))
    st = np.frombuffer(pcm, dtype="<i2").reshape(-1, 2).astype(np.float32) / 32768.0
    assert np.corrcoef(st[2000:, 0], st[2000:, 1])[0, 1] > 0.99
    assert np.sqrt(np.mean(st[2000:, 0] ** 2)) > 0.15
    raw = make_encoder("pcm_s16le", 8000, 20, None, channels=2)
    assert isinstance(raw, Interleaved)
    out = np.frombuffer(raw.encode(tone[:160]), dtype="<i2").reshape(-1, 2)
    assert out.shape == (160, 2) and (out[:, 0] == out[:, 1]).all()
    g711 = make_encoder("alaw", 8000, 20, None, channels=2).encode(tone[:160])
    assert len(g711) == 320 and g711[0::2] == g711[1::2]
    for mono_only in ("mp3", "ogg_opus"):
        with pytest.raises(ValueError, match="mono only"):
            make_encoder(mono_only, 48000, 20, None, channels=2)
