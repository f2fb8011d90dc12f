"""Engine audio -> encoded frames: fade, resample, frame, encode."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from server.streaming.encoder import AudioEncoder
from server.streaming.framer import Framer
from server.streaming.resampler import StreamResampler

__all__ = ["AudioPipeline"]

_EMPTY = np.zeros(0, dtype=np.float32)


class AudioPipeline:
    """One stream's audio path: fade -> StreamResampler -> Framer -> encoder.

    The engine synthesises text chunk by chunk, each independently, so the waveforms of two
    chunks do not meet smoothly. Every chunk gets a short fade-in over its first `fade_ms`
    and a fade-out over its last `fade_ms`, so each join passes through silence and never
    clicks. To fade the end, the last `fade_ms` of each chunk's audio is held back until
    end_chunk() says the chunk is complete.

    end_chunk() also flushes the resampler. Flushing per chunk (rather than per utterance)
    restarts the resampler's filter at every chunk, which would be a discontinuity on a
    running signal but is harmless here because both sides of every chunk edge are faded to
    silence; in exchange nothing stays stuck in the resampler while the next chunk is being
    synthesised or the text stream pauses. The framer keeps its sub-frame remainder across
    chunks, so frames stay contiguous and no padding is inserted mid-utterance.
    """

    def __init__(self, engine_rate: int, encoder: AudioEncoder, fade_ms: float = 4.0) -> None:
        if fade_ms < 0:
            raise ValueError(f"fade_ms must be >= 0, got {fade_ms}")
        self.engine_rate = engine_rate
        self.encoder = encoder
        self._resampler = StreamResampler(engine_rate, encoder.sample_rate)
        self._framer = Framer(encoder.frame_samples)
        n = round(engine_rate * fade_ms / 1000)
        self._fade_n = n
        # sin² ramp: smooth at both ends; the chunk's first and last samples become exactly 0.
        ramp = np.sin(0.5 * np.pi * np.arange(n, dtype=np.float64) / max(n, 1)) ** 2
        self._fade_in = ramp.astype(np.float32)
        self._fade_out = self._fade_in[::-1].copy()
        self._held = _EMPTY  # the current chunk's last fade_n samples, not yet sent on
        self._chunk_pos = 0  # samples of the current chunk already sent on
        self.frames_out = 0  # frames encoded since construction (kept across reset())
        self.end_trim = 0
        self._has_audio = False  # audio pushed since the last finish()/reset()

    @property
    def pending_samples(self) -> int:
        """Encoder-rate samples waiting in the framer for a whole frame."""
        return self._framer.pending

    def push(self, samples: npt.NDArray[np.float32]) -> list[bytes]:
        """Add engine audio of the current chunk; return the frames that became complete."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if x.size == 0:
            return []
        self._has_audio = True
        n = self._fade_n
        if n == 0:
            return self._send(self._faded_in(x))  # no fade: only counts the chunk position
        if self._held.size + x.size <= n:
            self._held = np.concatenate((self._held, x))
            return []
        # A fresh array: the fades below scale it in place without touching the caller's.
        buf = np.concatenate((self._held, x))
        self._held = buf[-n:]
        return self._send(self._faded_in(buf[:-n]))

    def end_chunk(self) -> list[bytes]:
        """The engine finished a text chunk: fade out its end and flush the resampler."""
        if self._chunk_pos == 0 and self._held.size == 0:
            return []  # empty chunk: nothing to fade or flush
        tail = self._faded_in(self._held)
        m = tail.size
        if m:
            tail *= self._fade_out[self._fade_n - m :]
        packets = self._send(tail)
        packets += self._encode(self._framer.push(self._resampler.flush()))
        self._held = _EMPTY
        self._chunk_pos = 0
        return packets

    def finish(self) -> list[bytes]:
        """End of the utterance: send everything, padded so the encoder lookahead comes out.

        Afterwards `end_trim` is the number of encoder-rate samples of padding that follow the
        real audio in the decoded stream once the first `encoder.lookahead` decoded samples are
        skipped (for an Ogg end trim, scale it to 48 kHz).
        """
        packets = self.end_chunk()
        if not self._has_audio:
            self.end_trim = 0
            return packets  # nothing since the last finish/reset: no padding frames either
        self._has_audio = False
        pending = self._framer.pending
        lookahead = self.encoder.lookahead
        frames = self._framer.finish(min_pad=lookahead)
        packets += self._encode(frames)
        self.end_trim = max(0, frames.size - pending - lookahead)
        return packets

    def carry_out(self) -> bytes:
        """Between chunks: the samples waiting for the next frame (float32 bytes)."""
        return self._framer.remainder().tobytes()

    def carry_in(self, samples: npt.NDArray[np.float32]) -> None:
        """A new pipeline continues another's stream: start from its ``carry_out``."""
        if samples.size >= self._framer.frame_samples:
            raise ValueError(f"carry of {samples.size} samples is a frame or more")
        self._framer.push(samples)

    def reset(self) -> None:
        """Barge-in: drop all buffered audio and the encoder's signal history."""
        self._held = _EMPTY
        self._chunk_pos = 0
        self._resampler.reset()
        self._framer.reset()
        self.encoder.reset()
        self.end_trim = 0
        self._has_audio = False

    def _faded_in(self, seg: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        # Scales in place the part of `seg` that falls in the chunk's first fade_n samples.
        pos = self._chunk_pos
        if pos < self._fade_n:
            k = min(self._fade_n - pos, seg.size)
            seg[:k] *= self._fade_in[pos : pos + k]
        self._chunk_pos = pos + seg.size
        return seg

    def _send(self, x: npt.NDArray[np.float32]) -> list[bytes]:
        return self._encode(self._framer.push(self._resampler.process(x)))

    def _encode(self, frames: npt.NDArray[np.float32]) -> list[bytes]:
        encode = self.encoder.encode
        packets = [encode(frame) for frame in frames]
        self.frames_out += len(packets)
        return packets
