"""Cuts a stream of samples into fixed-size codec frames."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["Framer"]


class Framer:
    """Accumulates mono float32 samples and hands out whole frames of `frame_samples`."""

    def __init__(self, frame_samples: int) -> None:
        if frame_samples <= 0:
            raise ValueError(f"frame_samples must be positive, got {frame_samples}")
        self.frame_samples = frame_samples
        # The remainder never reaches a whole frame, so one frame of storage is enough.
        self._buf = np.zeros(frame_samples, dtype=np.float32)
        self._pending = 0
        self._no_frames = np.zeros((0, frame_samples), dtype=np.float32)
        self._no_frames.flags.writeable = False

    @property
    def pending(self) -> int:
        """Samples held that do not make a whole frame yet."""
        return self._pending

    def push(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Add samples; return the complete frames as an (n_frames, frame_samples) array."""
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        n = x.size
        fs = self.frame_samples
        p = self._pending
        if p + n < fs:
            self._buf[p : p + n] = x
            self._pending = p + n
            return self._no_frames
        n_frames = (p + n) // fs
        used = n_frames * fs - p  # samples of x that go into the frames
        frames = np.empty((n_frames, fs), dtype=np.float32)
        flat = frames.reshape(-1)
        flat[:p] = self._buf[:p]
        flat[p:] = x[:used]
        rest = n - used
        self._buf[:rest] = x[used:]
        self._pending = rest
        return frames

    def remainder(self) -> npt.NDArray[np.float32]:
        """A copy of the held samples (fewer than a frame)."""
        return self._buf[: self._pending].copy()

    def finish(self, min_pad: int = 0) -> npt.NDArray[np.float32]:
        """Zero-pad the remainder into whole frames and return them.

        At least `min_pad` zero samples follow the last real sample (whole frames of zeros are
        added if needed), so an encoder holding back `min_pad` samples of lookahead still
        emits all the real audio.
        """
        if min_pad < 0:
            raise ValueError(f"min_pad must be >= 0, got {min_pad}")
        fs = self.frame_samples
        p = self._pending
        n_frames = -(-(p + min_pad) // fs)  # ceil
        if n_frames == 0:
            return self._no_frames
        frames = np.zeros((n_frames, fs), dtype=np.float32)
        frames.reshape(-1)[:p] = self._buf[:p]
        self._pending = 0
        return frames

    def reset(self) -> None:
        """Drop the held remainder."""
        self._pending = 0
