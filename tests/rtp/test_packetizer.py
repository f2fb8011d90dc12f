"""RTP packets, checked without sockets."""

from __future__ import annotations

from server import protocol as p
from server.rtp.packetizer import RtpPacketizer, payload_format, stream_ids
from tests.rtp.capture import parse


def _opus(rate: int = 24000, frame_ms: int = 20, channels: int = 1) -> p.OutputFormat:
    return p.OutputFormat(
        encoding="opus",
        sample_rate=rate,
        frame_ms=frame_ms,
        channels=channels,  # type: ignore[arg-type]
    )


def test_payload_formats_follow_the_rfcs() -> None:
    # Opus: 48 kHz RTP clock whatever the coded rate (RFC 7587), 2 in the rtpmap
    f = payload_format(_opus(8000, 60), None)
    assert (f.payload_type, f.name, f.clock_rate, f.channels, f.frame_ticks) == (
        111, "opus", 48000, 2, 2880
    )  # fmt: skip
    mu = payload_format(p.OutputFormat(encoding="mulaw", sample_rate=8000), None)
    assert (mu.payload_type, mu.name, mu.clock_rate, mu.frame_ticks) == (0, "PCMU", 8000, 160)
    a = payload_format(p.OutputFormat(encoding="alaw", sample_rate=8000, frame_ms=10), None)
    assert (a.payload_type, a.name, a.frame_ticks) == (8, "PCMA", 80)
    l16 = payload_format(p.OutputFormat(encoding="pcm_s16be", sample_rate=16000, channels=2), 98)
    assert (l16.payload_type, l16.name, l16.clock_rate, l16.channels, l16.frame_ticks) == (
        98, "L16", 16000, 2, 320
    )  # fmt: skip


def test_ids_are_stable_per_session_and_the_ssrc_can_be_chosen() -> None:
    a, b = stream_ids("session-a", None), stream_ids("session-a", None)
    assert a == b  # a node that resumes the session continues the same stream
    assert stream_ids("session-b", None) != a
    assert stream_ids("session-a", 1234).ssrc == 1234


def test_header_sequence_timestamp_and_marker() -> None:
    fmt = payload_format(_opus(), None)
    ids = stream_ids("s", 0xDEADBEEF)
    pk = RtpPacketizer(fmt, ids)
    pkts = [parse(pk.packet(b"x" * 40, n, n == 0, n * 0.02), 0) for n in range(5)]
    assert [q.seq for q in pkts] == [(ids.seq0 + n) & 0xFFFF for n in range(5)]
    assert [q.ts for q in pkts] == [(ids.ts0 + 960 * n) & 0xFFFFFFFF for n in range(5)]
    assert [q.marker for q in pkts] == [True, False, False, False, False]
    assert {q.ssrc for q in pkts} == {0xDEADBEEF} and {q.payload_type for q in pkts} == {111}
    assert pkts[0].payload == b"x" * 40


def test_a_talkspurt_after_silence_gets_the_marker_and_the_gap_in_its_timestamp() -> None:
    fmt = payload_format(p.OutputFormat(encoding="mulaw", sample_rate=8000), None)
    pk = RtpPacketizer(fmt, stream_ids("s", 1))
    first = parse(pk.packet(b"\xff" * 160, 0, True, 10.0), 0)
    parse(pk.packet(b"\xff" * 160, 1, False, 10.02), 0)  # audio ends at 10.04
    late = parse(pk.packet(b"\xff" * 160, 2, True, 11.04), 0)  # one second of silence
    assert late.marker and late.seq == (first.seq + 2) & 0xFFFF
    assert (late.ts - first.ts) % 2**32 == 2 * 160 + 8000


def test_sequence_and_timestamp_wrap() -> None:
    fmt = payload_format(_opus(), None)
    ids = stream_ids("s", 1)
    pk = RtpPacketizer(fmt, ids, ts_offset=2**32 - ids.ts0 - 960)  # one frame from the wrap
    a = parse(pk.packet(b"", 65535 - ids.seq0, True, 0.0), 0)
    b = parse(pk.packet(b"", 65536 - ids.seq0, False, 0.02), 0)
    assert (a.seq, b.seq) == (65535, 0)
    assert (a.ts, b.ts) == (2**32 - 960, 0)


def test_a_resumed_stream_starts_its_timestamps_where_the_time_is() -> None:
    fmt = payload_format(_opus(), None)
    ids = stream_ids("s", 1)
    pk = RtpPacketizer(fmt, ids, ts_offset=round(12.5 * 48000))
    q = parse(pk.packet(b"", 600, True, 0.0), 0)
    assert q.ts == (ids.ts0 + 600_000) & 0xFFFFFFFF and q.seq == (ids.seq0 + 600) & 0xFFFF
