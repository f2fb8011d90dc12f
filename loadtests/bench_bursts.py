"""``voxwire bench bursts``: ten sessions whose first sentences arrive in the same
instant, against one session alone, on the real engine (issue 15).

Each configuration gets its own server, and the runs alternate between them, so
drift on a shared machine hits all alike. A lone turn: one session sends a sentence
and ``flush`` at once, timed from the send to the first audio frame. A burst: ten
open sessions each send a different sentence in the same instant (one task each,
released together); each is timed the same way. The sentences have 9-11 words and
no comma, so the first chunk is the whole sentence, unless the chunker cuts it short
because the engine is saturated (``chunk_hurry_words``; bench/hurry_prosody.py says
what that costs).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from loadtests import report
from loadtests.serverproc import VoxwireServer

if TYPE_CHECKING:
    from loadtests.bench import Opts

BURST = 10
SENTENCES = [
    "Your table for four is booked for tonight at eight.",
    "The next train to the airport leaves in twelve minutes.",
    "I have moved your appointment to Thursday morning at nine.",
    "The package should arrive at your door by tomorrow evening.",
    "Your current balance is one hundred and twenty dollars.",
    "The store on Main Street closes at six on Sundays.",
    "I sent the receipt to the email address on file.",
    "Your flight is on time and boards from gate twenty.",
    "The doctor can see you next Monday after lunch.",
    "We found three hotels near the beach with free parking.",
]
# Configurations compared: one engine process per usable CPU, every synthesis on every
# CPU, with first sentences whole; the same with first chunks cut short while the engine
# is saturated; and the default (a sentence made beside others on one thread;
# hurried). "cpus" is replaced by the usable CPUs. The default goes last.
CONFIGS: dict[str, dict[str, Any]] = {
    "one engine per CPU, every CPU each, first sentences whole (chunk_hurry_words=0)": {
        "engine_threads": "cpus",
        "engine_process_threads": "cpus",
        "engine_busy_threads": 0,
        "chunk_hurry_words": 0,
    },
    "one engine per CPU, every CPU each, first chunks hurried": {
        "engine_threads": "cpus",
        "engine_process_threads": "cpus",
        "engine_busy_threads": 0,
    },
    "default (a core each under load; first chunks hurried)": {},
}


class ConfigResult(msgspec.Struct, kw_only=True):
    config: str
    engine_threads: int
    lone_turns: int
    lone_p50_ms: float
    burst_sessions: int
    burst_p50_ms: float
    burst_p90_ms: float
    burst_p99_ms: float
    burst_max_ms: float
    ratio_p99_to_lone_p50: float
    # the 10th of ten equal chunks can come no sooner than this: ten lone syntheses,
    # as many at once as the cores hold (a synthesis under load takes engine_busy_threads
    # cores, or engine_process_threads where that is 0)
    floor_ms: float


class BurstsResult(msgspec.Struct, kw_only=True):
    cores: int
    configs: list[ConfigResult]


async def _open(url: str) -> Any:
    import websockets

    ws = await websockets.connect(url, max_size=None, open_timeout=30)
    out = {"encoding": "pcm_s16le", "sample_rate": 24000}
    await ws.send(json.dumps({"type": "start", "output": out}))
    while json.loads(await ws.recv())["type"] != "ready":
        pass
    return ws


async def _turn(ws: Any, text: str, go: asyncio.Event | None = None) -> float:
    """Send ``text`` and ``flush`` (after ``go``), read to ``flushed``: the TTFA in s."""
    if go is not None:
        await go.wait()
    t0 = time.perf_counter()
    await ws.send(json.dumps({"type": "text", "text": text}))
    await ws.send(json.dumps({"type": "flush"}))
    first: float | None = None
    while True:
        m = await ws.recv()
        if isinstance(m, bytes):
            if first is None:
                first = time.perf_counter() - t0
        elif json.loads(m).get("type") == "flushed":
            return first if first is not None else time.perf_counter() - t0


async def _lone(url: str, turns: int) -> list[float]:
    ws = await _open(url)
    try:
        await _turn(ws, SENTENCES[0])  # warm, not counted
        out = []
        for i in range(turns):
            await asyncio.sleep(0.2)
            out.append(await _turn(ws, SENTENCES[i % len(SENTENCES)]))
        return out
    finally:
        await ws.close()


async def _burst(url: str, rounds: int) -> list[float]:
    conns = [await _open(url) for _ in range(BURST)]
    try:
        out: list[float] = []
        for r in range(rounds):
            await asyncio.sleep(0.5)  # the engines idle again
            go = asyncio.Event()
            tasks = [
                asyncio.create_task(_turn(ws, SENTENCES[(i + r) % len(SENTENCES)], go))
                for i, ws in enumerate(conns)
            ]
            await asyncio.sleep(0.05)  # every task waits on go
            go.set()
            out.extend(await asyncio.gather(*tasks))
        return out
    finally:
        for ws in conns:
            await ws.close()


def _ms(xs: list[float], q: float) -> float:
    return round(float(np.percentile(xs, q)) * 1000, 1)


def bench_bursts(o: Opts) -> BurstsResult:
    from loadtests.bench import _finish, _goal
    from server.config import Settings, usable_cpus

    lone_turns = 3 if o.smoke else 20
    rounds = 1 if o.smoke else 10
    # The whole machine (the question is what a node does with it); the ten clients
    # cost little next to ten sentences of Piper.
    cores = usable_cpus()
    configs: dict[str, dict[str, Any]] = {
        name: {k: cores if v == "cpus" else v for k, v in cfg.items()}
        for name, cfg in CONFIGS.items()
    }
    defaults = Settings()
    servers = {name: VoxwireServer(None, **cfg) for name, cfg in configs.items()}
    lone: dict[str, list[float]] = {n: [] for n in servers}
    burst: dict[str, list[float]] = {n: [] for n in servers}
    try:
        for srv in servers.values():
            srv.wait_ready()
        # Alternate: half the work on each server, then the other half again.
        for _ in range(2):
            for name, srv in servers.items():
                lone[name] += asyncio.run(_lone(srv.ws_url, lone_turns // 2 or 1))
                burst[name] += asyncio.run(_burst(srv.ws_url, rounds // 2 or 1))
    finally:
        for srv in servers.values():
            srv.stop()
    rows = []
    for name in servers:
        threads = configs[name].get("engine_threads", defaults.engines())
        cfg = configs[name]
        per_process = cfg.get("engine_busy_threads", defaults.engine_busy_threads) or cfg.get(
            "engine_process_threads", defaults.engine_cpu_threads()
        )
        at_once = max(1, min(threads, cores // per_process))
        lone50 = _ms(lone[name], 50)
        p99 = _ms(burst[name], 99)
        rows.append(
            ConfigResult(
                config=name,
                engine_threads=threads,
                lone_turns=len(lone[name]),
                lone_p50_ms=lone50,
                burst_sessions=len(burst[name]),
                burst_p50_ms=_ms(burst[name], 50),
                burst_p90_ms=_ms(burst[name], 90),
                burst_p99_ms=p99,
                burst_max_ms=_ms(burst[name], 100),
                ratio_p99_to_lone_p50=round(p99 / lone50, 2) if lone50 else 0.0,
                floor_ms=round(lone50 * BURST / at_once, 1),
            )
        )
    result = BurstsResult(cores=cores, configs=rows)
    default = rows[-1]
    goals = [
        _goal(
            "burst of 10: first-audio p99 / lone p50 (default settings)",
            "<= 2.5",
            default.ratio_p99_to_lone_p50,
            lambda v: v <= 2.5,
        )
    ]
    md = report.md_table(
        [
            "configuration",
            "lone p50 ms",
            "burst p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "p99 / lone p50",
            "floor ms (10 × lone / at once)",
        ],
        [
            [
                r.config,
                r.lone_p50_ms,
                r.burst_p50_ms,
                r.burst_p90_ms,
                r.burst_p99_ms,
                r.burst_max_ms,
                r.ratio_p99_to_lone_p50,
                r.floor_ms,
            ]
            for r in rows
        ],
    )
    notes = [
        f"Piper, en_US-joe-medium, 24 kHz PCM; the server not pinned ({cores} CPUs), "
        "the clients in this process; one server per configuration, runs alternated.",
        f"Lone: {rows[0].lone_turns} turns of one session; burst: {rounds} rounds of "
        f"{BURST} sessions sending their sentence in the same instant. TTFA from the "
        "send to the first audio frame.",
        "Floor: ten syntheses of the lone one's length, as many at once as the cores hold "
        "(an engine process's onnxruntime threads each take one); the tenth cannot come "
        "sooner, whatever the scheduling.",
    ]
    _finish(o, "bursts", result, goals, notes, md)
    return result
