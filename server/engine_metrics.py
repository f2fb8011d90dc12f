"""The app's engines and workers, wired to its metrics: each worker's meter, the circuit
breakers (F5's, by model), and the CPU and memory of the engine processes (Piper's
pool, F5's generation host), which the server process's own ``process_*`` metrics
leave out although they hold most of the node's memory."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from server.engines.f5.batch_worker import BatchedEngineWorker
from server.engines.f5.engine import F5Engine
from server.engines.process import ProcessEngine

if TYPE_CHECKING:
    from server.engines.base import Engine
    from server.engines.worker import EngineWorker
    from server.metrics import Metrics

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")


def watch_engines(metrics: Metrics, engines: Mapping[str, Engine]) -> None:
    """Read the engine processes' CPU and memory at each scrape (once per app)."""
    metrics.registry.register(EngineProcesses(engines))


def install(metrics: Metrics, workers: Mapping[str, EngineWorker]) -> None:
    """Before their first job: the workers report to ``metrics``, which also reads their
    circuit breakers at each scrape."""
    for name, worker in workers.items():
        worker.meter = metrics.engine_meter(name)
        if isinstance(worker, BatchedEngineWorker):
            metrics.watch_breakers(name, worker.breakers)


def engine_pids(engine: Engine) -> list[int]:
    """The engine's child processes now (none for one that runs in the server's own)."""
    if isinstance(engine, ProcessEngine):
        return engine.pids()
    if isinstance(engine, F5Engine) and engine.host_pid:
        return [engine.host_pid]
    return []


def _usage(pid: int) -> tuple[float, int] | None:
    """CPU seconds (user and system) and resident bytes of ``pid``; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/statm", "rb") as f:
            pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    # The command name in parentheses may hold spaces: count fields after its end.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS, pages * _PAGE


class EngineProcesses:
    """``voxwire_engine_process_cpu_seconds_total`` and
    ``voxwire_engine_process_resident_memory_bytes``, by engine, read from /proc at
    scrape. The CPU counter keeps what processes that ended had used when last seen, so
    it only grows across restarts (as ``rate()`` needs)."""

    def __init__(self, engines: Mapping[str, Engine]) -> None:
        self._engines = engines
        self._seen: dict[str, dict[int, float]] = {}  # engine -> pid -> CPU s at last scrape
        self._ended: dict[str, float] = {}  # engine -> CPU s of processes gone since

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        cpu = CounterMetricFamily(
            "voxwire_engine_process_cpu_seconds",
            "CPU time (user and system) of an engine's child processes, those that ended "
            "included (up to their last scrape).",
            labels=["engine"],
        )
        rss = GaugeMetricFamily(
            "voxwire_engine_process_resident_memory_bytes",
            "Resident memory of an engine's child processes now.",
            labels=["engine"],
        )
        for name, engine in self._engines.items():
            if not isinstance(engine, ProcessEngine | F5Engine):
                continue
            now: dict[int, float] = {}
            memory = 0
            for pid in engine_pids(engine):
                usage = _usage(pid)
                if usage is not None:
                    now[pid], n = usage
                    memory += n
            seen = self._seen.get(name, {})
            ended = self._ended.get(name, 0.0) + sum(s for pid, s in seen.items() if pid not in now)
            self._seen[name], self._ended[name] = now, ended
            cpu.add_metric([name], ended + sum(now.values()))
            rss.add_metric([name], float(memory))
        yield cpu
        yield rss
