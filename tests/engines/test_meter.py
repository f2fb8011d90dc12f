"""What an engine worker reports (server/engines/meter.py, through the app's
``EngineMeter``): a real Piper engine on one thread, real pipelines, and the counts read
back from a real Prometheus registry."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from server.engines.piper import PiperEngine
from server.engines.piper_voices import DEFAULT_VOICE
from server.engines.worker import ChunkDone, EngineFailed, EngineWorker, Job
from server.metrics import Metrics
from tests.engines.test_worker import Owner, chunk

SENTENCE = "The ferry to the islands leaves from the harbour every morning at nine."


@pytest.fixture(scope="module")
def piper() -> Iterator[PiperEngine]:
    engine = PiperEngine()
    engine.load()
    yield engine


def _value(m: Metrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


def _done(owner: Owner) -> list[ChunkDone]:
    return [i for i in owner.items if isinstance(i, ChunkDone)]


async def test_chunks_audio_real_time_factor_and_failures(piper: PiperEngine) -> None:
    m = Metrics()
    log: list[tuple[str, int]] = []
    a = Owner("a", piper.sample_rate, log)
    worker = EngineWorker(piper, threads=1)
    worker.meter = m.engine_meter("piper")
    worker.start()
    for i in range(3):
        worker.submit(chunk(a, i, SENTENCE, first=i == 0))
    worker.submit(Job(a, 0, "chunk", text="Nobody speaks here.", voice="xx_nobody", index=3))
    worker.submit(Job(a, 0, "flush"))
    await asyncio.wait_for(a.done.wait(), 60)
    await worker.stop()

    done = _done(a)
    assert len(done) == 3
    model = {"engine": "piper", "model": DEFAULT_VOICE}
    assert _value(m, "voxwire_engine_syntheses_total", **model) == 3
    made = _value(m, "voxwire_engine_audio_seconds_total", **model)
    assert made == pytest.approx(sum(d.audio_s for d in done)) and made > 3
    assert _value(m, "voxwire_engine_real_time_factor_count", **model) == 3
    rtf = _value(m, "voxwire_engine_real_time_factor_sum", **model)
    assert rtf == pytest.approx(sum(d.engine_s / d.audio_s for d in done))
    # The unknown voice failed its chunk: counted by code, not as a synthesis.
    assert [i.code for i in a.items if isinstance(i, EngineFailed)] == ["unknown_voice"]
    assert _value(m, "voxwire_engine_failures_total", engine="piper", code="unknown_voice") == 1


async def test_time_in_queue_is_the_wait_for_a_thread_not_for_its_own_session(
    piper: PiperEngine,
) -> None:
    m = Metrics()
    log: list[tuple[str, int]] = []
    a, b = Owner("a", piper.sample_rate, log), Owner("b", piper.sample_rate, log)
    worker = EngineWorker(piper, threads=1)
    worker.meter = m.engine_meter("piper")
    # A's three chunks and a later chunk of B are all queued before the one thread
    # starts (B's is not a first chunk, so nothing is paused for it).
    for i in range(3):
        worker.submit(chunk(a, i, SENTENCE, first=i == 0))
    worker.submit(chunk(b, 0, SENTENCE))
    for o in (a, b):
        worker.submit(Job(o, 0, "flush"))
    worker.start()
    await asyncio.wait_for(asyncio.gather(a.done.wait(), b.done.wait()), 60)
    await worker.stop()

    # Round robin: a0, b0, a1, a2.
    assert log == [("a", 0), ("b", 0), ("a", 1), ("a", 2)]
    a0, a1, _ = (d.engine_s for d in _done(a))
    (b0,) = (d.engine_s for d in _done(b))

    def wait(kind: str, part: str) -> float:
        return _value(m, f"voxwire_engine_queue_wait_seconds_{part}", engine="piper", chunk=kind)

    assert wait("first", "count") == 1 and wait("later", "count") == 3
    assert wait("first", "sum") < 0.8 * a0  # a free thread took it at once
    # b0 waited for a0 and a1 for b0 (another session's work): time in queue. a2 waited
    # for nothing. Their time behind their own session's earlier chunks is left out
    # (counted from each submit, the sum would be 3 × a0 + 2 × b0 + a1).
    later = wait("later", "sum")
    assert 0.8 * (a0 + b0) <= later <= 1.3 * (a0 + b0) + 0.05, (later, a0, b0, a1)
