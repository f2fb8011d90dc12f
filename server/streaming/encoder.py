"""Frame encoders: Opus (libopus via opuslib_next), raw PCM s16le and G.711 µ-law."""

from __future__ import annotations

import ctypes
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import opuslib_next
import opuslib_next.api.ctl
import opuslib_next.api.encoder

__all__ = [
    "ENCODINGS",
    "OPUS_FRAME_MS",
    "OPUS_RATES",
    "AudioEncoder",
    "MulawEncoder",
    "OpusEncoder",
    "PcmS16Encoder",
    "default_bitrate",
    "float_to_s16",
    "make_encoder",
]

ENCODINGS = ("opus", "pcm_s16le", "mulaw")
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


def _frame_samples(sample_rate: int, frame_ms: int) -> int:
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate}")
    if frame_ms <= 0 or (sample_rate * frame_ms) % 1000:
        raise ValueError(f"frame_ms {frame_ms} is not a whole number of samples at {sample_rate}")
    return sample_rate * frame_ms // 1000


def _check_frame(frame: npt.NDArray[np.float32], n: int) -> None:
    if frame.shape != (n,):
        raise ValueError(f"expected a frame of {n} samples, got shape {frame.shape}")


def float_to_s16(
    x: npt.NDArray[np.float32], scratch: npt.NDArray[np.float32], out: npt.NDArray[np.int16]
) -> npt.NDArray[np.int16]:
    """float [-1, 1] -> int16 (x * 32768, round to nearest, clipped) into preallocated buffers."""
    # 32768 makes int16 -> float (v / 32768) -> int16 exact; +1.0 clips to 32767.
    np.multiply(x, np.float32(32768.0), out=scratch)
    np.rint(scratch, out=scratch)
    np.clip(scratch, -32768.0, 32767.0, out=scratch)
    np.copyto(out, scratch, casting="unsafe")
    return out


class PcmS16Encoder:
    """Raw little-endian signed 16-bit PCM."""

    lookahead = 0

    def __init__(self, sample_rate: int, frame_ms: int) -> None:
        self.encoding = "pcm_s16le"
        self.sample_rate = sample_rate
        self.frame_samples = _frame_samples(sample_rate, frame_ms)
        self._scratch = np.empty(self.frame_samples, dtype=np.float32)
        self._s16 = np.empty(self.frame_samples, dtype="<i2")

    def encode(self, frame: npt.NDArray[np.float32]) -> bytes:
        _check_frame(frame, self.frame_samples)
        return float_to_s16(frame, self._scratch, self._s16).tobytes()

    def reset(self) -> None:
        pass  # stateless


class Float32Frames:
    """Frames as float32 bytes, for a consumer that encodes them itself (a file muxer)."""

    lookahead = 0

    def __init__(self, sample_rate: int, frame_ms: int) -> None:
        self.encoding = "float32"
        self.sample_rate = sample_rate
        self.frame_samples = _frame_samples(sample_rate, frame_ms)

    def encode(self, frame: npt.NDArray[np.float32]) -> bytes:
        _check_frame(frame, self.frame_samples)
        return frame.astype(np.float32, copy=False).tobytes()

    def reset(self) -> None:
        pass  # stateless


def pre_skip(encoder: AudioEncoder) -> int:
    """The Ogg/Opus pre-skip of a stream from ``encoder``: its lookahead at 48 kHz
    (RFC 7845 §4.2); 0 for encodings without one."""
    if encoder.encoding != "opus":
        return 0
    return encoder.lookahead * 48000 // encoder.sample_rate


def _build_ulaw_table() -> npt.NDArray[np.uint8]:
    """µ-law code for every int16 value, indexed by the value's uint16 bit pattern.

    Follows the ITU-T G.711 µ-law encoding rule as implemented by the ITU's reference
    software (G.191 STL ulaw_compress): the 16-bit sample is cut to a 14-bit sign-magnitude
    value (one's complement for negatives, so -1 is "negative zero"), biased by 33, clipped
    to 8191; the segment is the position of the top bit, the mantissa the next four bits, and
    the whole code is inverted. (Python's audioop and Sun's g711.c truncate negatives the
    other way and differ by one step on 508 of the 65536 inputs.)
    """
    v = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)
    neg = v < 0
    absno = (np.where(neg, ~v, v) >> 2) + 33
    np.minimum(absno, 0x1FFF, out=absno)
    # segno - 1 = bit length of absno >> 6 (0..7), by a small lookup.
    bitlen = np.zeros(128, dtype=np.int32)
    for i in range(1, 128):
        bitlen[i] = i.bit_length()
    segno = bitlen[absno >> 6] + 1
    mantissa = (absno >> segno) & 0x0F
    code = ((8 - segno) << 4) | (0x0F - mantissa)
    code = np.where(neg, code, code | 0x80)
    table: npt.NDArray[np.uint8] = code.astype(np.uint8)
    table.flags.writeable = False
    return table


_ULAW_TABLE = _build_ulaw_table()


class MulawEncoder:
    """G.711 µ-law, one byte per sample (normally 8 kHz for telephony).

    Hand-written with numpy: the stdlib audioop module is deprecated since Python 3.11 and
    removed in 3.13. Encoding is float -> int16 (as PcmS16Encoder) -> a 64 Ki-entry table
    lookup, i.e. two vectorised passes per frame.
    """

    lookahead = 0

    def __init__(self, sample_rate: int, frame_ms: int) -> None:
        self.encoding = "mulaw"
        self.sample_rate = sample_rate
        self.frame_samples = _frame_samples(sample_rate, frame_ms)
        self._scratch = np.empty(self.frame_samples, dtype=np.float32)
        self._s16 = np.empty(self.frame_samples, dtype=np.int16)
        self._codes = np.empty(self.frame_samples, dtype=np.uint8)

    def encode(self, frame: npt.NDArray[np.float32]) -> bytes:
        _check_frame(frame, self.frame_samples)
        s16 = float_to_s16(frame, self._scratch, self._s16)
        np.take(_ULAW_TABLE, s16.view(np.uint16), out=self._codes)
        return self._codes.tobytes()

    def reset(self) -> None:
        pass  # stateless


class OpusEncoder:
    """Mono Opus through libopus (opuslib_next), one packet per frame.

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
    ) -> None:
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
        self._enc = opuslib_next.Encoder(sample_rate, 1, _APPLICATIONS[application])
        self._state = self._enc.encoder_state
        self._wanted = {
            # 510 kb/s is the format's stereo ceiling; libopus caps mono at 300 kb/s and would
            # report the capped value back, so cap it here to keep the read-back check exact.
            "bitrate": min(bitrate, OPUS_MONO_MAX_BITRATE),
            "complexity": complexity,
            "inband_fec": int(fec),
            "packet_loss_perc": packet_loss_perc,
            "dtx": int(dtx),
        }
        self._apply_settings()
        self.lookahead: int = int(self._ctl(opuslib_next.api.ctl.get_lookahead))
        # Reused per frame: libopus reads the input from and writes the packet into these.
        self._pcm = (ctypes.c_float * self.frame_samples)()
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
        _check_frame(frame, self.frame_samples)
        # Float input straight to opus_encode_float: measured ~3-7% cheaper per frame than
        # converting to int16 for opus_encode (libopus works in float internally), and the
        # reused ctypes buffers avoid opuslib's per-call output allocation and copies.
        np.copyto(self._pcm_np, frame)
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
) -> AudioEncoder:
    """Build the encoder for a stream's `encoding` ("opus", "pcm_s16le" or "mulaw").

    bitrate None picks default_bitrate(sample_rate); the Opus-only settings are ignored for
    PCM and µ-law.
    """
    if encoding == "opus":
        return OpusEncoder(
            sample_rate,
            frame_ms,
            default_bitrate(sample_rate) if bitrate is None else bitrate,
            complexity=complexity,
            fec=fec,
            packet_loss_perc=packet_loss_perc,
            dtx=dtx,
            application=application,
        )
    if encoding == "pcm_s16le":
        return PcmS16Encoder(sample_rate, frame_ms)
    if encoding == "mulaw":
        return MulawEncoder(sample_rate, frame_ms)
    raise ValueError(f"unknown encoding {encoding!r}, use one of {ENCODINGS}")
