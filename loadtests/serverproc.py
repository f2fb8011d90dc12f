"""A voxwire server in a subprocess for a benchmark: free port, optional CPU pinning,
its log lines, CPU time and resident memory.

The tests' ``tests.support.ServerProcess`` does the same for tests; this one is part
of the installed ``loadtests`` package (so ``voxwire bench`` runs outside a
checkout's test tree) and adds what benchmarks need: pinning the server to chosen
CPUs with ``taskset`` so the load generator does not compete with it for a core.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtests.machine import proc_cpu_s, rss_bytes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def pinned(cmd: list[str], cpus: Sequence[int] | None) -> list[str]:
    """``cmd`` run on ``cpus`` only (inherited by all its threads), when taskset exists."""
    if not cpus or shutil.which("taskset") is None:
        return cmd
    return ["taskset", "-c", ",".join(str(c) for c in cpus), *cmd]


class Subprocess:
    """A child process with its output in a temporary log file."""

    def __init__(
        self, cmd: list[str], env: dict[str, str], prefix: str, cwd: Path | None = None
    ) -> None:
        self.log_path = Path(tempfile.mkstemp(prefix=prefix, suffix=".log")[1])
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_s(self) -> float:
        return proc_cpu_s(self.proc.pid)

    def rss(self) -> int:
        return rss_bytes(self.proc.pid)

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_http(self, url: str, timeout: float) -> None:
        """Until ``url`` answers 200 (or the process dies, or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited {self.proc.returncode}:\n{self.logs()[-4000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{url} not up in {timeout} s:\n{self.logs()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.log_path.unlink(missing_ok=True)


class VoxwireServer(Subprocess):
    """``python -m server serve`` with settings passed as VOXWIRE_* variables.

    ``tree``: run the ``server`` package of another checkout (its root folder) instead
    of this one, to compare two versions side by side in one run.
    """

    def __init__(
        self, cpus: Sequence[int] | None = None, tree: Path | None = None, **settings: Any
    ) -> None:
        self.port = free_port()
        env = dict(os.environ)
        env.update({f"VOXWIRE_{k.upper()}": _env_value(v) for k, v in settings.items()})
        env["VOXWIRE_PORT"] = str(self.port)
        env["VOXWIRE_HOST"] = "127.0.0.1"
        self.settings = {k: _env_value(v) for k, v in settings.items()}
        self.cpus = list(cpus) if cpus else None
        self.tree = tree
        if tree is not None:
            # python -m puts the working folder first on sys.path: its server/ wins.
            env["PYTHONPATH"] = str(tree)
        super().__init__(
            pinned([sys.executable, "-m", "server", "serve"], cpus),
            env,
            prefix="voxwire-bench-",
            cwd=tree,
        )
        self.http = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/v1/stream"

    def wait_ready(self, timeout: float = 120.0) -> None:
        self.wait_http(self.http + "/health", timeout)

    def log_events(self, event: str) -> list[dict[str, Any]]:
        out = []
        for line in self.logs().splitlines():
            if line.startswith("{") and f'"{event}"' in line:
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if obj.get("event") == event:
                    out.append(obj)
        return out

    def metric(self, name: str) -> float:
        """The sum of a Prometheus sample over its labels, from /metrics."""
        with urllib.request.urlopen(self.http + "/metrics", timeout=10) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and (line[len(name)] in " {"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Until no session is open (the previous step's sessions have ended)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.metric("voxwire_active_sessions") == 0:
                return
            time.sleep(0.2)
        raise TimeoutError("sessions still open on the server")


class RedisServer:
    """A private redis-server on a free port, keeping nothing on disk (the machine's own
    Redis is left alone). ``stop``/``start`` restart it on the same port, empty."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="voxwire-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def cli(self, *args: str) -> str:
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, check=True
        ).stdout.strip()
