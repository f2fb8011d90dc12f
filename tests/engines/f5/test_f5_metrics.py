"""F5's metrics on a real server (the tiny random-weight model in the generation host, on
the CPU): chunks by model, the resident models the host reports, each model's circuit
breaker by state (read at scrape, so a breaker turns half-open by the clock alone), and
GPU memory absent off CUDA. Its own German model is broken, so the breaker test does
not depend on the other F5 tests' files."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator

import numpy as np
import pytest

from server.engines.f5.engine import F5Engine, GenRequest
from server.metrics import Metrics
from tests.engines.f5.conftest import ALICE_TEXT, HANS_TEXT, F5Files, make_engine
from tests.prom import Scrape, delta, scrape
from tests.support import Received, ServerProcess, connect, recv_until, send
from tests.test_grafana_dashboard import dashboard_problems

COOLDOWN_S = 5.0
STATES = ("closed", "half_open", "open")


@pytest.fixture(scope="module")
def f5_srv(f5_files: F5Files, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("f5-metrics")
    broken = root / "model.safetensors"
    broken.write_bytes(f5_files.checkpoint.read_bytes()[:1000])
    shutil.copy(f5_files.checkpoint.parent / "vocab.txt", root / "vocab.txt")
    registry = root / "models.toml"
    registry.write_text(
        f'[[model]]\nkey = "de"\ncheckpoint = "{broken}"\n'
        f'config = "{f5_files.config}"\nlanguages = ["de"]\n'
    )
    srv = ServerProcess(
        max_session_s=600,
        f5_breaker_failures=2,
        f5_breaker_cooldown_s=COOLDOWN_S,
        **{**f5_files.settings(), "f5_registry": registry},
    )
    try:
        srv.wait_ready(timeout=180)
        yield srv
    finally:
        srv.stop()


async def _speak(url: str, text: str, voice: str) -> Received:
    async with await connect(url) as ws:
        await send(ws, type="start", engine="f5", voice=voice)
        rec = await recv_until(ws, Received(), stop="ready")
        await send(ws, type="text", text=text)
        await send(ws, type="end")
        return await recv_until(ws, rec, timeout=180)


def _breaker(s: Scrape, model: str) -> str:
    """The one state the scrape marks 1 for ``model``'s breaker."""
    states = {
        st: s.total("voxwire_engine_breaker_state", engine="f5", model=model, state=st)
        for st in STATES
    }
    (on,) = [st for st, v in states.items() if v == 1]
    assert sum(states.values()) == 1, states
    return on


async def test_chunks_models_and_breakers(f5_srv: ServerProcess) -> None:
    before = scrape(f5_srv.http)
    rec = await _speak(f5_srv.ws_url, "Good morning. The weather is fine today.", "alice")
    assert rec.close_code == 1000 and not rec.of("error"), rec.events
    after = scrape(f5_srv.http)
    chunks = len(rec.of("segment"))
    model = {"engine": "f5", "model": "default"}
    assert delta(before, after, "voxwire_engine_syntheses_total", **model) == chunks
    assert delta(before, after, "voxwire_engine_real_time_factor_count", **model) == chunks
    assert delta(before, after, "voxwire_engine_audio_seconds_total", **model) > 1
    wait = "voxwire_engine_queue_wait_seconds_count"
    assert delta(before, after, wait, engine="f5", chunk="first") == 1
    # The generation host holds the default model; it reports with each batch.
    assert after.total("voxwire_engine_resident_models", engine="f5") == 1
    assert _breaker(after, "default") == "closed"
    assert not after.samples("voxwire_engine_gpu_memory_bytes")  # the CPU: none
    assert after.total("voxwire_engine_process_resident_memory_bytes", engine="f5") > 50e6

    # The German model's checkpoint is corrupt: two failures open its breaker, and the
    # third session is refused at once (each goes on with Piper).
    second = 0.0
    for i in range(3):
        second = time.monotonic() if i == 1 else second
        rec = await _speak(f5_srv.ws_url, HANS_TEXT, "hans")
        assert rec.close_code == 1000 and rec.of("error"), rec.events
    opened = scrape(f5_srv.http)
    assert time.monotonic() - second < COOLDOWN_S, "too slow to see the breaker open"
    failed = "voxwire_engine_failures_total"
    assert delta(after, opened, failed, engine="f5", code="engine_error") == 2
    assert delta(after, opened, failed, engine="f5", code="engine_unavailable") >= 1
    assert _breaker(opened, "de") == "open" and _breaker(opened, "default") == "closed"
    assert opened.total("voxwire_engine_resident_models", engine="f5") == 1  # it never loaded
    # No batch runs meanwhile, yet once the cooldown is over the scrape says half-open.
    await asyncio.sleep(COOLDOWN_S + 0.2)
    assert _breaker(scrape(f5_srv.http), "de") == "half_open"
    # The dashboard's panels on what F5 reports read labels it has.
    f5_families = {"voxwire_engine_breaker_state", "voxwire_engine_resident_models"}
    assert not dashboard_problems(opened, only=f5_families, may_be_empty=())


def test_in_process_engine_reports_resident_models(f5_files: F5Files) -> None:
    # engine_isolation=thread: the model runs in this process; the engine reports itself.
    m = Metrics()
    engine: F5Engine = make_engine(f5_files)
    engine.events = m.engine_event
    out = engine.generate("default", [GenRequest("alice", ALICE_TEXT[:40], 1.0)])
    assert len(out) == 1 and np.abs(out[0]).max() > 0
    assert m.registry.get_sample_value("voxwire_engine_resident_models", {"engine": "f5"}) == 1
    gpu = m.registry.get_sample_value(
        "voxwire_engine_gpu_memory_bytes", {"engine": "f5", "kind": "allocated"}
    )
    assert gpu is None  # the CPU
