"""Real Redis topologies on loopback for the tests: a Redis Cluster (``redis-server
--cluster-enabled yes``, joined by ``redis-cli --cluster create``) and a Sentinel group
(a primary, its replica and three Sentinels). Every process is private: free ports, its
own folder, nothing kept on disk unless asked (``appendonly``).

Timeouts are short so that a failover takes seconds: a cluster node is failed after
``node_timeout_ms`` without answers; a Sentinel calls its primary down after
``down_after_ms``.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loadtests.serverproc import free_port


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


class RedisNode:
    """One redis-server (or Sentinel) on a free port, its files in ``dir``."""

    def __init__(self, root: Path, *args: str, sentinel: bool = False) -> None:
        self.port = free_port()
        self.dir = root / str(self.port)
        self.dir.mkdir()
        self.args = list(args)
        self.sentinel = sentinel
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.sentinel:  # a Sentinel rewrites its configuration file: it needs one
            conf = self.dir / "sentinel.conf"
            conf.write_text("\n".join(self.args) + "\n")
            cmd = ["redis-server", str(conf), "--sentinel"]
        else:
            # a replica syncs at once (the default waits 5 s for more replicas to join)
            cmd = ["redis-server", "--save", "", "--appendonly", "no",
                   "--repl-diskless-sync-delay", "0", *self.args]  # fmt: skip
        cmd += ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        log = open(self.dir / "log", "ab")  # noqa: SIM115 (the child holds it)
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(f"redis on {self.port}", self._pong, timeout=10)

    def _pong(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis on {self.port} exited: {self.log()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def log(self) -> str:
        return (self.dir / "log").read_text(errors="replace")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cli(self, *args: str) -> str:
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()

    def info(self, section: str) -> dict[str, str]:
        lines = self.cli("INFO", section).splitlines()
        return dict(line.split(":", 1) for line in lines if ":" in line)

    def kill(self) -> None:
        """SIGKILL: the node dies at once, with whatever it had not replicated."""
        if self.proc is not None and self.alive:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.alive:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class _Group:
    def __init__(self, prefix: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.nodes: list[RedisNode] = []

    def _node(self, *args: str, sentinel: bool = False) -> RedisNode:
        node = RedisNode(self.root, *args, sentinel=sentinel)
        self.nodes.append(node)
        node.start()
        return node

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class ClusterProcess(_Group):
    """A Redis Cluster of ``primaries`` shards with ``replicas`` replicas each."""

    def __init__(self, primaries: int = 3, replicas: int = 0, node_timeout_ms: int = 1000) -> None:
        super().__init__("voxwire-cluster-")
        try:
            for _ in range(primaries * (1 + replicas)):
                # the bus port is chosen too: port + 10000 may be taken, or past 65535
                self._node(
                    *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                    *("--cluster-node-timeout", str(node_timeout_ms)),
                    *("--cluster-port", str(free_port())),
                )
            subprocess.run(
                ["redis-cli", "--cluster", "create", *(n.address for n in self.nodes),
                 "--cluster-replicas", str(replicas), "--cluster-yes"],
                capture_output=True, check=True, timeout=60,
            )  # fmt: skip
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        self.url = "redis+cluster://" + ",".join(n.address for n in self.nodes[:primaries])

    def _view(self, node: RedisNode) -> set[tuple[str, ...]]:
        """The live primaries and their slots, as ``node`` sees them."""
        view = set()
        for line in node.cli("CLUSTER", "NODES").splitlines():
            f = line.split()
            if "master" in f[2] and "fail" not in f[2]:
                view.add((f[1].split("@")[0], *f[8:]))
        return view

    def _ok(self) -> bool:
        live = [n for n in self.nodes if n.alive]
        for n in live:
            if "cluster_state:ok" not in n.cli("CLUSTER", "INFO"):
                return False
            repl = n.info("replication")
            if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                return False
        # every node agrees on who serves what (a client checks that when it connects)
        return len({frozenset(self._view(n)) for n in live}) == 1

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says the cluster is ok, agrees on who serves which
        slots, and every replica is in sync."""
        wait_for("cluster ok", self._ok, timeout)

    def by_port(self, port: int) -> RedisNode:
        return next(n for n in self.nodes if n.port == port)

    def primary_for(self, key: str) -> RedisNode:
        """The node that serves ``key``'s slot now, as a live node sees it."""
        node = self.serving(key)
        if node is None:
            raise LookupError(f"no primary serves {key!r} now")
        return node

    def serving(self, key: str) -> RedisNode | None:
        """The node that serves ``key``'s slot now (None: none, mid-failover)."""
        live = next(n for n in self.nodes if n.alive)
        slot = int(live.cli("CLUSTER", "KEYSLOT", key))
        for line in live.cli("CLUSTER", "NODES").splitlines():
            f = line.split()
            if "master" not in f[2] or "fail" in f[2]:
                continue
            for r in f[8:]:
                lo, _, hi = r.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    return self.by_port(int(f[1].split("@")[0].rsplit(":", 1)[1]))
        return None


class SentinelProcess(_Group):
    """A primary, one replica and three Sentinels watching them as ``service``."""

    def __init__(self, service: str = "voxwire", down_after_ms: int = 1000) -> None:
        super().__init__("voxwire-sentinel-")
        self.service = service
        try:
            self.first_primary = self._node()
            self._node("--replicaof", "127.0.0.1", str(self.first_primary.port))
            conf = [
                f"sentinel monitor {service} 127.0.0.1 {self.first_primary.port} 2",
                f"sentinel down-after-milliseconds {service} {down_after_ms}",
                f"sentinel failover-timeout {service} 10000",
            ]
            self.sentinels = [self._node(*conf, sentinel=True) for _ in range(3)]
            # Ready when each Sentinel has found the other two (their hello messages)
            # and the replica, so that a failover can be voted and has a target.
            wait_for("sentinels ready", self._ready)
        except BaseException:
            self.stop()
            raise
        self.url = f"redis+sentinel://{','.join(s.address for s in self.sentinels)}/{service}"

    def _ready(self) -> bool:
        for s in self.sentinels:
            master = s.cli("SENTINEL", "MASTER", self.service).splitlines()
            fields = dict(zip(master[::2], master[1::2], strict=False))
            if fields.get("num-other-sentinels") != "2" or fields.get("num-slaves") != "1":
                return False
        replica = self.nodes[1]
        return replica.info("replication").get("master_link_status") == "up"

    def primary(self) -> RedisNode:
        """The node the Sentinels name as the primary now."""
        addr = self.sentinels[0].cli("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        port = int(addr.splitlines()[1])
        return next(n for n in self.nodes if n.port == port)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterProcess]:
    """Three primaries, no replicas: the state tests' cluster (one per test session)."""
    cluster = ClusterProcess(primaries=3)
    try:
        yield cluster
    finally:
        cluster.stop()
