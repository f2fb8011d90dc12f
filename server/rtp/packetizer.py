"""RTP packets (RFC 3550) for one outgoing stream, one frame per packet (sans-I/O).

Sequence numbers follow the session's frame numbers (``seq0 + frame``), so a frame
re-sent after a resume carries the sequence number it had, and a receiver's jitter
buffer drops the duplicate. Timestamps run on the payload's RTP clock (48 kHz for Opus
whatever the coded rate, RFC 7587) and keep time across silence: a talkspurt that
starts after a gap (between utterances, an engine stall) advances the timestamp by
the gap as well, and its first packet has the marker bit (RFC 3551 §4.1).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from server import protocol as p

_HEADER = struct.Struct("!BBHII")
_V2 = 0x80  # version 2, no padding, no extension, no CSRC
_MARKER = 0x80


@dataclass(frozen=True, slots=True)
class PayloadFormat:
    """How one output format is carried: the SDP's rtpmap and the RTP clock."""

    payload_type: int
    name: str  # the rtpmap encoding name
    clock_rate: int
    channels: int  # as the rtpmap states it (Opus is always 2 there, RFC 7587)
    frame_ticks: int  # RTP clock ticks per frame


def payload_format(out: p.OutputFormat, payload_type: int | None) -> PayloadFormat:
    """The RTP payload format of ``out`` (which ``check_output`` accepted for RTP)."""
    enc = out.encoding
    if enc == "opus":
        return PayloadFormat(_pt(payload_type, 111), "opus", 48000, 2, 48 * out.frame_ms)
    if enc in ("mulaw", "alaw"):
        static = 0 if enc == "mulaw" else 8
        name = "PCMU" if enc == "mulaw" else "PCMA"
        return PayloadFormat(_pt(payload_type, static), name, 8000, 1, 8 * out.frame_ms)
    rate = out.sample_rate
    return PayloadFormat(
        _pt(payload_type, 96), "L16", rate, out.channels, rate * out.frame_ms // 1000
    )


def _pt(asked: int | None, default: int) -> int:
    return default if asked is None else asked


@dataclass(frozen=True, slots=True)
class StreamIds:
    """SSRC and the random starts of sequence and timestamp (RFC 3550 §5.1)."""

    ssrc: int
    seq0: int
    ts0: int


def stream_ids(session_id: str, ssrc: int | None) -> StreamIds:
    """Derived from the session id rather than drawn at random, so the node that resumes
    a session continues the same stream (same SSRC, sequence numbers in line); the id
    is itself random, which is what the RFC asks of these values."""
    h = hashlib.sha256(b"voxwire-rtp:" + session_id.encode()).digest()
    derived_ssrc, seq0, ts0 = struct.unpack("!IHI", h[:10])
    return StreamIds(derived_ssrc if ssrc is None else ssrc, seq0, ts0)


class RtpPacketizer:
    __slots__ = ("_end_at", "_fmt", "_ids", "_ts", "started")

    def __init__(self, fmt: PayloadFormat, ids: StreamIds, ts_offset: int = 0) -> None:
        self._fmt = fmt
        self._ids = ids
        self._ts = (ids.ts0 + ts_offset) & 0xFFFFFFFF  # the next packet's timestamp
        self._end_at: float | None = None  # when the audio sent so far ends, played at real time
        self.started = False

    def packet(self, payload: bytes, frame: int, talkspurt: bool, now: float) -> bytes:
        """The packet for frame number ``frame`` leaving at ``now`` (seconds, monotonic);
        ``talkspurt``: it starts a talkspurt (the pacer's word, so both agree)."""
        fmt = self._fmt
        marker = 0
        if talkspurt or not self.started:
            marker = _MARKER
            if self._end_at is not None and now > self._end_at:
                # the silence since the last talkspurt ended, on the RTP clock
                gap = round((now - self._end_at) * fmt.clock_rate)
                self._ts = (self._ts + gap) & 0xFFFFFFFF
            self._end_at = now
            self.started = True
        assert self._end_at is not None
        head = _HEADER.pack(
            _V2,
            marker | fmt.payload_type,
            (self._ids.seq0 + frame) & 0xFFFF,
            self._ts,
            self._ids.ssrc,
        )
        self._ts = (self._ts + fmt.frame_ticks) & 0xFFFFFFFF
        self._end_at += fmt.frame_ticks / fmt.clock_rate
        return head + payload
