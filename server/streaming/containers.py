"""Streaming audio file formats for the HTTP speech API (sans-I/O).

A ``FileEncoder`` takes the frames a stream's pipeline made with its ``frames``
encoder (server/streaming/pipeline.py: the one framer, and the one pre-skip rule)
and returns the bytes of the file that are ready, so a response body can be
streamed sentence by sentence. MP3, AAC (ADTS) and FLAC go through PyAV
(FFmpeg's encoders, shipped in its wheel); Ogg Opus puts the pipeline's Opus
packets in the project's Ogg writer; WAV and raw PCM are written here. WAV is
hand-written because a streamed WAV needs its header first, before the length
is known (sizes set to the maximum, as other streaming TTS servers do), which the
standard library's ``wave`` cannot do on a socket.
"""

from __future__ import annotations

import io
import struct
from typing import ClassVar, Literal, Protocol

import numpy as np

from server.streaming.encoder import AudioEncoder, Float32Frames, OpusEncoder, PcmS16Encoder
from server.streaming.encoder import pre_skip as opus_pre_skip
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


_FRAME_MS = 20


class FileEncoder(Protocol):
    sample_rate: int
    frames: AudioEncoder  # what the stream's pipeline encodes its frames with

    def push(self, frames: list[bytes]) -> bytes: ...

    def finish(self, end_trim: int = 0) -> bytes:
        """The file's end; ``end_trim``: samples of padding after the audio (the
        pipeline's ``end_trim``), dropped where the format can say so."""
        ...


class RawPcm:
    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.frames: AudioEncoder = PcmS16Encoder(sample_rate, _FRAME_MS)

    def push(self, frames: list[bytes]) -> bytes:
        return b"".join(frames)

    def finish(self, end_trim: int = 0) -> bytes:
        return b""


class StreamingWav(RawPcm):
    def __init__(self, sample_rate: int) -> None:
        super().__init__(sample_rate)
        self._header_sent = False

    def push(self, frames: list[bytes]) -> bytes:
        head = b"" if self._header_sent else self._header()
        self._header_sent = True
        return head + super().push(frames)

    def finish(self, end_trim: int = 0) -> bytes:
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
        self.frames: AudioEncoder = Float32Frames(sample_rate, _FRAME_MS)
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

    def push(self, frames: list[bytes]) -> bytes:
        if not frames:
            return b""
        pcm = np.frombuffer(b"".join(frames), dtype=np.float32)
        # Mono float planar is the pipeline's float32 as is; PyAV converts it to what the
        # codec takes (FLAC: integers).
        frame = self._av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="fltp", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        self._pts += len(pcm)
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        return self._sink.take()

    def finish(self, end_trim: int = 0) -> bytes:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._sink.take()


class OggOpusFile:
    """Ogg Opus (what OpenAI calls ``opus``): the pipeline's Opus packets in Ogg pages."""

    def __init__(self, sample_rate: int = 48000, bitrate: int = 32000) -> None:
        self.sample_rate = sample_rate
        enc = OpusEncoder(sample_rate, _FRAME_MS, bitrate)
        self.frames: AudioEncoder = enc
        self._per_packet_48k = 48 * _FRAME_MS
        self._ogg = OggOpusWriter(sample_rate, pre_skip=opus_pre_skip(enc))
        self._started = False

    def push(self, frames: list[bytes]) -> bytes:
        out = [b"" if self._started else self._ogg.headers()]
        self._started = True
        for f in frames:
            out.append(self._ogg.packet(f, self._per_packet_48k))
        return b"".join(out)

    def finish(self, end_trim: int = 0) -> bytes:
        head = b"" if self._started else self._ogg.headers()
        self._started = True
        # The granule of the last page drops the padding: decoders return exactly the audio.
        return head + self._ogg.finish(trim_48k=end_trim * 48000 // self.sample_rate)


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
