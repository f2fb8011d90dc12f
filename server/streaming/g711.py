"""G.711 µ-law and A-law frame encoders (ITU-T G.711), table-driven with numpy.

Hand-written: the stdlib audioop module is deprecated since Python 3.11 and removed in 3.13.
Encoding is float -> int16 (as PcmS16Encoder) -> a 64 Ki-entry table lookup indexed by the
sample's uint16 bit pattern, i.e. two vectorised passes per frame. Both tables follow the
ITU's reference software (G.191 STL ``ulaw_compress`` / ``alaw_compress``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from server.streaming.pcm import check_frame, float_to_s16, frame_samples

__all__ = ["AlawEncoder", "MulawEncoder"]


def _all_int16() -> npt.NDArray[np.int32]:
    """Every int16 value, in the order of its uint16 bit pattern (0, 1, ..., -1)."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _bit_length(a: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """int.bit_length() of each non-negative value (exact: frexp of an integer below 2**24)."""
    return np.frexp(a.astype(np.float64))[1].astype(np.int32)


def _frozen(code: npt.NDArray[np.int32]) -> npt.NDArray[np.uint8]:
    table: npt.NDArray[np.uint8] = code.astype(np.uint8)
    table.flags.writeable = False
    return table


def _build_ulaw_table() -> npt.NDArray[np.uint8]:
    """µ-law code for every int16 value, indexed by the value's uint16 bit pattern.

    The 16-bit sample is cut to a 14-bit sign-magnitude value (one's complement for
    negatives, so -1 is "negative zero"), biased by 33, clipped to 8191; the segment is the
    position of the top bit, the mantissa the next four bits, and the whole code is inverted.
    (Python's audioop and Sun's g711.c truncate negatives the other way and differ by one
    step on 508 of the 65536 inputs.)
    """
    v = _all_int16()
    neg = v < 0
    absno = (np.where(neg, ~v, v) >> 2) + 33
    np.minimum(absno, 0x1FFF, out=absno)
    segno = _bit_length(absno >> 6) + 1  # segno - 1 = bit length of absno >> 6 (0..7)
    mantissa = (absno >> segno) & 0x0F
    code = ((8 - segno) << 4) | (0x0F - mantissa)
    return _frozen(np.where(neg, code, code | 0x80))


def _build_alaw_table() -> npt.NDArray[np.uint8]:
    """A-law code for every int16 value, indexed by the value's uint16 bit pattern.

    The 16-bit sample is cut to a 12-bit magnitude (sample >> 4, one's complement for
    negatives); magnitudes below 32 are coded linearly (segments 0 and 1), above that the
    segment is the position of the top bit (2..7) and the mantissa the four bits below it.
    The sign bit is set for non-negative samples and the even bits are inverted (xor 0x55).
    """
    v = _all_int16()
    neg = v < 0
    ix = np.where(neg, ~v, v) >> 4  # 0..2047
    exponent = np.maximum(_bit_length(ix) - 4, 1)  # 1 for ix < 32: linear there
    # For ix < 32 this is (1 << 4) + ix - 16 = ix; otherwise segment and mantissa.
    code = (exponent << 4) + (ix >> (exponent - 1)) - 16
    return _frozen(np.where(neg, code, code | 0x80) ^ 0x55)


_ULAW_TABLE = _build_ulaw_table()
_ALAW_TABLE = _build_alaw_table()


class _G711Encoder:
    """One byte per sample through a code table (normally 8 kHz for telephony)."""

    lookahead = 0
    _ENCODING = ""
    _TABLE = _ULAW_TABLE

    def __init__(self, sample_rate: int, frame_ms: int) -> None:
        self.encoding = self._ENCODING
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples(sample_rate, frame_ms)
        self._scratch = np.empty(self.frame_samples, dtype=np.float32)
        self._s16 = np.empty(self.frame_samples, dtype=np.int16)
        self._codes = np.empty(self.frame_samples, dtype=np.uint8)

    def encode(self, frame: npt.NDArray[np.float32]) -> bytes:
        check_frame(frame, self.frame_samples)
        s16 = float_to_s16(frame, self._scratch, self._s16)
        np.take(self._TABLE, s16.view(np.uint16), out=self._codes)
        return self._codes.tobytes()

    def reset(self) -> None:
        pass  # stateless


class MulawEncoder(_G711Encoder):
    """G.711 µ-law (North America, Japan; Twilio's ``audio/x-mulaw``)."""

    _ENCODING = "mulaw"
    _TABLE = _ULAW_TABLE


class AlawEncoder(_G711Encoder):
    """G.711 A-law (Europe and most of the rest of the world's telephone networks)."""

    _ENCODING = "alaw"
    _TABLE = _ALAW_TABLE
