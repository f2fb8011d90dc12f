"""``voxwire bench profile``: where the server's CPU goes at load (issue 15).

A replay-engine server (the zero-cost engine: what is left is the server's own work)
on its own core carries N real-time sessions from the load generator on the other.
Over the hold, each server thread's CPU time is read from ``/proc`` (the authority
on how much), and py-spy samples every thread's Python stack (where it goes inside
that thread). A thread's function shares are of its samples while it was running
or runnable; multiplied by the thread's CPU they give cores per function.
"""

from __future__ import annotations

import asyncio
import collections
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from loadtests import loadgen, report
from loadtests.machine import proc_cpu_s_path

if TYPE_CHECKING:
    from loadtests.bench import Opts

_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^()]*?):\d+\)$")
_THREAD = re.compile(
    r"^(?:process \d+:\S+;)?thread \((?P<tid>0x[0-9a-fA-F]+|\d+)\)(?:: (?P<name>.*))?$"
)
_TOP = 8
# Leaves where a thread waits rather than works: without stopping the process
# (--nonblocking) py-spy cannot always tell, so they are left out by name.
_IDLE = {
    "EpollSelector.select (selectors.py)",
    "wait (threading.py)",
    "Condition.wait (threading.py)",
    "_worker (concurrent/futures/thread.py)",
    "SimpleQueue.get (queue.py)",
}


class FunctionShare(msgspec.Struct, kw_only=True):
    function: str  # "name (file)"
    self_share: float  # of the thread's active samples, leaf here
    total_share: float  # of the thread's active samples, anywhere on the stack
    cores: float  # self_share x the thread's CPU


class ThreadProfile(msgspec.Struct, kw_only=True):
    thread: str
    tid: int
    cores: float  # from /proc over the window
    samples: int
    top_self: list[FunctionShare]


class ProfileResult(msgspec.Struct, kw_only=True):
    sessions: int
    hold_s: float
    server_cores: float
    frames_per_s: float
    threads: list[ThreadProfile]
    step: loadgen.StepResult


def _thread_cpu(pid: int) -> dict[int, float]:
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = proc_cpu_s_path(task / "stat")
        except (OSError, ValueError):
            continue  # ended meanwhile
    return out


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{m.group('fn')} ({path})"


def summarise(
    raw: str,
) -> dict[int, tuple[str, int, collections.Counter[str], collections.Counter[str]]]:
    """py-spy's raw (collapsed) stacks: per thread id, (name, samples, self, total)."""
    out: dict[int, tuple[str, int, collections.Counter[str], collections.Counter[str]]] = {}
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        # the thread is the first frame, or the second after a "process" frame
        head = ";".join(frames[:2]) if frames[0].startswith("process ") else frames[0]
        m = _THREAD.match(head)
        if not m:
            continue
        tid = int(m.group("tid"), 0)
        rest = frames[2:] if frames[0].startswith("process ") else frames[1:]
        if not rest:
            continue
        name, n, own, total = out.get(
            tid, (m.group("name") or "?", 0, collections.Counter(), collections.Counter())
        )
        c = int(count)
        if _short(rest[-1]) in _IDLE:
            continue
        own[_short(rest[-1])] += c
        for f in set(map(_short, rest)):
            total[f] += c
        out[tid] = (name, n + c, own, total)
    return out


def bench_profile(o: Opts) -> ProfileResult:
    from loadtests.bench import _affinity, _finish, _load_cfg, _replay_server

    # (a virtual environment's own bin is not always on PATH)
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        raise SystemExit("voxwire bench profile needs py-spy: pip install py-spy")
    # The smoke run needs enough load that the event loop is caught running at all
    # (py-spy keeps only running threads' samples: 2 sessions for 2 s once gave none).
    sessions = 12 if o.smoke else 80
    hold = 4.0 if o.smoke else 40.0
    srv = _replay_server(o)
    raw_path = Path(o.out) / "profile.raw.txt"
    Path(o.out).mkdir(parents=True, exist_ok=True)
    cpu0: dict[int, float] = {}
    cpu1: dict[int, float] = {}
    spied: list[subprocess.CompletedProcess[bytes]] = []

    def on_tick(t: float) -> None:
        # The first tick after the ramp starts the sampler for the hold.
        if t >= o.ramp_s and not cpu0:
            cpu0.update(_thread_cpu(srv.pid))
            cmd = [spy, "record", "-p", str(srv.pid), "-r", "200", "-d", str(int(hold * 0.8)),
                   "--nonblocking", "--threads", "-f", "raw", "-o", str(raw_path)]  # fmt: skip

            def run() -> None:
                spied.append(subprocess.run(cmd, capture_output=True, check=False))
                cpu1.update(_thread_cpu(srv.pid))

            threading.Thread(target=run, daemon=True).start()

    try:
        cfg = _load_cfg(o, srv.ws_url, duration_s=hold)
        with _affinity(o.client_cpus):
            step, _ = asyncio.run(loadgen.run_step(cfg, sessions, srv, on_tick=on_tick, tick_s=0.5))
        for _ in range(100):
            if cpu1:
                break
            asyncio.run(asyncio.sleep(0.1))
    finally:
        srv.stop()
    if not spied or spied[0].returncode != 0 or not raw_path.exists():
        err = spied[0].stderr.decode(errors="replace")[-500:] if spied else "did not run"
        raise SystemExit(f"py-spy failed: {err}")
    window = hold * 0.8
    stacks = summarise(raw_path.read_text())
    threads = []
    for tid, (name, n, own, total) in sorted(stacks.items(), key=lambda kv: -kv[1][1]):
        cores = max(0.0, cpu1.get(tid, 0.0) - cpu0.get(tid, 0.0)) / window
        top = [
            FunctionShare(
                function=f,
                self_share=round(c / n, 3),
                total_share=round(total[f] / n, 3),
                cores=round(cores * c / n, 3),
            )
            for f, c in own.most_common(_TOP)
        ]
        threads.append(
            ThreadProfile(thread=name, tid=tid, cores=round(cores, 3), samples=n, top_self=top)
        )
    result = ProfileResult(
        sessions=sessions,
        hold_s=hold,
        server_cores=round(step.server_cpu, 3),
        frames_per_s=round(sessions * 1000 / o.frame_ms, 1),
        threads=threads,
        step=step,
    )
    rows = []
    for t in threads:
        if t.cores < 0.005 and not o.smoke:
            continue
        for i, f in enumerate(t.top_self):
            rows.append([t.thread if i == 0 else "", t.cores if i == 0 else "", f.function,
                         f"{f.self_share:.1%}", f"{f.total_share:.1%}", f.cores])  # fmt: skip
    md = report.md_table(
        ("thread", "thread cores", "function (self)", "self share", "on the stack", "cores"), rows
    )
    notes = [
        f"Replay engine, {sessions} sessions at real time (LLM-paced turns), server on CPU "
        f"{o.server_cpus or 'any'}, load generator on {o.client_cpus or 'any'}; py-spy "
        f"0.4 `record --nonblocking --threads -f raw -r 200` for {window:g} s of the hold.",
        "Thread cores from /proc (user + system time over the window); shares are of "
        "the thread's samples taken while it was running or runnable (waits in epoll, "
        "locks and queues left out by name), so a thread that waits its turn for the "
        "core (or the GIL) shows where it waits too.",
        f"Raw stacks: {raw_path.name} (collapsed format, for a flame graph tool).",
    ]
    _finish(o, "profile", result, [], notes, md)
    return result
