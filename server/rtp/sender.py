"""The UDP edge of RTP out: checks a destination against the node's policy, opens a
connected datagram socket to it and sends one packet per frame.

A connected socket because the kernel then also rejects anything arriving from
elsewhere, and ICMP errors (nobody listening) come back to ``error_received`` instead of
being lost; they are counted, never fatal: the session and its WebSocket go on.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Final

import structlog

from server import protocol as p
from server.rtp.packetizer import RtpPacketizer, payload_format, stream_ids
from server.rtp.policy import Destination, StartRate, refusal
from server.rtp.sdp import describe

log = structlog.get_logger("voxwire.rtp")

RESOLVE_TIMEOUT_S: Final = 2.0


class RtpGate:
    """The node's RTP policy: where to (allowlist), how often (per client) and how many."""

    def __init__(self, allow: tuple[Destination, ...], per_minute: int, max_streams: int) -> None:
        self.allow = allow
        self.rate = StartRate(per_minute)
        self.max_streams = max_streams
        self.active = 0


class _Socket(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.errors = 0

    def error_received(self, exc: Exception) -> None:
        self.errors += 1  # ICMP port unreachable and the like: the receiver is not there


class RtpStream:
    """One session's RTP stream: ``send`` each frame as the pacer lets it go."""

    def __init__(
        self,
        gate: RtpGate,
        transport: asyncio.DatagramTransport,
        proto: _Socket,
        packetizer: RtpPacketizer,
        sdp: str,
    ) -> None:
        self._gate = gate
        self._transport = transport
        self._proto = proto
        self._packetizer = packetizer
        self.sdp = sdp
        self.packets = 0
        self._closed = False

    def send(self, frame: bytes, number: int, talkspurt: bool, now: float) -> None:
        if self._closed:
            return
        self._transport.sendto(self._packetizer.packet(frame, number, talkspurt, now))
        self.packets += 1

    @property
    def errors(self) -> int:
        return self._proto.errors

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._gate.active -= 1
            self._transport.close()


async def _resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM), RESOLVE_TIMEOUT_S
        )
    except (OSError, TimeoutError, ValueError) as exc:  # ValueError: IDNA (label too long)
        raise p.ProtocolError(
            "rtp_destination_refused", f"output.transport.host {host!r} does not resolve ({exc})"
        ) from None
    return [str(info[4][0]) for info in infos]


async def open_stream(
    gate: RtpGate,
    out: p.OutputFormat,
    session_id: str,
    client: str,
    elapsed_s: float = 0.0,
) -> RtpStream:
    """The stream ``out.transport`` asks for, or ProtocolError saying why not; nothing is
    sent to a refused destination. ``client``: who the start rate is counted for (the
    API key or the peer's address). ``elapsed_s``: how long the session has run (a
    resume), so its timestamps go on from where another node left them."""
    t = out.transport
    assert t is not None
    if not gate.allow:  # before resolving: a server with RTP off does no DNS for anyone
        raise p.ProtocolError("rtp_destination_refused", refusal(gate.allow, "0.0.0.0", 0) or "")
    if gate.max_streams and gate.active >= gate.max_streams:
        raise p.ProtocolError(
            "rtp_unavailable",
            f"this node sends its maximum of {gate.max_streams} RTP streams (rtp_max_streams)",
        )
    # Counted before the name is resolved, refused or not: a client cannot make the
    # server do DNS lookups faster than it may start streams.
    if not gate.rate.take(client, time.monotonic()):
        raise p.ProtocolError(
            "rtp_rate_limited",
            f"more than {gate.rate.per_minute} new RTP streams in a minute "
            "(rtp_streams_per_minute); try again later",
        )
    addrs = await _resolve(t.host, t.port)
    ip = next((a for a in addrs if refusal(gate.allow, a, t.port) is None), None)
    if ip is None:
        why = refusal(gate.allow, addrs[0], t.port)
        named = f"{t.host} ({addrs[0]})" if addrs[0] != t.host else t.host
        raise p.ProtocolError(
            "rtp_destination_refused", f"RTP to {named} port {t.port} is refused: {why}"
        )
    loop = asyncio.get_running_loop()
    try:
        transport, proto = await loop.create_datagram_endpoint(_Socket, remote_addr=(ip, t.port))
    except OSError as exc:  # no route to it from this node, for one
        raise p.ProtocolError(
            "rtp_destination_refused", f"cannot send RTP to {ip} port {t.port} ({exc})"
        ) from None
    gate.active += 1
    fmt = payload_format(out, t.payload_type)
    ids = stream_ids(session_id, t.ssrc)
    origin = str(transport.get_extra_info("sockname")[0])
    sdp = describe(out, fmt, ids.ssrc, ip, t.port, origin)
    packetizer = RtpPacketizer(fmt, ids, round(elapsed_s * fmt.clock_rate))
    log.info("rtp_stream_open", session_id=session_id, dest=f"{ip}:{t.port}", codec=fmt.name)
    return RtpStream(gate, transport, proto, packetizer, sdp)
