"""Frame encoders and the factory that picks one for a stream's encoding.

Opus (libopus via opuslib_next) and its streamed Ogg pages are here; linear PCM is in
server/streaming/pcm.py, G.711 µ-law/A-law in g711.py and MP3 (LAME) in mp3.py, all
re-exported from this module.

Buffering encoders (``mp3``, ``ogg_opus``) may return b"" from ``encode`` and have a
``flush()`` for the end of an utterance: a consumer skips empty frames and calls
``flush_encoder(encoder)`` after the pipeline's ``finish()``, sending what it returns.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import opuslib_next
import opuslib_next.api.ctl
import opuslib_next.api.encoder

from server.streaming.g711 import AlawEncoder, MulawEncoder
from server.streaming.mp3 import MP3_RATES, Mp3Encoder, mp3_default_bitrate
from server.streaming.ogg import OggOpusWriter
from server.streaming.pcm import (
    Float32Frames,
    PcmF32Encoder,
    PcmS16BeEncoder,
    PcmS16Encoder,
    check_frame,
    float_to_s16,
)

__all__ = [
    "ENCODINGS",
    "MP3_RATES",
    "OPUS_FRAME_MS",
    "OPUS_RATES",
    "AlawEncoder",
    "AudioEncoder",
    "Float32Frames",
    "FlushingEncoder",
    "Mp3Encoder",
    "MulawEncoder",
    "OggOpusEncoder",
    "OpusEncoder",
    "PcmF32Encoder",
    "PcmS16BeEncoder",
    "PcmS16Encoder",
    "default_bitrate",
    "float_to_s16",
    "flush_encoder",
    "make_encoder",
    "pre_skip",
]

ENCODINGS = ("opus", "pcm_s16le", "mulaw", "alaw", "pcm_s16be", "pcm_f32le", "mp3", "ogg_opus")
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
# 2.5 and 5 ms frames are CELT-only (no SILK for speech), so they are not offered.
OPUS_FRAME_MS = (10, 20, 40, 60)
OPUS_MIN_BITRATE = 6000
OPUS_MAX_BITRATE = 510000
OPUS_MONO_MAX_BITRATE = 300000
# libopus' recommended output buffer: enough for any packet of up to 120 ms.
_MAX_PACKET = 4000

Application = Literal["voip", "audio", "lowdelay"]
_APPLICATIONS: dict[str, int] = {
    "voip": opuslib_next.APPLICATION_VOIP,
    "audio": opuslib_next.APPLICATION_AUDIO,
    "lowdelay": opuslib_next.APPLICATION_RESTRICTED_LOWDELAY,
}


@runtime_checkable
class AudioEncoder(Protocol):
    """Encodes one fixed-size frame of mono float32 audio at a time."""

    encoding: str
    sample_rate: int
    frame_samples: int
    # Samples (at sample_rate) the encoder holds back: its output is delayed by this much,
    # so this many samples of padding must follow the audio to get all of it out.
    lookahead: int

    def encode(self, frame: npt.NDArray[np.float32]) -> bytes:
        """Encode exactly `frame_samples` float32 samples in [-1, 1]."""
        ...

    def reset(self) -> None:
        """Forget inter-frame state (barge-in)."""
        ...


@runtime_checkable
class FlushingEncoder(AudioEncoder, Protocol):
    """An encoder that buffers (mp3, ogg_opus): ``encode`` may return b"", and the end of
    an utterance needs ``flush()``."""

    def flush(self) -> bytes:
        """End of the utterance or stream: everything still held; b"" if nothing is."""
        ...


def flush_encoder(encoder: AudioEncoder) -> bytes:
    """End of an utterance, after the pipeline's ``finish()``: the bytes the encoder still
    holds (an MP3 tail, the Ogg EOS page), to send after its frames; b"" for the
    encoders that hold nothing (opus, PCM, G.711)."""
    return encoder.flush() if isinstance(encoder, FlushingEncoder) else b""


def pre_skip(encoder: AudioEncoder) -> int:
    """The Ogg/Opus pre-skip of a stream from ``encoder``: its lookahead at 48 kHz
    (RFC 7845 §4.2); 0 for encodings without one, and for ``ogg_opus``, whose OpusHead
    carries it to the decoder itself."""
    if encoder.encoding != "opus":
        return 0
    return encoder.lookahead * 48000 // encoder.sample_rate


class OpusEncoder:
    """Opus through libopus (opuslib_next), one packet per frame; mono, or the mono
    signal in both channels of a stereo stream (``channels=2``: Discord wants it).

    Settings are applied with OPUS_SET_* ctls and read back with OPUS_GET_*; a setting that
    libopus does not report back raises RuntimeError (the original opuslib could not set FEC
    and never passed DTX on, so this is checked rather than trusted).
    """

    def __init__(
        self,
        sample_rate: int,
        frame_ms: int,
        bitrate: int,
        complexity: int = 5,
        application: Application = "voip",
        fec: bool = False,
        packet_loss_perc: int = 0,
        dtx: bool = False,
        channels: int = 1,
    ) -> None:
        if channels not in (1, 2):
            raise ValueError(f"Opus channels {channels} not supported, use 1 or 2")
        if sample_rate not in OPUS_RATES:
            raise ValueError(f"Opus sample rate {sample_rate} not supported, use {OPUS_RATES}")
        if frame_ms not in OPUS_FRAME_MS:
            raise ValueError(f"Opus frame_ms {frame_ms} not supported, use {OPUS_FRAME_MS}")
        if not OPUS_MIN_BITRATE <= bitrate <= OPUS_MAX_BITRATE:
            raise ValueError(
                f"Opus bitrate {bitrate} out of range {OPUS_MIN_BITRATE}..{OPUS_MAX_BITRATE}"
            )
        if not 0 <= complexity <= 10:
            raise ValueError(f"Opus complexity {complexity} out of range 0..10")
        if not 0 <= packet_loss_perc <= 100:
            raise ValueError(f"Opus packet_loss_perc {packet_loss_perc} out of range 0..100")
        if application not in _APPLICATIONS:
            raise ValueError(
                f"Opus application {application!r} not supported, use one of {tuple(_APPLICATIONS)}"
            )
        self.encoding = "opus"
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate * frame_ms // 1000
        self.application = application
        self.channels = channels  # stereo carries the mono signal in both channels
        self._enc = opuslib_next.Encoder(sample_rate, channels, _APPLICATIONS[application])
        self._state = self._enc.encoder_state
        self._wanted = {
            # 510 kb/s is the format's stereo ceiling; libopus caps mono at 300 kb/s and would
            # report the capped value back, so cap it here to keep the read-back check exact.
            "bitrate": min(bitrate, OPUS_MONO_MAX_BITRATE if channels == 1 else OPUS_MAX_BITRATE),
            "complexity": complexity,
            "inband_fec": int(fec),
            "packet_loss_perc": packet_loss_perc,
            "dtx": int(dtx),
        }
        self._apply_settings()
        self.lookahead: int = int(self._ctl(opuslib_next.api.ctl.get_lookahead))
        # Reused per frame: libopus reads the input from and writes the packet into these.
        self._pcm = (ctypes.c_float * (self.frame_samples * channels))()
        self._pcm_np = np.ctypeslib.as_array(self._pcm)
        self._packet = ctypes.create_string_buffer(_MAX_PACKET)

    def _ctl(self, request: object, value: int | None = None) -> int:
        result: int = opuslib_next.api.encoder.encoder_ctl(self._state, request, value)
        return result

    def _apply_settings(self) -> None:
        ctl = opuslib_next.api.ctl
        w = self._wanted
        self._ctl(ctl.set_bitrate, w["bitrate"])
        self._ctl(ctl.set_complexity, w["complexity"])
        self._ctl(ctl.set_inband_fec, w["inband_fec"])
        self._ctl(ctl.set_packet_loss_perc, w["packet_loss_perc"])
        self._ctl(ctl.set_dtx, w["dtx"])
        got = self.ctl_settings()
        if got != w:
            raise RuntimeError(f"libopus did not take the settings: wanted {w}, has {got}")

    def ctl_settings(self) -> dict[str, int]:
        """The settings as libopus reports them (OPUS_GET_* ctls)."""
        ctl = opuslib_next.api.ctl
        return {
            "bitrate": self._ctl(ctl.get_bitrate),
            "complexity": self._ctl(ctl.get_complexity),
            "inband_fec": self._ctl(ctl.get_inband_fec),
            "packet_loss_perc": self._ctl(ctl.get_packet_loss_perc),
            "dtx": self._ctl(ctl.get_dtx),
        }

    def encode(self, frame: npt.NDArray[np.float32]) -> bytes:
        check_frame(frame, self.frame_samples)
        # Float input straight to opus_encode_float: measured ~3-7% cheaper per frame than
        # converting to int16 for opus_encode (libopus works in float internally), and the
        # reused ctypes buffers avoid opuslib's per-call output allocation and copies.
        if self.channels == 1:
            np.copyto(self._pcm_np, frame)
        else:  # interleaved: the same signal left and right
            self._pcm_np[0::2] = frame
            self._pcm_np[1::2] = frame
        n = opuslib_next.api.encoder.libopus_encode_float(
            self._state, self._pcm, self.frame_samples, self._packet, _MAX_PACKET
        )
        if n < 0:
            raise opuslib_next.OpusError(n)
        return ctypes.string_at(self._packet, n)

    def reset(self) -> None:
        # OPUS_RESET_STATE clears the signal history but keeps the configured settings.
        self._ctl(opuslib_next.api.ctl.reset_state)


def default_bitrate(sample_rate: int) -> int:
    """A speech bitrate for the Opus rate (RFC 7587 ranges, leaning generous)."""
    if sample_rate <= 12000:
        return 16000
    if sample_rate <= 16000:
        return 24000
    return 32000


class OggOpusEncoder:
    """Ogg Opus, streamed: an OpusEncoder's packets as Ogg pages (RFC 7845), sent at once.

    The first ``encode`` of a stream returns the OpusHead and OpusTags header pages before
    its audio; then every ``packets_per_page`` packets close a page (1, the default: a page
    per frame, for the lowest latency, at 28 bytes of page header per frame). The frames
    in between return b"". All bytes joined make a valid .opus file. ``flush()`` returns
    the EOS page (empty when every packet already went out on its own page, so the end is
    not trimmed: the decoded audio ends with the pipeline's silent padding, under a frame
    plus the lookahead) and resets the Opus encoder, so the next ``encode`` begins a new
    logical stream (new serial, fresh headers): a chained Ogg file, one link per
    utterance. ``reset()`` (barge-in) resets only the Opus encoder; the Ogg stream goes on.
    """

    def __init__(self, opus: OpusEncoder, packets_per_page: int = 1) -> None:
        if packets_per_page < 1:
            raise ValueError(f"packets_per_page must be at least 1, got {packets_per_page}")
        self.encoding = "ogg_opus"
        self.opus = opus
        self.sample_rate = opus.sample_rate
        self.frame_samples = opus.frame_samples
        self.lookahead = opus.lookahead  # in the OpusHead's pre-skip, not the client's job
        self.packets_per_page = packets_per_page
        self._packet_48k = opus.frame_samples * 48000 // opus.sample_rate
        self._pre_skip = opus.lookahead * 48000 // opus.sample_rate
        self._ogg: OggOpusWriter | None = None  # the logical stream being written
        self._on_page = 0

    @property
    def serial(self) -> int | None:
        """The current logical stream's serial number; None between streams."""
        return None if self._ogg is None else self._ogg.serial

    def encode(self, frame: npt.NDArray[np.float32]) -> bytes:
        packet = self.opus.encode(frame)
        out = b""
        if self._ogg is None:
            self._ogg = OggOpusWriter(self.sample_rate, pre_skip=self._pre_skip)
            out = self._ogg.headers()
        out += self._ogg.packet(packet, self._packet_48k)
        self._on_page += 1
        if self._on_page >= self.packets_per_page:
            self._on_page = 0
            out += self._ogg.close_page()
        return out

    def flush(self) -> bytes:
        """End the logical stream: its last page, flagged EOS; b"" if none was begun."""
        if self._ogg is None:
            return b""
        tail = self._ogg.finish()
        self._ogg = None
        self._on_page = 0
        self.opus.reset()  # the next link's decoder starts cold, so must the encoder
        return tail

    def reset(self) -> None:
        self.opus.reset()


class Interleaved:
    """A raw encoding (fixed bytes per sample) with every sample in ``channels``
    channels, interleaved: the stereo of PCM and G.711."""

    def __init__(self, inner: AudioEncoder, channels: int) -> None:
        self.inner = inner
        self.channels = channels
        self.encoding = inner.encoding
        self.sample_rate = inner.sample_rate
        self.frame_samples = inner.frame_samples
        self.lookahead = inner.lookahead
        self._width = 0

    def encode(self, frame: npt.NDArray[np.float32]) -> bytes:
        mono = self.inner.encode(frame)
        if not self._width:
            self._width = len(mono) // self.frame_samples
        samples = np.frombuffer(mono, dtype=f"V{self._width}")
        return np.repeat(samples, self.channels).tobytes()

    def reset(self) -> None:
        self.inner.reset()


_PLAIN: dict[str, Callable[[int, int], AudioEncoder]] = {
    "pcm_s16le": PcmS16Encoder,
    "pcm_s16be": PcmS16BeEncoder,
    "pcm_f32le": PcmF32Encoder,
    "mulaw": MulawEncoder,
    "alaw": AlawEncoder,
}


def make_encoder(
    encoding: str,
    sample_rate: int,
    frame_ms: int,
    bitrate: int | None,
    complexity: int = 5,
    fec: bool = False,
    packet_loss_perc: int = 0,
    dtx: bool = False,
    application: Application = "voip",
    channels: int = 1,
) -> AudioEncoder:
    """Build the encoder for a stream's `encoding`, one of ENCODINGS, mono or (``channels``
    2: opus and the raw encodings) the mono signal in both channels.

    - "opus": raw Opus packets, one per frame (the client needs ``pre_skip``).
    - "ogg_opus": the same packets in Ogg pages (OggOpusEncoder): a streamable .opus file.
    - "pcm_s16le", "pcm_s16be" (RTP L16), "pcm_f32le" (clipped to [-1, 1]): raw PCM.
    - "mulaw", "alaw": G.711, one byte per sample (telephony: 8 kHz).
    - "mp3": CBR MP3 through LAME (Mp3Encoder), at one of MP3_RATES.

    mp3 and ogg_opus buffer: skip the b"" frames they return, and call
    ``flush_encoder(encoder)`` at the end of each utterance.

    bitrate (bits/s) None picks default_bitrate(sample_rate) for Opus and
    mp3_default_bitrate(sample_rate) for MP3 (64k up to 24 kHz, 128k above); it is ignored
    for PCM and G.711, and so are the Opus-only settings for everything but Opus.
    """
    plain = _PLAIN.get(encoding)
    if plain is not None:
        enc = plain(sample_rate, frame_ms)
        return enc if channels == 1 else Interleaved(enc, channels)
    if channels != 1 and encoding != "opus":
        raise ValueError(f"{encoding} is mono only; channels 2 is for opus and raw PCM/G.711")
    if encoding == "mp3":
        return Mp3Encoder(
            sample_rate, frame_ms, mp3_default_bitrate(sample_rate) if bitrate is None else bitrate
        )
    if encoding not in ("opus", "ogg_opus"):
        raise ValueError(f"unknown encoding {encoding!r}, use one of {ENCODINGS}")
    opus = OpusEncoder(
        sample_rate,
        frame_ms,
        default_bitrate(sample_rate) if bitrate is None else bitrate,
        complexity=complexity,
        fec=fec,
        packet_loss_perc=packet_loss_perc,
        dtx=dtx,
        application=application,
        channels=channels,
    )
    return opus if encoding == "opus" else OggOpusEncoder(opus)
