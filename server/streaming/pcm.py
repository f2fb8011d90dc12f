"""Linear PCM frame encoders (s16le, s16be, f32le, plain float32) and their shared helpers.

The helpers (frame size, frame check, float -> int16) are used by every encoder module in
server/streaming (g711, mp3, encoder), so they live here, below all of them.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "Float32Frames",
    "PcmF32Encoder",
    "PcmS16BeEncoder",
    "PcmS16Encoder",
    "check_frame",
    "float_to_s16",
    "frame_samples",
]


def frame_samples(sample_rate: int, frame_ms: int) -> int:
    """Samples in a frame of `frame_ms` at `sample_rate`; ValueError unless a whole number."""
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate}")
    if frame_ms <= 0 or (sample_rate * frame_ms) % 1000:
        raise ValueError(f"frame_ms {frame_ms} is not a whole number of samples at {sample_rate}")
    return sample_rate * frame_ms // 1000


def check_frame(frame: npt.NDArray[np.float32], n: int) -> None:
    if frame.shape != (n,):
        raise ValueError(f"expected a frame of {n} samples, got shape {frame.shape}")


def float_to_s16(
    x: npt.NDArray[np.float32], scratch: npt.NDArray[np.float32], out: npt.NDArray[np.int16]
) -> npt.NDArray[np.int16]:
    """float [-1, 1] -> int16 (x * 32768, round to nearest, clipped) into preallocated buffers.

    `out` may be of either byte order (a ">i2" array gives big-endian bytes).
    """
    # 32768 makes int16 -> float (v / 32768) -> int16 exact; +1.0 clips to 32767.
    np.multiply(x, np.float32(32768.0), out=scratch)
    np.rint(scratch, out=scratch)
    np.clip(scratch, -32768.0, 32767.0, out=scratch)
    np.copyto(out, scratch, casting="unsafe")
    return out


class PcmS16Encoder:
    """Raw little-endian signed 16-bit PCM."""

    lookahead = 0
    _ENCODING = "pcm_s16le"
    _DTYPE = "<i2"

    def __init__(self, sample_rate: int, frame_ms: int) -> None:
        self.encoding = self._ENCODING
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples(sample_rate, frame_ms)
        self._scratch = np.empty(self.frame_samples, dtype=np.float32)
        self._s16: npt.NDArray[np.int16] = np.empty(self.frame_samples, dtype=self._DTYPE)

    def encode(self, frame: npt.NDArray[np.float32]) -> bytes:
        check_frame(frame, self.frame_samples)
        return float_to_s16(frame, self._scratch, self._s16).tobytes()

    def reset(self) -> None:
        pass  # stateless


class PcmS16BeEncoder(PcmS16Encoder):
    """Raw big-endian signed 16-bit PCM: network byte order, RTP's L16 (RFC 3551 §4.5.11)."""

    _ENCODING = "pcm_s16be"
    _DTYPE = ">i2"


class PcmF32Encoder:
    """Raw little-endian 32-bit float PCM (Cartesia's ``pcm_f32le``), clipped to [-1, 1]."""

    lookahead = 0

    def __init__(self, sample_rate: int, frame_ms: int) -> None:
        self.encoding = "pcm_f32le"
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples(sample_rate, frame_ms)
        self._out = np.empty(self.frame_samples, dtype="<f4")

    def encode(self, frame: npt.NDArray[np.float32]) -> bytes:
        check_frame(frame, self.frame_samples)
        np.clip(frame, -1.0, 1.0, out=self._out)
        return self._out.tobytes()

    def reset(self) -> None:
        pass  # stateless


class Float32Frames:
    """Frames as float32 bytes, for a consumer that encodes them itself (a file muxer)."""

    lookahead = 0

    def __init__(self, sample_rate: int, frame_ms: int) -> None:
        self.encoding = "float32"
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples(sample_rate, frame_ms)

    def encode(self, frame: npt.NDArray[np.float32]) -> bytes:
        check_frame(frame, self.frame_samples)
        return frame.astype(np.float32, copy=False).tobytes()

    def reset(self) -> None:
        pass  # stateless
