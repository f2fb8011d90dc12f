"""``voxwire bench isolation``: what running the engine in its own processes costs
(issue 11): time to first audio and CPU per audio second, Piper in the server's
process (``engine_isolation=thread``) against Piper in supervised engine processes
(``process``), side by side in one run.

Both servers run at once on the same CPUs; their turns alternate (which goes first
alternates too), so drift on a shared machine hits both alike. A turn is one
sentence sent whole with a flush, timed from the send to the first frame and to
``flushed``. CPU counts the server and its engine processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from loadtests import report
from loadtests.machine import proc_cpu_s, rss_bytes
from loadtests.serverproc import VoxwireServer

if TYPE_CHECKING:
    from loadtests.bench import Opts

MODES = ("thread", "process")
SENTENCES = [
    "Sure, I can help you with that.",
    "Your appointment is booked for Tuesday at three in the afternoon.",
    "The package left our warehouse this morning and should arrive tomorrow.",
    "Let me check the balance on your account for a moment.",
    "Would you like me to send a confirmation to your email address as well?",
    "The weather in Lisbon will be sunny with a high of twenty four degrees.",
]


class ModeResult(msgspec.Struct, kw_only=True):
    mode: str
    turns: int
    ttfa_p50_ms: float
    ttfa_p90_ms: float
    flushed_p50_ms: float
    audio_s: float
    cpu_s: float
    cpu_per_audio_s: float
    rss_mb: float  # server plus engine processes, at the end


class IsolationResult(msgspec.Struct, kw_only=True):
    modes: list[ModeResult]
    ttfa_p50_delta_ms: float  # process minus thread
    cpu_ratio: float  # process over thread


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _tree_sum(pid: int, of: Callable[[int], float]) -> float:
    """``of`` summed over a process and its children (the engine processes)."""
    total = of(pid)
    for c in _children(pid):
        with contextlib.suppress(OSError):
            total += of(c)
    return total


def _tree_cpu_s(pid: int) -> float:
    return _tree_sum(pid, proc_cpu_s)


def _tree_rss_mb(pid: int) -> float:
    return _tree_sum(pid, rss_bytes) / 2**20


async def _turn(ws: Any, text: str) -> tuple[float, float, int]:
    """(first frame s, flushed s, frames) for one sentence."""
    t0 = time.perf_counter()
    await ws.send(json.dumps({"type": "text", "text": text}))
    await ws.send(json.dumps({"type": "flush"}))
    first: float | None = None
    frames = 0
    while True:
        m = await ws.recv()
        if isinstance(m, bytes):
            frames += 1
            if first is None:
                first = time.perf_counter() - t0
        elif json.loads(m)["type"] == "flushed":
            total = time.perf_counter() - t0
            return (first if first is not None else total), total, frames


async def _run(servers: dict[str, VoxwireServer], turns: int) -> dict[str, ModeResult]:
    import websockets

    conns = {}
    for mode, srv in servers.items():
        ws = await websockets.connect(srv.ws_url, max_size=None, open_timeout=30)
        await ws.send(json.dumps({"type": "start"}))
        while json.loads(await ws.recv())["type"] != "ready":
            pass
        conns[mode] = ws
    for ws in conns.values():  # one warm turn each, not counted
        await _turn(ws, SENTENCES[0])
    ttfa: dict[str, list[float]] = {m: [] for m in servers}
    done: dict[str, list[float]] = {m: [] for m in servers}
    frames = dict.fromkeys(servers, 0)
    cpu0 = {m: _tree_cpu_s(s.pid) for m, s in servers.items()}
    for i in range(turns):
        order = list(servers) if i % 2 == 0 else list(reversed(servers))
        for mode in order:
            first, total, n = await _turn(conns[mode], SENTENCES[i % len(SENTENCES)])
            ttfa[mode].append(first)
            done[mode].append(total)
            frames[mode] += n
    out = {}
    for mode, srv in servers.items():
        cpu = _tree_cpu_s(srv.pid) - cpu0[mode]
        audio_s = frames[mode] * 0.02
        out[mode] = ModeResult(
            mode=mode,
            turns=turns,
            ttfa_p50_ms=round(float(np.percentile(ttfa[mode], 50)) * 1000, 1),
            ttfa_p90_ms=round(float(np.percentile(ttfa[mode], 90)) * 1000, 1),
            flushed_p50_ms=round(float(np.percentile(done[mode], 50)) * 1000, 1),
            audio_s=round(audio_s, 2),
            cpu_s=round(cpu, 3),
            cpu_per_audio_s=round(cpu / audio_s, 4) if audio_s else 0.0,
            rss_mb=round(_tree_rss_mb(srv.pid), 1),
        )
        await conns[mode].close()
    return out


def bench_isolation(o: Opts) -> IsolationResult:
    from loadtests.bench import _finish

    turns = 4 if o.smoke else 60
    servers = {
        m: VoxwireServer(o.server_cpus or None, engine_isolation=m, engine_threads=1) for m in MODES
    }
    try:
        for srv in servers.values():
            srv.wait_ready()
        res = asyncio.run(_run(servers, turns))
    finally:
        for srv in servers.values():
            srv.stop()
    t, p = res["thread"], res["process"]
    result = IsolationResult(
        modes=[t, p],
        ttfa_p50_delta_ms=round(p.ttfa_p50_ms - t.ttfa_p50_ms, 1),
        cpu_ratio=round(p.cpu_per_audio_s / t.cpu_per_audio_s, 3) if t.cpu_per_audio_s else 0.0,
    )
    rows = [
        [
            r.mode,
            r.turns,
            r.ttfa_p50_ms,
            r.ttfa_p90_ms,
            r.flushed_p50_ms,
            r.audio_s,
            round(r.cpu_per_audio_s * 1000, 1),
            r.rss_mb,
        ]
        for r in (t, p)
    ]
    md = report.md_table(
        [
            "engine runs in",
            "turns",
            "first audio p50 ms",
            "p90 ms",
            "flushed p50 ms",
            "audio s",
            "CPU ms per audio s",
            "RSS MiB (all processes)",
        ],
        rows,
    )
    md += (
        f"\nFirst audio p50, process minus thread: {result.ttfa_p50_delta_ms:+.1f} ms; "
        f"CPU per audio second, process over thread: {result.cpu_ratio:.3f}.\n"
    )
    notes = [
        "One session per server, both servers up at once on the same CPUs, turns "
        "alternating; a turn is one sentence and a flush.",
        "RSS counts the engine processes (engine_threads + engine_spare_processes of them, "
        "each with its own copy of the model).",
    ]
    _finish(o, "isolation", result, [], notes, md)
    return result
