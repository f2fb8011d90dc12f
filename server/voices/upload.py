"""Checking an uploaded voice, without I/O: bytes and form fields in, a mono float32
reference at 24 kHz out, or an ``UploadError`` that names what was wrong.

The container is whatever FFmpeg (PyAV) finds in the bytes; the file name and the
content type the client sent are never trusted. Accepted: WAV (PCM), FLAC, MP3, Ogg
(Opus or Vorbis) and WebM/Matroska with Opus or Vorbis (what browsers' MediaRecorder
makes). Anything else is a 415 naming these.

A stream FFmpeg has no decoder for (PyAV then gives it no codec context) is refused
naming what the file says it holds: for WAV, the header's format tag (``wav_format``
reads the ``fmt `` chunk), e.g. 0x0000 (WAVE_FORMAT_UNKNOWN), 0xFFFF (development) or
any tag no decoder knows is a 415; PCM or float with a sample width that does not
exist, or 0xFFFE (WAVE_FORMAT_EXTENSIBLE) without the extension that names the
sample format, is a damaged header, a 422.

Loudness. References arrive at any level: a laptop microphone in a browser is often
30 dB quieter than a mastered file. The reference is therefore scaled so that its
speech (10 ms windows within 30 dB of the loudest, i.e. pauses left out) has an RMS of
``target_dbfs`` (-20 dBFS by default), with the gain capped so no peak rises above
``peak_dbfs`` (-1 dBFS): a plain gain, no compressor, so nothing is distorted. F5's own
preparation RMS-normalises a quiet reference up to 0.1 (-20 dBFS over the whole clip)
and then scales everything it generates back down by the same factor; without this
step a quiet upload would speak quietly forever. With it, every uploaded voice speaks
at about the same level, and the stored 16-bit audio uses its range well.

Past the length limit, decoded frames are only counted (to name the length), and
decoding stops at ten times the limit, so a small file that expands to hours (a FLAC
of silence) costs little.
"""

from __future__ import annotations

import io
import math
import struct
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from av.audio.frame import AudioFrame
    from av.audio.stream import AudioStream
    from av.container import InputContainer

Audio = npt.NDArray[np.float32]

SAMPLE_RATE = 24000  # F5's rate: the reference is stored at it
# What the demo page offers in its file picker, and what error messages name.
FORMATS = ("wav", "flac", "mp3", "ogg", "opus", "webm")
FORMATS_TEXT = "WAV (PCM), FLAC, MP3, Ogg (Opus or Vorbis) and WebM (Opus or Vorbis)"
# FFmpeg demuxer name -> codecs accepted inside it.
_ACCEPTED: dict[str, tuple[str, ...]] = {
    "wav": ("pcm_",),
    "flac": ("flac",),
    "mp3": ("mp3", "mp3float"),
    "ogg": ("opus", "vorbis"),
    "matroska,webm": ("opus", "vorbis"),
}
_KIND = {"wav": "WAV", "flac": "FLAC", "mp3": "MP3", "ogg": "Ogg", "matroska,webm": "WebM"}
_WIN_S = 0.01
_COUNT_FACTOR = 10
_SPEECH_RANGE_DB = 30.0  # windows this far below the loudest are pauses, not speech


class UploadError(Exception):
    """A refused upload: HTTP ``status``, a stable ``code`` and a message that names
    the value and the limit."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class UploadLimits:
    max_bytes: int = 10 * 1024 * 1024
    min_s: float = 3.0
    max_s: float = 30.0
    silence_dbfs: float = -50.0
    target_dbfs: float = -20.0
    peak_dbfs: float = -1.0
    max_name_chars: int = 64
    max_transcript_chars: int = 1000


@dataclass(frozen=True, slots=True)
class Fields:
    name: str
    transcript: str
    language: str
    engine: str


@dataclass(frozen=True, slots=True)
class Decoded:
    audio: Audio  # mono float32 at SAMPLE_RATE
    container: str  # e.g. "ogg"
    codec: str  # e.g. "opus"
    source_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def check_size(n: int, limits: UploadLimits) -> None:
    if n > limits.max_bytes:
        raise UploadError(
            413,
            "audio_too_large",
            f"the upload is {n} bytes; the limit is {limits.max_bytes} bytes "
            f"({limits.max_bytes / 1048576:.1f} MiB)",
            "audio",
        )


def _text(value: str) -> str:
    """Whitespace collapsed, control characters refused."""
    return " ".join(value.split())


def check_fields(
    name: str,
    transcript: str,
    language: str,
    engine: str,
    limits: UploadLimits,
    engines: dict[str, bool],
    languages: list[str],
) -> Fields:
    """The form fields, checked. ``engines``: engine name -> whether it can clone
    (engines on this node); ``languages``: what the cloning engine speaks."""
    engine = engine.strip().lower() or "f5"
    if engine not in engines:
        if engine == "f5":
            raise UploadError(
                422,
                "engine_not_enabled",
                "engine 'f5' (voice cloning) is not enabled on this node (setting "
                "f5_enabled); upload to a node that runs it",
                "engine",
            )
        raise UploadError(
            422,
            "unknown_engine",
            f"no engine {engine!r}; voices are cloned by engine 'f5'",
            "engine",
        )
    if not engines[engine]:
        raise UploadError(
            422,
            "engine_cannot_clone",
            f"engine {engine!r} cannot clone voices; upload with engine 'f5'",
            "engine",
        )
    name = _text(name)
    if not name:
        raise UploadError(422, "name_invalid", "the voice needs a name (field 'name')", "name")
    if len(name) > limits.max_name_chars:
        raise UploadError(
            422,
            "name_invalid",
            f"the name is {len(name)} characters; at most {limits.max_name_chars}",
            "name",
        )
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise UploadError(422, "name_invalid", "the name contains control characters", "name")
    transcript = _text(transcript)
    if not transcript:
        raise UploadError(
            422,
            "transcript_missing",
            "the transcript is empty: give the words spoken in the audio (field "
            "'transcript'); the voice is learned from both",
            "transcript",
        )
    if len(transcript) > limits.max_transcript_chars:
        raise UploadError(
            422,
            "transcript_too_long",
            f"the transcript is {len(transcript)} characters; at most "
            f"{limits.max_transcript_chars}",
            "transcript",
        )
    language = language.strip().lower() or (languages[0] if languages else "")
    if language.split("-")[0] not in languages:
        raise UploadError(
            422,
            "unknown_language",
            f"language {language!r} is not spoken by engine {engine!r} on this node; it "
            f"speaks {', '.join(languages) or 'nothing'}",
            "language",
        )
    return Fields(name, transcript, language.split("-")[0], engine)


def _unsupported(found: str, hint: str = "") -> UploadError:
    return UploadError(
        415,
        "unsupported_format",
        f"the upload is {found}, which is not accepted; {hint}accepted formats: {FORMATS_TEXT}",
        "audio",
    )


@dataclass(frozen=True, slots=True)
class WavFormat:
    """The ``fmt `` chunk of a WAV file, as the file states it."""

    tag: int  # wFormatTag
    channels: int
    sample_rate: int
    bits: int  # wBitsPerSample
    size: int  # the chunk's length in bytes (16, 18 or 40 in practice)
    sub_tag: int | None  # WAVE_FORMAT_EXTENSIBLE: the sub-format GUID's first two bytes


_PCM, _FLOAT, _EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
_TAG_NAMES = {
    0x0000: "WAVE_FORMAT_UNKNOWN: the header does not say how the samples are encoded",
    0x0001: "PCM",
    0x0003: "IEEE float",
    0xFFFE: "WAVE_FORMAT_EXTENSIBLE",
    0xFFFF: "WAVE_FORMAT_DEVELOPMENT: a private, unregistered encoding",
}
_WAV_HINT = (
    "WAV must hold PCM (format tag 0x0001, 0x0003 for float, or 0xFFFE with a PCM sub-format); "
)


def wav_format(data: bytes) -> WavFormat | None:
    """The ``fmt `` chunk of a RIFF/RF64 WAVE file, or None when there is none to read."""
    if data[:4] not in (b"RIFF", b"RF64", b"BW64") or data[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if cid == b"fmt ":
            body = data[pos + 8 : pos + 8 + size]
            if len(body) < 16:
                return None
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            # WAVEFORMATEXTENSIBLE: cbSize, valid bits, channel mask, then the GUID at 24
            sub = int.from_bytes(body[24:26], "little") if len(body) >= 26 else None
            return WavFormat(tag, channels, rate, bits, size, sub if tag == _EXTENSIBLE else None)
        pos += 8 + size + (size & 1)
    return None


def _tag(tag: int) -> str:
    name = _TAG_NAMES.get(tag, "an encoding this server has no decoder for")
    return f"0x{tag:04X} ({name})"


def _no_decoder(kind: str, data: bytes) -> UploadError:
    """The refusal for a stream FFmpeg found but has no decoder for (no codec context):
    named from the file's own header where it is a WAV."""
    f = wav_format(data) if kind == "WAV" else None
    if f is None:
        return _unsupported(f"{kind} audio in an encoding this server has no decoder for")
    tag = f.tag if f.sub_tag is None else f.sub_tag
    if f.tag == _EXTENSIBLE and f.sub_tag is None:
        return UploadError(
            422,
            "audio_undecodable",
            f"the WAV header's format tag is {_tag(f.tag)}, but its fmt chunk is {f.size} "
            "bytes, too short to hold the sub-format that says how the samples are "
            "encoded (40 bytes); the file is damaged or was written wrongly",
            "audio",
        )
    described = (
        f"format tag {_tag(f.tag)}"
        if f.sub_tag is None
        else f"format tag {_tag(f.tag)} with sub-format {_tag(f.sub_tag)}"
    )
    if tag in (_PCM, _FLOAT):
        return UploadError(
            422,
            "audio_undecodable",
            f"the WAV header says {described} with {f.bits} bits per sample, "
            f"{f.channels} channel(s) at {f.sample_rate} Hz, which does not decode (PCM has "
            "8, 16, 24 or 32 bits per sample, float 32 or 64); the header is damaged",
            "audio",
        )
    return _unsupported(f"WAV audio with {described}", _WAV_HINT)


def sniff(data: bytes) -> str | None:
    """The accepted format ``data`` starts like (its magic bytes), for a file FFmpeg
    could not open: a damaged file of an accepted kind is a 422, not a 415."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "WAV"
    if data[:4] == b"fLaC":
        return "FLAC"
    if data[:4] == b"OggS":
        return "Ogg"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "WebM"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "MP3"
    return None


def decode(data: bytes, limits: UploadLimits) -> Decoded:
    """Decode ``data`` to mono float32 at 24 kHz. Raises UploadError (415 for a format
    that is not accepted, 422 for audio that does not decode or is too long)."""
    import soxr

    check_size(len(data), limits)
    if not data:
        raise UploadError(422, "audio_undecodable", "the audio file is empty", "audio")
    with _open(data) as container:
        stream, kind, codec, rate = _audio_stream(container, data)
        reading = _Reading(rate, limits.max_s)
        _read(container, stream, reading, f"the {kind} ({codec}) audio")
    reading.check(kind, limits)
    x = np.concatenate(reading.parts)
    if not np.all(np.isfinite(x)):
        raise UploadError(422, "audio_undecodable", "the audio has invalid samples", "audio")
    if rate != SAMPLE_RATE:
        x = np.asarray(soxr.resample(x, rate, SAMPLE_RATE, quality="HQ"), dtype=np.float32)
    return Decoded(audio=x, container=kind.lower(), codec=codec, source_rate=rate)


def _open(data: bytes) -> InputContainer:
    """FFmpeg's demuxer on ``data``; a file it cannot open is a 415, or a 422 where its
    magic bytes say it is of an accepted kind (then it is damaged)."""
    import av

    try:
        return av.open(io.BytesIO(data), mode="r")
    except av.FFmpegError as exc:
        kind = sniff(data)
        if kind is None:
            raise UploadError(
                415,
                "unsupported_format",
                f"the upload is not in a format this server reads; accepted formats: "
                f"{FORMATS_TEXT}",
                "audio",
            ) from None
        raise UploadError(
            422,
            "audio_undecodable",
            f"the upload looks like {kind} but does not decode ({exc.strerror or exc}); "
            "it may be truncated or damaged",
            "audio",
        ) from None


def _audio_stream(container: InputContainer, data: bytes) -> tuple[AudioStream, str, str, int]:
    """The file's first audio stream, its container's kind ("WAV"...), its codec and its
    sample rate, once they are all accepted."""
    fmt = container.format.name
    if fmt not in _ACCEPTED:
        raise _unsupported(f"a {container.format.long_name or fmt} file")
    kind = _KIND[fmt]
    if not container.streams.audio:
        raise UploadError(422, "audio_undecodable", f"the {kind} file has no audio stream", "audio")
    stream = container.streams.audio[0]
    if stream.codec_context is None:  # FFmpeg has no decoder for what the file holds
        raise _no_decoder(kind, data)
    codec = stream.codec_context.name
    if not codec.startswith(_ACCEPTED[fmt]):
        raise _unsupported(f"{codec} audio in the {kind} container")
    rate = int(stream.codec_context.sample_rate or stream.sample_rate or 0)
    if rate <= 0:
        raise UploadError(422, "audio_undecodable", "the audio stream has no sample rate", "audio")
    return stream, kind, codec, rate


class _Reading:
    """The samples of one stream as it is decoded, and how far decoding went: up to a
    second past the length limit is kept (that proves it too long); past that, frames
    are only counted (to name the length), up to ten times the limit."""

    def __init__(self, rate: int, max_s: float) -> None:
        self.rate = rate
        self.keep = int(max_s * rate) + rate
        self.count = int(max_s * rate) * _COUNT_FACTOR
        self.parts: list[Audio] = []
        self.kept = 0
        self.total = 0

    def add(self, frames: list[AudioFrame]) -> None:
        for out in frames:
            a = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            self.parts.append(a)
            self.kept += len(a)

    def check(self, kind: str, limits: UploadLimits) -> None:
        """Refuses audio found too long, or that held no samples."""
        if self.total > self.count:
            raise UploadError(
                422,
                "audio_too_long",
                f"the audio is longer than {self.count / self.rate:g} s; "
                f"at most {limits.max_s:g} s",
                "audio",
            )
        if self.kept > self.keep:
            raise UploadError(
                422,
                "audio_too_long",
                f"the audio is {self.total / self.rate:.1f} s long; at most {limits.max_s:g} s",
                "audio",
            )
        if self.kept == 0:
            raise UploadError(
                422, "audio_undecodable", f"the {kind} file holds no audio samples", "audio"
            )


def _read(container: InputContainer, stream: AudioStream, reading: _Reading, what: str) -> None:
    """Decodes ``stream`` into ``reading``, resampled to mono float32 at its own rate."""
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=reading.rate)
    try:
        for frame in container.decode(stream):
            reading.total += frame.samples
            if reading.total > reading.count:
                break
            if reading.kept <= reading.keep:
                reading.add(resampler.resample(frame))
        if reading.kept <= reading.keep:
            reading.add(resampler.resample(None))
    except av.FFmpegError as exc:
        raise UploadError(
            422, "audio_undecodable", f"{what} does not decode: {exc}", "audio"
        ) from None


def window_levels(x: Audio) -> npt.NDArray[np.float64]:
    """RMS of each 10 ms window."""
    win = int(SAMPLE_RATE * _WIN_S)
    n = len(x) // win
    if n == 0:
        return np.zeros(0)
    w = x[: n * win].astype(np.float64).reshape(n, win)
    levels: npt.NDArray[np.float64] = np.sqrt(np.mean(w * w, axis=1))
    return levels


def dbfs(v: float) -> float:
    return 20 * math.log10(v) if v > 0 else -math.inf


def check_audio(dec: Decoded, limits: UploadLimits) -> None:
    """Duration within the limits, and not silence."""
    s = dec.duration_s
    if s < limits.min_s:
        raise UploadError(
            422,
            "audio_too_short",
            f"the audio is {s:.2f} s long; at least {limits.min_s:g} s of speech is needed",
            "audio",
        )
    if s > limits.max_s:
        raise UploadError(
            422,
            "audio_too_long",
            f"the audio is {s:.1f} s long; at most {limits.max_s:g} s",
            "audio",
        )
    lv = window_levels(dec.audio)
    loudest = dbfs(float(lv.max())) if lv.size else -math.inf
    if loudest < limits.silence_dbfs:
        shown = "digital silence" if loudest == -math.inf else f"{loudest:.1f} dBFS"
        raise UploadError(
            422,
            "audio_silent",
            f"the audio is silent: its loudest 10 ms is {shown}, below the "
            f"{limits.silence_dbfs:g} dBFS threshold",
            "audio",
        )


def speech_level(x: Audio) -> float:
    """RMS over the speech windows (within 30 dB of the loudest)."""
    lv = window_levels(x)
    if lv.size == 0:
        return 0.0
    speech = lv[lv >= lv.max() * 10 ** (-_SPEECH_RANGE_DB / 20)]
    return float(np.sqrt(np.mean(speech * speech)))


def normalise(x: Audio, limits: UploadLimits) -> Audio:
    """Speech RMS to ``target_dbfs``, peak at most ``peak_dbfs`` (see the module
    docstring)."""
    level = speech_level(x)
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if level <= 0 or peak <= 0:
        return x
    gain = min(10 ** (limits.target_dbfs / 20) / level, 10 ** (limits.peak_dbfs / 20) / peak)
    y: Audio = np.clip(x * np.float32(gain), -1.0, 1.0).astype(np.float32)
    return y


def prepare(data: bytes, limits: UploadLimits) -> Decoded:
    """Decode, check and normalise an uploaded reference. Blocks: run it on a thread."""
    dec = decode(data, limits)
    check_audio(dec, limits)
    return Decoded(
        audio=normalise(dec.audio, limits),
        container=dec.container,
        codec=dec.codec,
        source_rate=dec.source_rate,
    )
