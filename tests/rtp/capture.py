"""RTP test support: a UDP listener that keeps each packet with its arrival time, the
RTP header read back (RFC 3550 §5.1, parsed here only to check what the server sent),
and external receivers (ffmpeg, GStreamer) run as subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import struct
import subprocess
import time
from asyncio.subprocess import Process
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tests.support import Samples


@dataclass(frozen=True)
class Packet:
    at: float  # monotonic arrival
    marker: bool
    payload_type: int
    seq: int
    ts: int
    ssrc: int
    payload: bytes


def parse(data: bytes, at: float) -> Packet:
    b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", data[:12])
    assert b0 >> 6 == 2, "RTP version 2"
    assert b0 & 0x3F == 0, "no padding, extension or CSRC"
    return Packet(at, bool(b1 & 0x80), b1 & 0x7F, seq, ts, ssrc, data[12:])


@dataclass
class _Listener(asyncio.DatagramProtocol):
    packets: list[Packet] = field(default_factory=list)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets.append(parse(data, time.monotonic()))


@contextlib.asynccontextmanager
async def listen(host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[tuple[int, list[Packet]]]:
    """A UDP listener: (its port, the packets it got so far)."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_Listener, local_addr=(host, port))
    try:
        yield transport.get_extra_info("sockname")[1], proto.packets
    finally:
        transport.close()


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _bound(port: int) -> bool:
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                local = line.split()[1]
                if int(local.rsplit(":", 1)[1], 16) == port:
                    return True
    return False


async def started(cmd: list[str], port: int, timeout: float = 15.0) -> Process:
    """Run a receiver and wait until it listens on ``port``."""
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + timeout
    while not _bound(port):
        if proc.returncode is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            _, err = await proc.communicate()
            raise AssertionError(f"{cmd[0]} did not listen on {port}: {err.decode()[-2000:]}")
        await asyncio.sleep(0.05)
    return proc


async def stop(proc: Process, out: Path) -> Samples:
    """Interrupt a receiver (both ffmpeg and gst-launch -e finish their output on SIGINT)
    and read the 16-bit mono PCM it wrote."""
    proc.send_signal(signal.SIGINT)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    except TimeoutError:
        proc.kill()
        _, err = await proc.communicate()
    return _pcm(out, err.decode())


def _pcm(out: Path, err: str) -> Samples:
    data = out.read_bytes() if out.exists() else b""
    assert data, f"receiver wrote nothing: {err[-2000:]}"
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def ahead_of_real_time(packets: list[Packet], frame_s: float) -> list[float]:
    """What a receiver that plays each packet as it arrives holds in its buffer, after
    each arrival (playback starts with the first packet and after running dry)."""
    out = []
    t0: float | None = None
    got = 0.0
    for pkt in packets:
        if t0 is None or pkt.at - t0 >= got:  # ran dry: a new talkspurt
            t0, got = pkt.at, 0.0
        got += frame_s
        out.append(got - (pkt.at - t0))
    return out
