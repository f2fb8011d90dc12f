"""Streaming MP3 frames through LAME (the ``lameenc`` wheel), constant bitrate, mono.

LAME buffers: it needs a granule (576 or 1152 samples) plus its lookahead before it emits
an MP3 frame, and it holds bits back in the reservoir, so ``encode()`` returns b"" for some
frames and several MP3 frames' worth for others. A consumer must skip empty results and
call ``flush()`` at the end of an utterance (or stream) to get the buffered tail out.

lameenc cannot go on after a flush (``lame_encode_flush`` ends the stream; lameenc then
refuses to encode), so ``flush()`` and ``reset()`` start a fresh LAME encoder. Joined
MP3 streams are still one valid MP3 stream (MP3 has no stream header; every frame stands
alone, apart from the bit reservoir, which a flush closes).

No Xing/LAME tag is written (there is no file to seek back into), so decoders cannot
remove LAME's start delay: the decoded audio starts ``MP3_DECODE_DELAY`` (1105) samples
late, LAME's 576-sample encoder delay plus the 529-sample delay of the standard decoder's
synthesis filterbank, and ends with up to a granule of padding after that.
"""

from __future__ import annotations

from typing import Protocol

import lameenc  # type: ignore[import-not-found]  # a C extension without type information
import numpy as np
import numpy.typing as npt

from server.streaming.pcm import check_frame, float_to_s16, frame_samples

__all__ = [
    "MP3_BITRATES_KBPS",
    "MP3_DECODE_DELAY",
    "MP3_RATES",
    "Mp3Encoder",
    "mp3_default_bitrate",
]

MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
# Layer III bitrates (kb/s) by sample rate: MPEG-1 above 24 kHz, MPEG-2 16-24 kHz, and
# MPEG-2.5 below. LAME would silently clamp any other value to the nearest it can do.
_MPEG1 = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MPEG2 = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_MPEG25 = (8, 16, 24, 32, 40, 48, 56, 64)
MP3_BITRATES_KBPS: dict[int, tuple[int, ...]] = {
    rate: _MPEG1 if rate >= 32000 else _MPEG2 if rate >= 16000 else _MPEG25 for rate in MP3_RATES
}
MP3_DECODE_DELAY = 576 + 529
_QUALITY = 2  # LAME's -q 2: near-best quality; a 20 ms frame still encodes in well under 1 ms


class _Lame(Protocol):
    """The part of lameenc.Encoder used here (the module ships no type information)."""

    def encode(self, pcm: bytes) -> bytearray: ...

    def flush(self) -> bytearray: ...


def mp3_default_bitrate(sample_rate: int) -> int:
    """64 kb/s up to 24 kHz (plenty for speech), 128 kb/s above."""
    return 64000 if sample_rate <= 24000 else 128000


class Mp3Encoder:
    """Mono CBR MP3 through LAME; ``encode`` returns the MP3 bytes that are ready (maybe b"").

    ``lookahead`` is 0: the pipeline needs no padding after the audio, since ``flush()``
    gets LAME's buffered samples out (see the module docstring for the decoded delay).
    """

    lookahead = 0

    def __init__(self, sample_rate: int, frame_ms: int, bitrate: int) -> None:
        if sample_rate not in MP3_RATES:
            raise ValueError(f"MP3 sample rate {sample_rate} not supported, use {MP3_RATES}")
        allowed = MP3_BITRATES_KBPS[sample_rate]
        if bitrate % 1000 or bitrate // 1000 not in allowed:
            raise ValueError(
                f"MP3 bitrate {bitrate} not possible at {sample_rate} Hz, "
                f"use one of {tuple(k * 1000 for k in allowed)}"
            )
        self.encoding = "mp3"
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples(sample_rate, frame_ms)
        self.bitrate = bitrate
        self._scratch = np.empty(self.frame_samples, dtype=np.float32)
        self._s16: npt.NDArray[np.int16] = np.empty(self.frame_samples, dtype="<i2")
        self._lame = self._new_lame()
        self._started = False  # samples went in since the LAME encoder was made

    def _new_lame(self) -> _Lame:
        lame = lameenc.Encoder()
        lame.set_channels(1)
        lame.set_in_sample_rate(self.sample_rate)
        # Without this LAME may resample to a rate it prefers for the bitrate.
        lame.set_out_sample_rate(self.sample_rate)
        lame.set_bit_rate(self.bitrate // 1000)
        lame.set_quality(_QUALITY)
        lame.silence()  # no messages from LAME on stdout
        checked: _Lame = lame
        return checked

    def encode(self, frame: npt.NDArray[np.float32]) -> bytes:
        check_frame(frame, self.frame_samples)
        pcm = float_to_s16(frame, self._scratch, self._s16).tobytes()
        self._started = True
        return bytes(self._lame.encode(pcm))

    def flush(self) -> bytes:
        """End of the utterance: the MP3 frames LAME still holds (zero-padded to a frame).

        The next ``encode`` starts a fresh LAME stream; b"" if nothing was encoded since the
        last flush or reset.
        """
        if not self._started:
            return b""
        tail = bytes(self._lame.flush())
        self._lame = self._new_lame()
        self._started = False
        return tail

    def reset(self) -> None:
        """Barge-in: drop what LAME holds (LAME has no reset, so start a fresh encoder)."""
        if self._started:
            self._lame = self._new_lame()
            self._started = False
