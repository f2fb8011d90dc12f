"""Upload checks without I/O: every accepted format decodes (files made by ffmpeg from
real speech) to the right length; every refusal has its status, code and a message
that names the value and the limit; loudness is normalised."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import soxr

from server.engines.base import Audio, from_pcm16, to_pcm16
from server.voices import upload as u
from tests.voices.conftest import ACCEPTED, encode, extensible, riff_wav

LIMITS = u.UploadLimits()
WAV = ["-c:a", "pcm_s16le", "-f", "wav"]


def refused(data: bytes, limits: u.UploadLimits = LIMITS) -> u.UploadError:
    with pytest.raises(u.UploadError) as exc:
        u.prepare(data, limits)
    return exc.value


def speech_db(x: Audio) -> float:
    return u.dbfs(u.speech_level(x))


@pytest.mark.parametrize("fmt", sorted(ACCEPTED))
def test_each_accepted_format_decodes_to_its_length(
    fmt: str, samples: dict[str, bytes], speech: tuple[Audio, int]
) -> None:
    audio, rate = speech
    dec = u.prepare(samples[fmt], LIMITS)
    container, _, codec = fmt.partition("-")
    assert dec.container == container
    assert dec.codec.startswith(codec or container[:3] if fmt != "wav" else "pcm_")
    assert dec.audio.dtype == np.float32 and dec.audio.ndim == 1
    # mp3 from a pipe has no gapless header, so the encoder's padding stays (< 0.1 s)
    assert dec.duration_s == pytest.approx(len(audio) / rate, abs=0.1 if fmt == "mp3" else 0.03)
    # It is the same speech: its loudness envelope follows the original's.
    ref = np.asarray(soxr.resample(audio, rate, u.SAMPLE_RATE), dtype=np.float32)
    n = min(len(ref), len(dec.audio)) // 240 * 240
    a = u.window_levels(ref[:n])
    b = u.window_levels(dec.audio[:n])
    lag = int(np.argmax(np.correlate(b - b.mean(), a - a.mean(), "full"))) - (len(a) - 1)
    assert abs(lag) <= 10  # within 100 ms
    shifted = np.roll(b, -lag)
    assert np.corrcoef(a[20:-20], shifted[20:-20])[0, 1] > 0.9


def test_stereo_and_other_rates_become_mono_24k(speech: tuple[Audio, int]) -> None:
    audio, rate = speech
    for src_rate in (16000, 48000):
        x = np.asarray(soxr.resample(audio, rate, src_rate), dtype=np.float32)
        dec = u.prepare(encode(x, src_rate, WAV, channels=2), LIMITS)
        assert dec.source_rate == src_rate
        assert dec.duration_s == pytest.approx(len(audio) / rate, abs=0.01)


@pytest.mark.parametrize(
    ("args", "found"),
    [
        (["-c:a", "aac", "-movflags", "frag_keyframe+empty_moov", "-f", "mp4"], "QuickTime / MOV"),
        (["-c:a", "flac", "-f", "ogg"], "flac audio in the Ogg container"),
        (["-c:a", "adpcm_ms", "-f", "wav"], "adpcm_ms audio in the WAV container"),
        (["-c:a", "pcm_s16be", "-f", "au"], "Sun AU"),
    ],
)
def test_other_formats_are_refused_naming_the_accepted_ones(
    args: list[str], found: str, speech: tuple[Audio, int]
) -> None:
    audio, rate = speech
    exc = refused(encode(audio, rate, args))
    assert (exc.status, exc.code) == (415, "unsupported_format")
    assert found in exc.message
    for name in ("WAV", "FLAC", "MP3", "Ogg (Opus or Vorbis)", "WebM"):
        assert name in exc.message


def test_not_audio_at_all_is_415() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
    for data in (png, b"hello, this is text and not a recording\n" * 50):
        exc = refused(data)
        assert (exc.status, exc.code) == (415, "unsupported_format")
        assert "accepted formats: WAV" in exc.message


def test_damaged_files_of_accepted_kinds_are_422(samples: dict[str, bytes]) -> None:
    exc = refused(b"")
    assert (exc.status, exc.code, exc.message) == (
        422,
        "audio_undecodable",
        "the audio file is empty",
    )
    exc = refused(samples["wav"][:44])  # the header, no samples
    assert (exc.status, exc.code) == (422, "audio_undecodable")
    assert "WAV" in exc.message
    rng = np.random.default_rng(3)
    for fmt, keep in (("ogg-opus", 200), ("mp3", 600), ("flac", 100)):
        data = bytearray(samples[fmt])
        data[keep:] = rng.integers(0, 256, len(data) - keep, dtype=np.uint8).tobytes()
        exc = refused(bytes(data))
        assert (exc.status, exc.code) == (422, "audio_undecodable"), (fmt, exc.message)


def test_too_large() -> None:
    exc = refused(b"\0" * 5000, u.UploadLimits(max_bytes=4096))
    assert (exc.status, exc.code) == (413, "audio_too_large")
    assert "5000 bytes" in exc.message and "limit is 4096 bytes" in exc.message


def test_too_short_and_too_long(speech: tuple[Audio, int]) -> None:
    audio, rate = speech
    exc = refused(encode(audio[: int(1.5 * rate)], rate, WAV))
    assert (exc.status, exc.code) == (422, "audio_too_short")
    assert "1.50 s" in exc.message and "at least 3 s" in exc.message
    long = np.tile(audio, 6)  # about 36 s
    exc = refused(encode(long, rate, WAV))
    assert (exc.status, exc.code) == (422, "audio_too_long")
    assert f"{len(long) / rate:.1f} s long; at most 30 s" in exc.message
    exc = refused(encode(long, rate, ACCEPTED["ogg-opus"]))  # the length is Ogg's estimate
    assert exc.code == "audio_too_long" and "at most 30 s" in exc.message
    # The limits are settings.
    # (Piper's speech varies in length run to run: compare with this run's, not a constant)
    kept = u.prepare(encode(long, rate, WAV), u.UploadLimits(max_s=40)).duration_s
    assert abs(kept - len(long) / rate) < 0.05
    exc = refused(encode(audio, rate, WAV), u.UploadLimits(min_s=8))
    assert exc.code == "audio_too_short" and "at least 8 s" in exc.message


def test_a_small_file_that_expands_to_hours_is_cut_short() -> None:
    silence = np.zeros(16000 * 3600, dtype=np.float32)  # an hour, a few kB as FLAC
    data = encode(silence, 16000, ACCEPTED["flac"])
    assert len(data) < 2_000_000
    t0 = time.perf_counter()
    exc = refused(data)
    assert time.perf_counter() - t0 < 5
    assert exc.code == "audio_too_long" and "longer than 300 s; at most 30 s" in exc.message


def test_silence_is_refused() -> None:
    zeros = np.zeros(16000 * 5, dtype=np.float32)
    exc = refused(encode(zeros, 16000, WAV))
    assert (exc.status, exc.code) == (422, "audio_silent")
    assert "digital silence" in exc.message and "-50 dBFS" in exc.message
    hiss = np.random.default_rng(1).normal(0, 10 ** (-66 / 20), 16000 * 5).astype(np.float32)
    exc = refused(encode(hiss, 16000, ["-c:a", "pcm_f32le", "-f", "wav"]))
    assert exc.code == "audio_silent"
    assert "dBFS, below the -50 dBFS threshold" in exc.message
    # The threshold is a setting.
    assert u.prepare(
        encode(hiss, 16000, ["-c:a", "pcm_f32le", "-f", "wav"]), u.UploadLimits(silence_dbfs=-70)
    ).duration_s == pytest.approx(5)


def test_loudness_is_normalised(speech: tuple[Audio, int]) -> None:
    audio, rate = speech
    for scale in (0.03, 0.3, 1.0):  # speech at about -50, -30 and -20 dBFS in
        assert speech_db(np.asarray(audio * scale)) < -19
        dec = u.prepare(encode(audio * scale, rate, ACCEPTED["flac"]), LIMITS)
        assert speech_db(dec.audio) == pytest.approx(-20, abs=0.5)
        assert float(np.max(np.abs(dec.audio))) <= 10 ** (-1 / 20) + 1e-3
    # A click that would clip: the gain stops at the peak limit instead.
    clicky = np.asarray(audio * 0.05, dtype=np.float32)
    clicky[rate : rate + 20] = 0.9
    dec = u.prepare(encode(clicky, rate, WAV), LIMITS)
    assert float(np.max(np.abs(dec.audio))) == pytest.approx(10 ** (-1 / 20), abs=2e-3)
    assert speech_db(dec.audio) < -20
    dec = u.prepare(encode(audio, rate, WAV), u.UploadLimits(target_dbfs=-26))
    assert speech_db(dec.audio) == pytest.approx(-26, abs=0.5)


def test_pcm16_round_trip() -> None:
    x = np.sin(np.linspace(0, 100, 24000)).astype(np.float32) * 0.5
    y = from_pcm16(to_pcm16(x))
    assert y.dtype == np.float32 and np.max(np.abs(x - y)) < 1 / 32767


CHECK = {"piper": False, "f5": True}


def fields(**kw: str) -> u.Fields:
    args = {"name": "Alice", "transcript": "Some words.", "language": "en", "engine": "f5"}
    args.update(kw)
    return u.check_fields(
        args["name"],
        args["transcript"],
        args["language"],
        args["engine"],
        LIMITS,
        CHECK,
        ["en", "zh"],
    )


@pytest.mark.parametrize(
    ("kw", "code", "words"),
    [
        ({"name": "  "}, "name_invalid", "needs a name"),
        ({"name": "x" * 65}, "name_invalid", "65 characters; at most 64"),
        ({"name": "bad\x07name"}, "name_invalid", "control characters"),
        ({"transcript": " \n "}, "transcript_missing", "transcript is empty"),
        ({"transcript": "word " * 250}, "transcript_too_long", "1249 characters; at most 1000"),
        (
            {"language": "fr"},
            "unknown_language",
            "'fr' is not spoken by engine 'f5' on this node; it speaks en, zh",
        ),
        (
            {"engine": "piper"},
            "engine_cannot_clone",
            "'piper' cannot clone voices; upload with engine 'f5'",
        ),
        ({"engine": "bark"}, "unknown_engine", "no engine 'bark'"),
    ],
)
def test_field_errors(kw: dict[str, str], code: str, words: str) -> None:
    with pytest.raises(u.UploadError) as exc:
        fields(**kw)
    assert (exc.value.status, exc.value.code) == (422, code)
    assert words in exc.value.message


def test_f5_not_enabled_on_this_node() -> None:
    with pytest.raises(u.UploadError) as exc:
        u.check_fields("A", "Words.", "en", "f5", LIMITS, {"piper": False}, [])
    assert exc.value.code == "engine_not_enabled" and "f5_enabled" in exc.value.message


def test_fields_are_tidied() -> None:
    f = fields(name="  My   voice ", transcript=" Some\nwords. ", language="EN-us", engine="")
    assert f == u.Fields("My voice", "Some words.", "en", "f5")


def tone(seconds: float, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2").tobytes()


@pytest.mark.parametrize(
    ("tag", "extension", "bits", "status", "code", "words"),
    [
        (0x0000, b"", 16, 415, "unsupported_format", "format tag 0x0000 (WAVE_FORMAT_UNKNOWN"),
        (0x1234, b"", 16, 415, "unsupported_format", "format tag 0x1234 (an encoding"),
        (0xFFFE, b"", 16, 422, "audio_undecodable", "fmt chunk is 16 bytes, too short"),
        (0xFFFF, b"", 16, 415, "unsupported_format", "format tag 0xFFFF (WAVE_FORMAT_DEV"),
        (0xFFFE, extensible(0x1234), 16, 415, "unsupported_format", "sub-format 0x1234"),
        (0xFFFE, extensible(0xFFFF), 16, 415, "unsupported_format", "sub-format 0xFFFF"),
        (0x0003, b"", 16, 422, "audio_undecodable", "0x0003 (IEEE float) with 16 bits"),
        (0x0001, b"", 0, 422, "audio_undecodable", "0x0001 (PCM) with 0 bits per sample"),
    ],
)
def test_wav_streams_without_a_decoder_are_named(
    tag: int, extension: bytes, bits: int, status: int, code: str, words: str
) -> None:
    exc = refused(riff_wav(tag, tone(4), 16000, bits=bits, extension=extension))
    assert (exc.status, exc.code, exc.param) == (status, code, "audio")
    assert words in exc.message, exc.message


def test_the_byte_built_wav_decodes_as_pcm() -> None:
    """The builder makes good files: the refusals above are the format tag's doing."""
    for data in (
        riff_wav(0x0001, tone(4), 16000),
        riff_wav(0xFFFE, tone(4), 16000, extension=extensible(0x0001)),
    ):
        dec = u.prepare(data, LIMITS)
        assert dec.codec == "pcm_s16le" and dec.duration_s == pytest.approx(4.0, abs=0.01)


def test_any_wav_header_is_an_upload_error_never_a_crash() -> None:
    """Every combination of odd fmt fields: decoded, or refused with a 4xx UploadError
    (any other exception would be an HTTP 500)."""
    seen: set[tuple[int, str]] = set()
    for tag, channels, rate, bits in itertools.product(
        (0x0000, 0x0001, 0x0003, 0x0006, 0x0011, 0x1234, 0xFFFE, 0xFFFF),
        (0, 1, 2, 255),
        (0, 1, 16000, 4294967295),
        (0, 1, 13, 16, 64),
    ):
        data = riff_wav(tag, tone(0.5), rate, channels, bits)
        try:
            u.prepare(data, LIMITS)
        except u.UploadError as exc:
            assert 400 <= exc.status < 500 and exc.message
            seen.add((exc.status, exc.code))
    assert {(415, "unsupported_format"), (422, "audio_undecodable")} <= seen
