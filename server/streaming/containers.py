"""Streaming audio file formats for the HTTP speech API (sans-I/O).

A ``FileEncoder`` takes 16-bit mono PCM as it is produced and returns the bytes
of the file that are ready, so a response body can be streamed sentence by
sentence. MP3, AAC (ADTS) and FLAC go through PyAV (FFmpeg's encoders, shipped in
its wheel); Ogg Opus uses the project's own Opus encoder and Ogg writer; WAV and
raw PCM are written here. WAV is hand-written because a streamed WAV needs its
header first, before the length is known (sizes set to the maximum, as other
streaming TTS servers do), which the standard library's ``wave`` cannot do on a
socket.
"""

from __future__ import annotations

import io
import struct
from typing import ClassVar, Literal, Protocol

import numpy as np
import numpy.typing as npt

from server.streaming.encoder import OpusEncoder
from server.streaming.framer import Framer
from server.streaming.ogg import OggOpusWriter

ResponseFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]

MEDIA_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


class FileEncoder(Protocol):
    sample_rate: int

    def push(self, pcm: npt.NDArray[np.int16]) -> bytes: ...

    def finish(self) -> bytes: ...


class RawPcm:
    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate

    def push(self, pcm: npt.NDArray[np.int16]) -> bytes:
        return pcm.astype("<i2", copy=False).tobytes()

    def finish(self) -> bytes:
        return b""


class StreamingWav(RawPcm):
    def __init__(self, sample_rate: int) -> None:
        super().__init__(sample_rate)
        self._header_sent = False

    def push(self, pcm: npt.NDArray[np.int16]) -> bytes:
        head = b"" if self._header_sent else self._header()
        self._header_sent = True
        return head + super().push(pcm)

    def finish(self) -> bytes:
        return b"" if self._header_sent else self._header()

    def _header(self) -> bytes:
        unknown = 0xFFFFFFFF
        return (
            b"RIFF"
            + struct.pack("<I", unknown)
            + b"WAVE"
            + b"fmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, self.sample_rate, self.sample_rate * 2, 2, 16)
            + b"data"
            + struct.pack("<I", unknown)
        )


class _Sink(io.RawIOBase):
    """A write-only, non-seekable file that hands out what was written since last asked."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self._parts.append(bytes(b))
        return len(b)

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class AvEncoder:
    """MP3 / AAC (ADTS) / FLAC through PyAV, muxed to a non-seekable stream."""

    _CODECS: ClassVar[dict[str, tuple[str, str]]] = {
        "mp3": ("mp3", "libmp3lame"),
        "aac": ("adts", "aac"),
        "flac": ("flac", "flac"),
    }

    def __init__(self, fmt: str, sample_rate: int, bitrate: int = 64000) -> None:
        import av

        self.sample_rate = sample_rate
        container_fmt, codec = self._CODECS[fmt]
        self._sink = _Sink()
        self._av = av
        self._container = av.open(self._sink, mode="w", format=container_fmt)
        stream = self._container.add_stream(codec, rate=sample_rate, layout="mono")
        assert isinstance(stream, av.AudioStream)
        self._stream = stream
        if fmt != "flac":
            self._stream.bit_rate = bitrate
        self._pts = 0

    def push(self, pcm: npt.NDArray[np.int16]) -> bytes:
        if len(pcm) == 0:
            return b""
        frame = self._av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        self._pts += len(pcm)
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        return self._sink.take()

    def finish(self) -> bytes:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._sink.take()


class OggOpusFile:
    """Ogg Opus (what OpenAI calls ``opus``): 48 kHz Opus packets in Ogg pages."""

    def __init__(self, sample_rate: int = 48000, bitrate: int = 32000) -> None:
        self.sample_rate = sample_rate
        self._enc = OpusEncoder(sample_rate, 20, bitrate)
        self._framer = Framer(self._enc.frame_samples)
        self._per_packet_48k = 960
        pre_skip = self._enc.lookahead * 48000 // sample_rate
        self._ogg = OggOpusWriter(sample_rate, pre_skip=pre_skip)
        self._started = False
        self._samples = 0

    def push(self, pcm: npt.NDArray[np.int16]) -> bytes:
        out = [b"" if self._started else self._ogg.headers()]
        self._started = True
        self._samples += len(pcm)
        frames = self._framer.push(pcm.astype(np.float32) / np.float32(32768.0))
        for f in frames:
            out.append(self._ogg.packet(self._enc.encode(f), self._per_packet_48k))
        return b"".join(out)

    def finish(self) -> bytes:
        out = [b"" if self._started else self._ogg.headers()]
        self._started = True
        pad_before = self._framer.pending
        tail = self._framer.finish(min_pad=self._enc.lookahead)
        for f in tail:
            out.append(self._ogg.packet(self._enc.encode(f), self._per_packet_48k))
        # Trim the padding so decoders return exactly the audio that was pushed.
        padded = len(tail) * self._enc.frame_samples - pad_before
        trim = max(0, padded - self._enc.lookahead) * 48000 // self.sample_rate
        out.append(self._ogg.finish(trim_48k=trim))
        return b"".join(out)


def file_encoder(fmt: str, sample_rate: int = 24000) -> FileEncoder:
    if fmt == "pcm":
        return RawPcm(sample_rate)
    if fmt == "wav":
        return StreamingWav(sample_rate)
    if fmt == "opus":
        return OggOpusFile(48000)
    if fmt in AvEncoder._CODECS:
        return AvEncoder(fmt, sample_rate)
    raise ValueError(f"unknown response_format {fmt!r}; use one of {', '.join(MEDIA_TYPES)}")
