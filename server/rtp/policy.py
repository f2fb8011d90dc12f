"""Who may make the server send UDP, and where (sans-I/O).

An RTP transport lets a client name any address, so without a policy the server is a
UDP cannon pointed by strangers (floods, reflection towards third parties). Hence:
an allowlist of networks and port ranges (empty: RTP is off), a per-client rate of
new RTP streams, and a cap on streams per node. A stream's own packet rate needs no
limit: it is paced at real time, one frame per packet.

Allowlist syntax (``rtp_allowed_destinations``, comma-separated): ``CIDR`` or
``CIDR:PORTS`` where PORTS is ``N`` or ``N-M``; IPv6 networks in brackets when a port
follows (``[fd00::/8]:40000-40999``). A network without ports allows ports 1024-65535:
never the well-known ones (DNS, NTP...) unless named.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_UNPRIVILEGED = (1024, 65535)


@dataclass(frozen=True, slots=True)
class Destination:
    network: Network
    ports: tuple[int, int]

    def allows(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
        return ip in self.network and self.ports[0] <= port <= self.ports[1]

    def __str__(self) -> str:
        lo, hi = self.ports
        return f"{self.network}:{lo}" + (f"-{hi}" if hi != lo else "")


def _ports(text: str, entry: str) -> tuple[int, int]:
    lo_s, _, hi_s = text.partition("-")
    try:
        lo, hi = int(lo_s), int(hi_s or lo_s)
    except ValueError:
        raise ValueError(f"rtp_allowed_destinations: bad port range in {entry!r}") from None
    if not 1 <= lo <= hi <= 65535:
        raise ValueError(f"rtp_allowed_destinations: ports out of 1-65535 in {entry!r}")
    return lo, hi


def _entry(entry: str) -> Destination:
    net_s, ports_s = entry, ""
    if entry.startswith("["):  # [v6net]:ports
        net_s, _, rest = entry[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"rtp_allowed_destinations: expected ]:PORTS in {entry!r}")
            ports_s = rest[1:]
    elif entry.count(":") == 1:  # v4net:ports (a bare v6 network has several colons)
        net_s, ports_s = entry.split(":")
    try:
        network = ipaddress.ip_network(net_s, strict=False)
    except ValueError:
        raise ValueError(
            f"rtp_allowed_destinations: {net_s!r} is not an IP network (in {entry!r})"
        ) from None
    return Destination(network, _ports(ports_s, entry) if ports_s else _UNPRIVILEGED)


def parse_allowlist(text: str) -> tuple[Destination, ...]:
    """Parse the setting; a bad entry raises ValueError naming it."""
    return tuple(_entry(e.strip()) for e in text.split(",") if e.strip())


def refusal(allow: tuple[Destination, ...], ip: str, port: int) -> str | None:
    """Why ``ip``:``port`` is refused, or None when an entry allows it."""
    if not allow:
        return "RTP output is off on this server (rtp_allowed_destinations is empty)"
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    if any(d.allows(addr, port) for d in allow):
        return None
    return f"{ip} port {port} is not in rtp_allowed_destinations ({', '.join(map(str, allow))})"


class StartRate:
    """New RTP streams per client per minute: a sliding window of start times."""

    __slots__ = ("_starts", "per_minute")

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute  # 0: unlimited
        self._starts: dict[str, deque[float]] = {}

    def take(self, client: str, now: float) -> bool:
        """Count a start for ``client`` if it is within the rate; False if not."""
        if self.per_minute <= 0:
            return True
        q = self._starts.setdefault(client, deque())
        while q and now - q[0] >= 60.0:
            q.popleft()
        if len(q) >= self.per_minute:
            return False
        q.append(now)
        self._prune(now)
        return True

    def _prune(self, now: float) -> None:
        # Forget clients whose window emptied, so the map does not grow with every
        # address that ever started a stream.
        if len(self._starts) > 1024:
            for k in [k for k, q in self._starts.items() if not q or now - q[-1] >= 60.0]:
                del self._starts[k]
