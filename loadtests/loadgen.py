"""Load generator: N concurrent LLM-paced sessions against a voxwire server, each
judged by a model of a real-time player.

A session speaks in turns. A turn streams one paragraph as LLM tokens at
``tokens_per_s`` (each token its own ``text`` message, gaps jittered ±50 %), then
``flush``, and reads until ``flushed``. With ``pace_playback`` the next turn starts
only when the player would have finished playing this one (plus ``think_s``), so a
session consumes audio at real time, like a call, and N sessions are N real-time
streams.

Player model (per turn): playback starts at the first frame's arrival plus a jitter
buffer ``J``; frame k must be there by ``first + J + k·frame``. Lateness is arrival
minus that deadline (negative = early); an underrun is a frame that arrives after
its deadline, and a run of consecutive late frames counts as one episode (what a
listener hears as one stall). The server sends audio as fast as it is made, so
frames are mostly early; lateness shows when a chunk's audio comes later than the
player needs it (engine queueing, a busy event loop).

Time to first audio (TTFA) of a turn is measured from sending the text piece that
completes the first chunk (found by running the server's own chunker on the same
pieces, :func:`loadtests.textgen.first_chunk_at`) to the first frame's arrival.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import msgspec
import numpy as np

from loadtests import report, textgen
from loadtests.machine import CpuWindow
from loadtests.serverproc import VoxwireServer
from server.protocol import Done, Encoding, Error, Flushed, OutputFormat
from voxwire.client import Audio, Session, VoxwireError, connect


class LoadConfig(msgspec.Struct, kw_only=True):
    """One load step's parameters (also written to the result file)."""

    url: str
    engine: str = "replay"
    encoding: str = "opus"
    sample_rate: int = 24000
    frame_ms: int = 20
    ramp_s: float = 5.0  # sessions start evenly spread over this time
    duration_s: float = 30.0  # from the end of the ramp; turns started before it finish
    tokens_per_s: float = 40.0
    sentences: tuple[int, int] = (2, 4)  # per paragraph, inclusive range
    jitter_buffer_ms: float = 100.0
    pace_playback: bool = True
    think_s: float = 0.0  # pause between a turn's playback end and the next turn
    max_turns: int = 0  # per session; 0 = as many as fit in the duration
    turn_timeout_s: float = 60.0
    seed: int = 1
    # resume a dropped session (voxwire.client); off, a drop counts as a failed session
    resume: bool = False


class StepResult(msgspec.Struct, kw_only=True):
    """What one step of N concurrent sessions measured."""

    sessions: int  # concurrent sessions N
    sessions_run: int  # sessions opened in all (more than N when sessions churn)
    sessions_failed: int
    errors: dict[str, int]  # error code (or client-side failure) -> count
    close_codes: dict[str, int]
    turns: int
    turns_failed: int
    frames: int
    audio_s: float
    ttfa_ms: dict[str, float | None]  # p50/p90/p99/max, from the completing text
    ttfa_turn_ms: dict[str, float | None]  # from the turn's first text
    lateness_ms: dict[str, float | None]  # over all frames: p50/p90/p99/p999/max
    underrun_episodes: int
    underrun_frames: int
    sessions_with_underruns: int
    wall_s: float
    hold_s: float
    server_cpu: float  # cores used by the server process during the hold window
    server_loop_cpu: float  # of which the server's event-loop thread (the rest: engine threads)
    stream_rate: float  # audio seconds received per second during the hold window
    server_cpu_ms_per_audio_s: float | None  # server CPU per second of audio delivered
    client_cpu: float  # cores used by this load generator
    other_cpu: float  # cores used by every other process on the machine
    server_rss_mib: float | None
    client_lag_ms: dict[str, float | None]  # this process's event-loop lag: p99/max
    passed: bool | None = None  # set by the capacity criterion
    label: str = ""  # which server, when several are compared


@dataclass
class StepRaw:
    """Per-turn samples kept in memory for benchmarks (not written to JSON)."""

    ttfa_s: list[float] = field(default_factory=list)
    first_chunks: list[str] = field(default_factory=list)
    lateness_s: list[float] = field(default_factory=list)


@dataclass
class _Turn:
    t_start: float
    first_chunk: str
    t_complete: float | None = None
    arrivals: list[float] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    failed: str | None = None


@dataclass
class _Session:
    turns: list[_Turn] = field(default_factory=list)
    current: _Turn | None = None
    errors: list[str] = field(default_factory=list)
    close_code: int | None = None
    failed: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)


async def _reader(session: Session, s: _Session) -> None:
    try:
        async for item in session:
            if isinstance(item, Audio):
                # the client stamps each frame as it comes off the socket
                if s.current is not None:
                    s.current.arrivals.append(item.at)
            elif isinstance(item, Flushed) and s.current is not None:
                s.current.done.set()
            elif isinstance(item, Error):  # non-fatal; a fatal one raises
                s.errors.append(item.code)
            elif isinstance(item, Done):
                s.finished.set()
    except VoxwireError as exc:
        s.errors.append(exc.code)
        s.close_code = exc.close_code or session.close_code or 1006
    finally:
        # Wake every waiter: the session is over.
        if s.close_code is None and not s.finished.is_set():
            s.close_code = session.close_code or 1006
        s.finished.set()
        if s.current is not None:
            s.current.done.set()


async def _speak_turn(
    session: Session, s: _Session, cfg: LoadConfig, rng: np.random.Generator
) -> _Turn:
    text = textgen.paragraph(rng, int(rng.integers(cfg.sentences[0], cfg.sentences[1] + 1)))
    pieces = textgen.tokens(text, rng)
    at, first = textgen.first_chunk_at(pieces)
    turn = _Turn(t_start=time.perf_counter(), first_chunk=first)
    s.current = turn
    s.turns.append(turn)
    mean_gap = 1.0 / cfg.tokens_per_s
    for i, piece in enumerate(pieces):
        if i == at:
            turn.t_complete = time.perf_counter()
        await session.text(piece)
        await asyncio.sleep(mean_gap * float(rng.uniform(0.5, 1.5)))
    if at < 0:
        turn.t_complete = time.perf_counter()
    await session.flush()
    try:
        await asyncio.wait_for(turn.done.wait(), cfg.turn_timeout_s)
    except TimeoutError:
        turn.failed = "turn_timeout"
    if s.close_code is not None and turn.failed is None:
        turn.failed = "closed"
    return turn


async def run_session(cfg: LoadConfig, t_stop: float, seed: int) -> _Session:
    """One session: turns until ``t_stop`` (or ``max_turns``), then ``end``."""
    s = _Session()
    rng = np.random.default_rng(seed)
    output = OutputFormat(
        encoding=cast(Encoding, cfg.encoding), sample_rate=cfg.sample_rate, frame_ms=cfg.frame_ms
    )
    # An API key for servers that require one comes from the environment, never the
    # result files.
    key = os.environ.get("VOXWIRE_LOADGEN_API_KEY")
    try:
        async with connect(
            cfg.url,
            api_key=key,
            engine=cfg.engine,
            output=output,
            resume=cfg.resume,
            open_timeout=30,
            ping_interval=None,  # thousands of sessions: no keepalive traffic
        ) as session:
            await _session_turns(session, s, cfg, rng, t_stop)
        if session.close_code is not None:  # the last connection's, once it closed
            s.close_code = session.close_code
    except VoxwireError as exc:  # no session: unreachable, or the start was refused
        cause = exc.__cause__
        s.errors.append(f"connect:{type(cause).__name__}" if cause else exc.code)
        s.close_code = exc.close_code
        s.failed = True
        return s
    if s.close_code not in (None, 1000):
        s.failed = True
    return s


async def _session_turns(
    session: Session, s: _Session, cfg: LoadConfig, rng: np.random.Generator, t_stop: float
) -> None:
    frame_s = cfg.frame_ms / 1000.0
    jitter_s = cfg.jitter_buffer_ms / 1000.0
    reader = asyncio.create_task(_reader(session, s))
    try:
        while s.close_code is None and time.perf_counter() < t_stop:
            turn = await _speak_turn(session, s, cfg, rng)
            if turn.failed:
                break
            if cfg.max_turns and len(s.turns) >= cfg.max_turns:
                break
            if cfg.pace_playback and turn.arrivals:
                play_end = turn.arrivals[0] + jitter_s + len(turn.arrivals) * frame_s
                resume = play_end + cfg.think_s
                if resume >= t_stop:
                    break  # no further turn would start; do not idle out the playback
                await asyncio.sleep(max(0.0, resume - time.perf_counter()))
        s.current = None
        if s.close_code is None:
            await session.end()
            await asyncio.wait_for(s.finished.wait(), cfg.turn_timeout_s)
    except (VoxwireError, TimeoutError) as exc:
        s.errors.append(f"client:{type(exc).__name__}")
        s.failed = True
    finally:
        if not reader.done():
            reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(reader, 5)


async def _lag_monitor(out: list[float], stop: asyncio.Event) -> None:
    """How late this process's event loop wakes up: if it lags, arrival times do too."""
    period = 0.01
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(period)
        out.append(time.perf_counter() - t - period)


def pct(
    values: Sequence[float] | np.ndarray, qs: Sequence[float], scale: float = 1000.0
) -> dict[str, float | None]:
    """Percentiles (``qs`` in percent; 100 = max) of ``values`` times ``scale``, rounded."""
    names = {100.0: "max"}
    a = np.asarray(values, dtype=np.float64)
    out: dict[str, float | None] = {}
    for q in qs:
        key = names.get(q, "p" + f"{q:g}".replace(".", ""))
        out[key] = round(float(np.percentile(a, q)) * scale, 2) if a.size else None
    return out


def _turn_lateness(turn: _Turn, frame_s: float, jitter_s: float) -> np.ndarray:
    a = np.asarray(turn.arrivals, dtype=np.float64)
    if a.size == 0:
        return a
    deadline = a[0] + jitter_s + np.arange(a.size) * frame_s
    late: np.ndarray = a - deadline
    return late


def _episodes(late: np.ndarray) -> int:
    """Runs of consecutive late frames."""
    m = late > 0
    if not m.any():
        return 0
    return int(m[0]) + int(np.count_nonzero(m[1:] & ~m[:-1]))


async def run_step(
    cfg: LoadConfig,
    n: int,
    server: VoxwireServer | None = None,
    churn_turns: int = 0,
    on_tick: Callable[[float], None] | None = None,
    tick_s: float = 1.0,
) -> tuple[StepResult, StepRaw]:
    """N sessions ramped in over ``ramp_s``, held for ``duration_s``; the results.

    ``churn_turns`` > 0: each of the N slots runs sessions of that many turns one
    after another (sessions come and go, as in production) until the time is up.
    ``on_tick(elapsed)`` is called every ``tick_s`` (e.g. to sample the server's memory).
    """
    loop_lag: list[float] = []
    stop = asyncio.Event()
    lagger = asyncio.create_task(_lag_monitor(loop_lag, stop))
    t0 = time.perf_counter()
    ramp_end = t0 + cfg.ramp_s
    t_stop = ramp_end + cfg.duration_s
    scfg = msgspec.structs.replace(cfg, max_turns=churn_turns) if churn_turns else cfg

    async def slot(i: int) -> list[_Session]:
        await asyncio.sleep(cfg.ramp_s * i / max(1, n))
        out = [await run_session(scfg, t_stop, cfg.seed * 100003 + i)]
        while churn_turns and time.perf_counter() < t_stop:
            out.append(await run_session(scfg, t_stop, cfg.seed * 100003 + i + 7919 * len(out)))
        return out

    async def ticker() -> None:
        while not stop.is_set() and on_tick is not None:
            on_tick(time.perf_counter() - t0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick_s)

    ticks = asyncio.create_task(ticker())
    tasks = [asyncio.create_task(slot(i)) for i in range(n)]
    await asyncio.sleep(max(0.0, ramp_end - time.perf_counter()))
    cpu = CpuWindow(server.pid if server else None)
    w0 = time.perf_counter()
    rss: float | None = None
    # The hold window ends at t_stop or when every session is done, whichever is first.
    await asyncio.wait(tasks, timeout=max(0.0, t_stop - time.perf_counter()))
    hold_s, server_cpu, client_cpu, other_cpu = cpu.read()
    window = (w0, w0 + hold_s)
    loop_cpu = cpu.loop_cores
    if server is not None:
        with contextlib.suppress(OSError):
            rss = server.rss() / 2**20
    sessions = [s for group in await asyncio.gather(*tasks) for s in group]
    wall = time.perf_counter() - t0
    stop.set()
    await lagger
    await ticks
    return summarize(
        cfg, n, sessions, wall, window, (server_cpu, loop_cpu), client_cpu, other_cpu, rss, loop_lag
    )


def summarize(
    cfg: LoadConfig,
    n: int,
    sessions: Sequence[_Session],
    wall: float,
    window: tuple[float, float],
    server_cpus: tuple[float, float],
    client_cpu: float,
    other_cpu: float,
    rss: float | None,
    loop_lag: list[float],
) -> tuple[StepResult, StepRaw]:
    frame_s = cfg.frame_ms / 1000.0
    jitter_s = cfg.jitter_buffer_ms / 1000.0
    raw = StepRaw()
    ttfa_turn: list[float] = []
    late_parts: list[np.ndarray] = []
    errors: dict[str, int] = {}
    closes: dict[str, int] = {}
    episodes = late_frames = with_underruns = turns = turns_failed = frames = in_window = 0
    hold_s = window[1] - window[0]
    server_cpu, loop_cpu = server_cpus
    for s in sessions:
        for e in s.errors:
            errors[e] = errors.get(e, 0) + 1
        code = str(s.close_code)
        closes[code] = closes.get(code, 0) + 1
        sess_eps = 0
        for t in s.turns:
            turns += 1
            if t.failed:
                turns_failed += 1
                errors[t.failed] = errors.get(t.failed, 0) + 1
            if not t.arrivals:
                continue
            frames += len(t.arrivals)
            arr = np.asarray(t.arrivals)
            in_window += int(np.count_nonzero((arr >= window[0]) & (arr < window[1])))
            if t.t_complete is not None:
                raw.ttfa_s.append(t.arrivals[0] - t.t_complete)
                raw.first_chunks.append(t.first_chunk)
            ttfa_turn.append(t.arrivals[0] - t.t_start)
            late = _turn_lateness(t, frame_s, jitter_s)
            late_parts.append(late)
            sess_eps += _episodes(late)
            late_frames += int(np.count_nonzero(late > 0))
        episodes += sess_eps
        with_underruns += sess_eps > 0
    lateness = np.concatenate(late_parts) if late_parts else np.zeros(0)
    rate = in_window * frame_s / hold_s if hold_s > 0 else 0.0
    raw.lateness_s = lateness.tolist()
    result = StepResult(
        sessions=n,
        sessions_run=len(sessions),
        sessions_failed=sum(s.failed for s in sessions),
        errors=errors,
        close_codes=closes,
        turns=turns,
        turns_failed=turns_failed,
        frames=frames,
        audio_s=round(frames * frame_s, 2),
        ttfa_ms=pct(raw.ttfa_s, (50, 90, 99, 100)),
        ttfa_turn_ms=pct(ttfa_turn, (50, 90, 99, 100)),
        lateness_ms=pct(lateness, (50, 90, 99, 99.9, 100)),
        underrun_episodes=episodes,
        underrun_frames=late_frames,
        sessions_with_underruns=with_underruns,
        wall_s=round(wall, 2),
        hold_s=round(hold_s, 2),
        server_cpu=round(server_cpu, 3),
        server_loop_cpu=round(loop_cpu, 3),
        stream_rate=round(rate, 2),
        server_cpu_ms_per_audio_s=(
            round(server_cpu * 1000 / rate, 2) if rate > 0 and server_cpu else None
        ),
        client_cpu=round(client_cpu, 3),
        other_cpu=round(other_cpu, 3),
        server_rss_mib=round(rss, 1) if rss is not None else None,
        client_lag_ms=pct(loop_lag, (99, 100)),
    )
    return result, raw


def meets_capacity(r: StepResult, p99_ms: float = 20.0) -> bool:
    """The capacity criterion: every session ran clean, p99 lateness ≤ ``p99_ms`` and
    no underruns."""
    p99 = r.lateness_ms.get("p99")
    return (
        r.sessions_failed == 0
        and not r.errors
        and r.turns > 0
        and p99 is not None
        and p99 <= p99_ms
        and r.underrun_episodes == 0
    )


# ---------------------------------------------------------------------------- CLI


class LoadgenResult(msgspec.Struct, kw_only=True):
    kind: str = "loadgen"
    machine: Any
    config: LoadConfig
    server: dict[str, Any]
    steps: list[StepResult]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m loadtests.loadgen",
        description="Run N concurrent LLM-paced sessions (for each N given) against a "
        "voxwire server; write JSON, a Markdown table and a PNG plot.",
    )
    ap.add_argument("--url", help="WebSocket URL of a running server (default: spawn one)")
    ap.add_argument(
        "--trees",
        help="comma-separated checkout folders: spawn a server from each and run every "
        "step on each in turn (a side-by-side comparison of two versions in one run)",
    )
    ap.add_argument("-n", "--sessions", default="1,5,10", help="comma-separated N values")
    ap.add_argument("--rounds", type=int, default=1, help="times each step is run")
    ap.add_argument("--engine", default="replay", help="engine each session asks for")
    ap.add_argument("--duration", type=float, default=30.0, help="hold time per step, s")
    ap.add_argument("--ramp", type=float, default=5.0, help="ramp-up time per step, s")
    ap.add_argument("--tokens-per-s", type=float, default=40.0)
    ap.add_argument("--jitter-ms", type=float, default=100.0, help="player jitter buffer")
    ap.add_argument("--sample-rate", type=int, default=24000)
    ap.add_argument(
        "--back-to-back",
        action="store_true",
        help="start each turn as soon as the last one is flushed (not at real-time pace)",
    )
    ap.add_argument("--max-turns", type=int, default=0, help="turns per session (0: no limit)")
    ap.add_argument("--server-cpus", default="0", help="CPUs for a spawned server ('' = any)")
    ap.add_argument("--client-cpus", default="", help="CPUs for this process ('' = any)")
    ap.add_argument("--out", default="bench/results", help="output folder")
    ap.add_argument("--name", default="loadgen", help="output file stem")
    args = ap.parse_args(argv)
    from loadtests.machine import describe

    machine = describe()
    if args.client_cpus:
        os.sched_setaffinity(0, report.parse_cpus(args.client_cpus))
    # label -> (url, spawned server or None)
    targets: dict[str, tuple[str, VoxwireServer | None]] = {}
    try:
        if args.url:
            targets[""] = (args.url, None)
        else:
            trees = [Path(t).resolve() for t in args.trees.split(",")] if args.trees else [None]
            for i, tree in enumerate(trees):
                spawned = VoxwireServer(
                    cpus=sorted(report.parse_cpus(args.server_cpus)),
                    tree=tree,
                    replay_engine=True,
                    max_sessions=5000,
                )
                label = tree.name if tree else ""
                targets[f"{label}#{i}" if label in targets else label] = (spawned.ws_url, spawned)
            for _, maybe in targets.values():
                if maybe is not None:
                    maybe.wait_ready()
        cfg = LoadConfig(
            url="",
            engine=args.engine,
            sample_rate=args.sample_rate,
            ramp_s=args.ramp,
            duration_s=args.duration,
            tokens_per_s=args.tokens_per_s,
            jitter_buffer_ms=args.jitter_ms,
            pace_playback=not args.back_to_back,
            max_turns=args.max_turns,
        )
        steps: list[StepResult] = []
        for n in (int(x) for x in args.sessions.split(",")):
            for _ in range(args.rounds):
                for label, (url, target) in targets.items():
                    r, _ = asyncio.run(run_step(msgspec.structs.replace(cfg, url=url), n, target))
                    r.passed = meets_capacity(r)
                    r.label = label
                    steps.append(r)
                    print((f"{label}: " if label else "") + report.step_line(r), flush=True)
                    if target is not None:
                        target.wait_idle(60)
    finally:
        for _, maybe in targets.values():
            if maybe is not None:
                maybe.stop()
    res = LoadgenResult(
        machine=machine,
        config=cfg,
        server={
            "url": args.url,
            "trees": args.trees,
            "cpus": None if args.url else args.server_cpus,
        },
        steps=steps,
    )
    out = Path(args.out)
    md = report.steps_table(steps, cfg.jitter_buffer_ms)
    report.write(out, args.name, res, md)
    if not args.trees:
        report.plot_steps(steps, out / f"{args.name}.png", f"voxwire load: {cfg.engine} engine")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
