"""Engine metrics on a real server (Piper in its supervised processes): what real
sessions made, counted by engine and model, and an engine process killed for real in
the middle of a chunk: a failure, a restart, and a CPU counter that never goes back."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest

from server.engines.piper_voices import DEFAULT_VOICE
from tests.prom import delta, scrape
from tests.support import Received, ServerProcess, connect, decode_pcm, recv_until, send
from tests.test_engine_isolation import LONG, busy_engine

FIRST = "The museum opens at ten. Tickets are sold at the door."
SECOND = "Guided tours start every hour from the main hall, and they last forty minutes."
MODEL = {"engine": "piper", "model": DEFAULT_VOICE}


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProcess]:
    # One engine process: the crash test's victim is the one that does all the work.
    s = ServerProcess(engine_threads=1, engine_spare_processes=0)
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


async def test_a_session_s_chunks_are_counted_by_engine_and_model(srv: ServerProcess) -> None:
    before = scrape(srv.http)
    async with await connect(srv.ws_url) as ws:
        await send(ws, type="start", output={"encoding": "pcm_s16le", "sample_rate": 16000})
        rec = await recv_until(ws, Received(), stop="ready")
        await send(ws, type="text", text=FIRST)
        await send(ws, type="flush")
        rec = await recv_until(ws, rec, stop="flushed")
        await send(ws, type="text", text=SECOND)  # a second utterance
        await send(ws, type="end")
        rec = await recv_until(ws, rec)
    assert rec.close_code == 1000 and not rec.of("error"), rec.events
    after = scrape(srv.http)

    chunks = len(rec.of("segment"))
    assert chunks >= 3
    assert delta(before, after, "voxwire_engine_syntheses_total", **MODEL) == chunks
    assert delta(before, after, "voxwire_engine_real_time_factor_count", **MODEL) == chunks
    assert delta(before, after, "voxwire_engine_failures_total") == 0
    # The engine's audio is what the client heard (the last frame is padded out).
    heard_s = len(decode_pcm(rec.frames)) / 16000
    made_s = delta(before, after, "voxwire_engine_audio_seconds_total", **MODEL)
    assert made_s == pytest.approx(heard_s, abs=0.05), (made_s, heard_s)
    rtf = delta(before, after, "voxwire_engine_real_time_factor_sum", **MODEL) / chunks
    assert 0 < rtf < 2
    # Each utterance's first chunk waited in the queue once, and so did each later one.
    wait = "voxwire_engine_queue_wait_seconds_count"
    assert delta(before, after, wait, engine="piper", chunk="first") == 2
    assert delta(before, after, wait, engine="piper", chunk="later") == chunks - 2
    ttfa = "voxwire_time_to_first_audio_seconds_count"
    assert delta(before, after, ttfa, engine="piper", protocol="native") == 2


async def test_a_crash_is_a_failure_and_a_restart_and_cpu_never_goes_back(
    srv: ServerProcess,
) -> None:
    cpu = "voxwire_engine_process_cpu_seconds_total"
    rss = scrape(srv.http).total("voxwire_engine_process_resident_memory_bytes", engine="piper")
    assert rss > 50e6  # a warm Piper process
    ws = await connect(srv.ws_url)
    await send(ws, type="start")
    await recv_until(ws, Received(), stop="ready")
    # Seconds of work, chunk on chunk, and a reader that keeps the session taking audio
    # (and hears whether a chunk failed), so the engine is likely mid-chunk when killed.
    names = ("Stella", "Susan", "Sarah", "Sophie", "Sandra", "Sylvia", "Selma", "Sonia")
    await send(ws, type="text", text=" ".join(LONG.replace("Stella", n) for n in names))
    await send(ws, type="flush")
    rec = Received()
    reader = asyncio.create_task(recv_until(ws, rec, timeout=120))
    victim = await busy_engine(srv.pid)
    before = scrape(srv.http)  # what the victim had used by now
    os.kill(victim, signal.SIGSEGV)
    deadline = time.monotonic() + 60
    while True:
        after = scrape(srv.http)
        restarts = delta(before, after, "voxwire_engine_restarts_total", reason="crash")
        if restarts and after.total("voxwire_engine_processes", engine="piper") == 1:
            break
        assert time.monotonic() < deadline, "the engine process was not replaced"
        await asyncio.sleep(0.2)
    assert restarts == 1

    # A chunk the victim was speaking failed: the client was told (engine_crashed), and
    # the counter says the same. (A busy-looking process may be between chunks, its
    # onnxruntime threads spinning: then no chunk failed, and none is counted.)
    failures = "voxwire_engine_failures_total"
    while True:
        told = sum(1 for e in rec.of("error") if e["code"] == "engine_crashed")
        counted = delta(before, scrape(srv.http), failures, code="engine_crashed")
        if told == counted or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    print(f"chunks failed by the kill: {told}")
    assert told == counted <= 1, (told, counted)
    await ws.close()
    reader.cancel()
    after = scrape(srv.http)
    # The new process's CPU time starts again from its warm-up, which costs less than
    # the victim's warm-up and work: the counter keeps what the victim had used, so it
    # never goes back (a counter of the live processes alone would).
    assert after.total(cpu, engine="piper") >= before.total(cpu, engine="piper")
    assert after.total("voxwire_engine_process_resident_memory_bytes", engine="piper") > 50e6
