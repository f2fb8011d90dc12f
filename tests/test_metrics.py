"""The process metrics on the app's registry (server/metrics.py), read from a real
server and checked against what /proc says of that server's process."""

from __future__ import annotations

import os
import time

import pytest

from tests.prom import scrape
from tests.support import ServerProcess


def test_process_cpu_memory_and_file_descriptors(server: ServerProcess) -> None:
    s = scrape(server.http)
    fds = len(os.listdir(f"/proc/{server.pid}/fd"))
    assert s.total("process_open_fds") == pytest.approx(fds, abs=8)
    assert s.total("process_open_fds") < s.total("process_max_fds")
    assert s.total("process_resident_memory_bytes") == pytest.approx(server.rss_bytes(), rel=0.2)
    assert s.total("process_cpu_seconds_total") > 0
    assert time.time() - 86400 < s.total("process_start_time_seconds") < time.time()
    ((info, _),) = s.samples("python_info")
    assert info["major"] == "3" and info["implementation"] == "CPython"
    # The engine processes are not the server's own: they have their own figures.
    assert s.total("voxwire_engine_process_resident_memory_bytes", engine="piper") > 50e6
    assert s.total("voxwire_engine_process_cpu_seconds_total", engine="piper") > 0


def test_gpu_memory_is_absent_off_cuda(server: ServerProcess) -> None:
    # Only an engine on CUDA reports it (F5's generation host): on this CPU-only
    # server the family is declared and has no sample.
    s = scrape(server.http)
    assert "voxwire_engine_gpu_memory_bytes" in s.families
    assert not s.samples("voxwire_engine_gpu_memory_bytes")
