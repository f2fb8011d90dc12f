"""The SDP in ``ready``, checked line by line (RFC 8866, RFC 7587 §7)."""

from __future__ import annotations

from server import protocol as p
from server.rtp.packetizer import payload_format
from server.rtp.sdp import describe


def _lines(sdp: str) -> list[str]:
    assert sdp.endswith("\r\n")
    return sdp.split("\r\n")[:-1]


def test_opus_stereo() -> None:
    out = p.OutputFormat(encoding="opus", sample_rate=48000, frame_ms=20, channels=2)
    lines = _lines(describe(out, payload_format(out, None), 42, "10.1.2.3", 40000, "10.0.0.9"))
    assert lines[:6] == [
        "v=0",
        "o=voxwire 42 1 IN IP4 10.0.0.9",
        "s=voxwire",
        "c=IN IP4 10.1.2.3",
        "t=0 0",
        "m=audio 40000 RTP/AVP 111",
    ]
    assert "a=rtpmap:111 opus/48000/2" in lines
    fmtp = next(x for x in lines if x.startswith("a=fmtp:111 "))
    assert "stereo=1" in fmtp and "sprop-stereo=1" in fmtp
    assert "sprop-maxcapturerate=48000" in fmtp
    assert "a=ptime:20" in lines and "a=sendonly" in lines


def test_pcmu_and_l16_over_ipv6() -> None:
    mu = p.OutputFormat(encoding="mulaw", sample_rate=8000)
    lines = _lines(describe(mu, payload_format(mu, None), 7, "fd00::5", 5004, "fd00::1"))
    assert "c=IN IP6 fd00::5" in lines and "m=audio 5004 RTP/AVP 0" in lines
    assert "a=rtpmap:0 PCMU/8000" in lines and not any(x.startswith("a=fmtp") for x in lines)
    l16 = p.OutputFormat(encoding="pcm_s16be", sample_rate=16000, frame_ms=40)
    lines = _lines(describe(l16, payload_format(l16, 97), 7, "127.0.0.1", 5004, "127.0.0.1"))
    assert "a=rtpmap:97 L16/16000" in lines and "a=ptime:40" in lines
