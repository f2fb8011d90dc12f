"""``voxwire bench rtp``: how evenly paced RTP arrives, and what pacing costs (issue 14).

One server (the zero-cost ``replay`` engine, so the engine never stalls and what is
measured is the pacer and the event loop) and three ways of sending the same long
utterance, each at 1 and at N concurrent streams, side by side in one run:

- ``rtp``: ``output.transport`` RTP (µ-law 8 kHz, 20 ms packets, the default 40 ms
  lead) to a UDP socket of this process, which timestamps every packet on arrival;
- ``ws paced``: the same frames on the WebSocket with ``pacing`` realtime, lead 200 ms;
- ``ws unpaced``: the WebSocket as fast as frames are made (the default).

Jitter is a packet's inter-arrival time minus the frame length, over every packet
after a stream's first (p50/p99 of its absolute value), and RFC 3550's smoothed
interarrival jitter (§6.4.1, in ms) at each stream's end. ``talkspurts`` counts
packets with the marker bit beyond each stream's first: a receiver that ran dry.
CPU is the server's CPU seconds over the step divided by the audio it sent, as ms of
CPU per second of audio (a stream's cost, whatever its pace).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from loadtests import report
from loadtests.serverproc import VoxwireServer

if TYPE_CHECKING:
    from loadtests.bench import Opts

MODES = ("rtp", "ws paced", "ws unpaced")
TEXT = (
    "The quarterly report shows steady growth across every region, with the strongest "
    "results in the north. Costs held flat while revenue rose, and the new service line "
    "brought in its first customers ahead of plan. "
)
FRAME_S = 0.02


class ModeResult(msgspec.Struct, kw_only=True):
    mode: str
    streams: int
    audio_s: float  # per stream
    wall_s: float
    jitter_p50_ms: float | None
    jitter_p99_ms: float | None
    rfc3550_jitter_ms: float | None
    talkspurts: int | None  # extra talkspurts: a receiver ran dry
    cpu_ms_per_audio_s: float


class RtpBenchResult(msgspec.Struct, kw_only=True):
    rows: list[ModeResult]
    cpu_paced_over_unpaced: float  # at N streams: RTP's CPU per audio second / unpaced WS's


@dataclass
class _Arrivals(asyncio.DatagramProtocol):
    times: list[float] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    markers: int = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.times.append(time.monotonic())
        self.ts.append(int.from_bytes(data[4:8], "big"))
        self.markers += data[1] >> 7


def _output(mode: str, port: int) -> dict[str, Any]:
    out: dict[str, Any] = {"encoding": "mulaw", "sample_rate": 8000, "frame_ms": 20}
    if mode == "rtp":
        out["transport"] = {"type": "rtp", "host": "127.0.0.1", "port": port}
    elif mode == "ws paced":
        out["pacing"] = {"mode": "realtime", "lead_ms": 200}
    return out


async def _stream(srv: VoxwireServer, mode: str, text: str) -> tuple[list[float], int, int]:
    """One session: (arrival times of its frames, frames, markers beyond the first)."""
    import websockets

    loop = asyncio.get_running_loop()
    transport, rx = await loop.create_datagram_endpoint(_Arrivals, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        async with websockets.connect(srv.ws_url, max_size=None, open_timeout=60) as ws:
            start = {"type": "start", "engine": "replay", "output": _output(mode, port)}
            await ws.send(json.dumps(start))
            await ws.send(json.dumps({"type": "text", "text": text}))
            await ws.send(json.dumps({"type": "end"}))
            frames = 0
            async for msg in ws:
                if isinstance(msg, bytes):
                    rx.times.append(time.monotonic())
                    continue
                ev = json.loads(msg)
                if ev["type"] == "done":
                    frames = ev["frames"]
                    break
                if ev["type"] == "error" and ev["fatal"]:
                    raise RuntimeError(ev)
        deadline = time.monotonic() + 2
        while len(rx.times) < frames and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        return rx.times, frames, max(0, rx.markers - 1)
    finally:
        transport.close()


def _rfc3550_jitter(times: list[float]) -> float:
    j = 0.0
    for a, b in itertools.pairwise(times):
        d = abs((b - a) - FRAME_S)
        j += (d - j) / 16
    return j


async def _step(srv: VoxwireServer, mode: str, n: int, text: str) -> ModeResult:
    cpu0, t0 = srv.cpu_s(), time.monotonic()
    runs = await asyncio.gather(*(_stream(srv, mode, text) for _ in range(n)))
    wall, cpu = time.monotonic() - t0, srv.cpu_s() - cpu0
    frames = sum(f for _, f, _ in runs)
    audio_s = frames * FRAME_S
    paced = mode != "ws unpaced"
    devs = np.concatenate(
        [np.abs(np.diff(np.asarray(t)) - FRAME_S) for t, _, _ in runs if len(t) > 1]
    )
    return ModeResult(
        mode=mode,
        streams=n,
        audio_s=round(audio_s / n, 2),
        wall_s=round(wall, 2),
        jitter_p50_ms=round(float(np.percentile(devs, 50)) * 1000, 2) if paced else None,
        jitter_p99_ms=round(float(np.percentile(devs, 99)) * 1000, 2) if paced else None,
        rfc3550_jitter_ms=(
            round(float(np.mean([_rfc3550_jitter(t) for t, _, _ in runs])) * 1000, 2)
            if paced
            else None
        ),
        talkspurts=sum(m for _, _, m in runs) if mode == "rtp" else None,
        cpu_ms_per_audio_s=round(cpu / audio_s * 1000, 3),
    )


async def _run(srv: VoxwireServer, counts: list[int], text: str) -> list[ModeResult]:
    await _stream(srv, "rtp", "Warm up.")  # first-use costs out of the figures
    rows = []
    for n in counts:
        for mode in MODES:
            rows.append(await _step(srv, mode, n, text))
            await asyncio.sleep(0.5)
    return rows


def bench_rtp(o: Opts) -> RtpBenchResult:
    from loadtests.bench import _finish

    counts = [1, 4] if o.smoke else [1, 50]
    # ~3 s of speech for the smoke run (paced streams take their length in real time)
    text = TEXT.split(". ")[0] + "." if o.smoke else TEXT * 2  # ~20 s in the real run
    srv = VoxwireServer(
        o.server_cpus or None,
        replay_engine=True,
        rtp_allowed_destinations="127.0.0.1/32",
        rtp_streams_per_minute=0,
        rtp_max_streams=0,
        max_sessions=1000,
    )
    try:
        srv.wait_ready()
        rows = asyncio.run(_run(srv, counts, text))
    finally:
        srv.stop()
    at_n = {r.mode: r for r in rows if r.streams == counts[-1]}
    ratio = round(at_n["rtp"].cpu_ms_per_audio_s / at_n["ws unpaced"].cpu_ms_per_audio_s, 2)
    result = RtpBenchResult(rows=rows, cpu_paced_over_unpaced=ratio)

    def opt(x: float | int | None) -> Any:
        return "—" if x is None else x

    md = report.md_table(
        [
            "mode",
            "streams",
            "audio s / stream",
            "wall s",
            "jitter p50 ms",
            "jitter p99 ms",
            "RFC 3550 jitter ms",
            "extra talkspurts",
            "server CPU ms / audio s",
        ],
        [
            [
                r.mode,
                r.streams,
                r.audio_s,
                r.wall_s,
                opt(r.jitter_p50_ms),
                opt(r.jitter_p99_ms),
                opt(r.rfc3550_jitter_ms),
                opt(r.talkspurts),
                r.cpu_ms_per_audio_s,
            ]
            for r in rows
        ],
    )
    notes = [
        "Zero-cost replay engine; µ-law 8 kHz, 20 ms frames; all streams of a step start "
        "at once and speak the same long text; receivers are in the benchmark process.",
        "Jitter: |inter-arrival − 20 ms| over every packet after a stream's first; RFC "
        "3550 jitter is §6.4.1's smoothed estimate at each stream's end, averaged.",
        f"CPU of paced RTP over unpaced WebSocket at {counts[-1]} streams, per audio "
        f"second: {ratio}.",
    ]
    _finish(o, "rtp", result, [], notes, md)
    return result
