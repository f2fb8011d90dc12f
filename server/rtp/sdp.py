"""The SDP (RFC 8866) describing one RTP stream voxwire sends, for the receiver: a
media server or a player (``ffmpeg -i stream.sdp``) is configured from it (sans-I/O).

``c=`` and ``m=`` name the destination the packets go to, which is where the receiver
listens; the origin names voxwire. Opus is ``opus/48000/2`` in the rtpmap whatever is
coded (RFC 7587 §7); ``stereo``/``sprop-stereo`` and ``sprop-maxcapturerate`` say what
is really sent.
"""

from __future__ import annotations

import ipaddress

from server import protocol as p
from server.rtp.packetizer import PayloadFormat


def _addr(ip: str) -> str:
    version = ipaddress.ip_address(ip).version
    return f"IN IP{version} {ip}"


def describe(
    out: p.OutputFormat,
    fmt: PayloadFormat,
    ssrc: int,
    dest_ip: str,
    dest_port: int,
    origin_ip: str,
    session_version: int = 1,
) -> str:
    pt = fmt.payload_type
    rtpmap = f"{fmt.name}/{fmt.clock_rate}"
    if fmt.channels > 1:
        rtpmap += f"/{fmt.channels}"
    lines = [
        "v=0",
        f"o=voxwire {ssrc} {session_version} {_addr(origin_ip)}",
        "s=voxwire",
        f"c={_addr(dest_ip)}",
        "t=0 0",
        f"m=audio {dest_port} RTP/AVP {pt}",
        f"a=rtpmap:{pt} {rtpmap}",
    ]
    if out.encoding == "opus":
        stereo = int(out.channels == 2)
        lines.append(
            f"a=fmtp:{pt} minptime=10;useinbandfec=0;stereo={stereo};sprop-stereo={stereo};"
            f"sprop-maxcapturerate={out.sample_rate}"
        )
    lines += [f"a=ptime:{out.frame_ms}", f"a=ssrc:{ssrc} cname:voxwire", "a=sendonly"]
    return "\r\n".join(lines) + "\r\n"
