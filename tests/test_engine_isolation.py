"""Engines run outside the server's process (issue 11): an engine process that dies in
the middle of one session's chunk costs that chunk alone. The session gets a
non-fatal `engine_crashed` and goes on; another session beside it plays without a
gap; the node never stops answering."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    Received,
    ServerProcess,
    connect,
    decode_opus,
    get_json,
    recv_until,
    send,
    transcribe,
    word_recall,
)

LONG = (
    "Please call Stella and ask her to bring these things with her from the store, six "
    "spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for "
    "her brother Bob, and then we will all meet again tomorrow morning at the station."
)
# another text for the quarantine test (the module's server remembers LONG's chunks)
OTHER = LONG.replace("Stella", "Susan").replace("Bob", "Ben")
FOX = "The quick brown fox jumps over the lazy dog."
STATION = "We will meet again tomorrow morning at the station."


def engine_pids(server_pid: int) -> list[int]:
    """The server's engine processes (multiprocessing's spawn children; not its
    resource tracker)."""
    pids = []
    for task in Path(f"/proc/{server_pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmd = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmd:
                pids.append(int(child))
    return pids


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


async def busy_engine(server_pid: int, timeout: float = 10.0) -> int:
    """The engine process that is synthesizing now (its CPU time grows)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = {p: cpu_ticks(p) for p in engine_pids(server_pid)}
        await asyncio.sleep(0.1)
        now = {p: cpu_ticks(p) for p in engine_pids(server_pid)}
        grew = [p for p, t in before.items() if now.get(p, t) > t]
        if len(grew) == 1:
            return grew[0]
    raise AssertionError("no single busy engine process found")


def underruns(rec: Received, frame_s: float = 0.02, buffer_s: float = 0.5) -> int:
    """Frames that would have come too late for a player that starts ``buffer_s`` after
    the first frame and plays in real time."""
    t = rec.frame_times
    late = 0
    for i, at in enumerate(t):
        if at > t[0] + buffer_s + i * frame_s:
            late += 1
    return late


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProcess]:
    # two engine threads (this machine's two cores) and one spare process
    s = ServerProcess(engine_threads=2, engine_spare_processes=1)
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


async def test_a_crashed_engine_process_costs_one_chunk_and_no_one_else(
    srv: ServerProcess,
) -> None:
    assert len(engine_pids(srv.pid)) == 3
    a = await connect(srv.ws_url)
    await send(a, type="start")
    rec_a = await recv_until(a, Received(), stop="ready")
    await send(a, type="text", text=LONG)
    await send(a, type="flush")
    victim = await busy_engine(srv.pid)  # A's long chunk is being synthesized

    b = await connect(srv.ws_url)
    await send(b, type="start")
    rec_b = await recv_until(b, Received(), stop="ready")
    await send(b, type="text", text=FOX + " " + STATION)
    await send(b, type="end")
    os.kill(victim, signal.SIGSEGV)  # what espeak-ng does on a bad string

    rec_a = await recv_until(a, rec_a, stop="flushed", timeout=60)
    rec_b = await recv_until(b, rec_b, timeout=60)
    err = [e for e in rec_a.of("error") if e["code"] == "engine_crashed"]
    assert err and not err[0]["fatal"] and "SIGSEGV" in err[0]["message"], rec_a.events
    # A goes on: its next text is spoken, in the same connection
    await send(a, type="text", text=STATION)
    await send(a, type="end")
    rec_a = await recv_until(a, rec_a, timeout=60)
    assert rec_a.close_code == 1000 and rec_a.of("done")
    after = rec_a.order.index(("event", err[0]))
    assert any(kind == "frame" for kind, _ in rec_a.order[after:])
    heard_a = transcribe(decode_opus(rec_a.frames[-150:]), 48000)
    assert word_recall(STATION, heard_a) >= 0.5, heard_a

    # B never noticed: complete, intelligible, no error, and no gap a player would hear
    assert rec_b.close_code == 1000 and not rec_b.of("error")
    heard_b = transcribe(decode_opus(rec_b.frames), 48000)
    assert word_recall(FOX + " " + STATION, heard_b) >= 0.6, heard_b
    assert underruns(rec_b) == 0

    assert get_json(srv.http + "/health")[0] == 200
    deadline = time.monotonic() + 30
    while len(engine_pids(srv.pid)) < 3:
        assert time.monotonic() < deadline, "the crashed engine process was not replaced"
        await asyncio.sleep(0.1)
    assert victim not in engine_pids(srv.pid)
    assert srv.metric("voxwire_engine_restarts_total") >= 1
    assert srv.metric("voxwire_engine_processes") == 3


async def test_the_text_that_crashed_an_engine_is_not_retried(srv: ServerProcess) -> None:
    ws = await connect(srv.ws_url)
    await send(ws, type="start")
    rec = await recv_until(ws, Received(), stop="ready")
    await send(ws, type="text", text=OTHER)
    await send(ws, type="flush")
    os.kill(await busy_engine(srv.pid), signal.SIGSEGV)
    rec = await recv_until(ws, rec, stop="flushed", timeout=60)
    assert [e["code"] for e in rec.of("error")] == ["engine_crashed"]
    pids = engine_pids(srv.pid)
    await send(ws, type="text", text=OTHER)  # the same text, chunked the same way
    await send(ws, type="end")
    rec = await recv_until(ws, rec, timeout=60)
    codes = [e["code"] for e in rec.of("error")]
    assert codes[:2] == ["engine_crashed", "text_quarantined"], codes
    assert "not retried" in rec.of("error")[1]["message"]
    assert rec.close_code == 1000
    assert set(engine_pids(srv.pid)) == set(pids)  # nothing more died
    assert srv.metric("voxwire_engine_quarantined_total") >= 1
