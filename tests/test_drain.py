"""SIGTERM drains a node: readiness fails, idle sessions close 1012 at once, running
utterances finish first, new sessions are turned away, then the process exits."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx

from tests.support import Received, ServerProcess, connect, recv_until, send

LONG = (
    "This utterance was already running when the node was told to stop. It has to finish "
    "every sentence before the connection closes. Only then may the server go away."
)


async def test_sigterm_drains_then_exits() -> None:
    srv = ServerProcess(drain_grace_s=60)
    try:
        srv.wait_ready()
        busy = await connect(srv.ws_url)
        idle = await connect(srv.ws_url)
        for ws in (busy, idle):
            await send(ws, type="start", output={"encoding": "pcm_s16le", "sample_rate": 8000})
        busy_rec = await recv_until(busy, Received(), stop="ready")
        idle_rec = await recv_until(idle, Received(), stop="ready")
        await send(busy, type="text", text=LONG)
        await send(busy, type="flush")
        await recv_until(busy, busy_rec, stop="segment")  # audio is on its way
        srv.proc.send_signal(signal.SIGTERM)

        idle_rec = await recv_until(idle, idle_rec, timeout=10)
        assert idle_rec.close_code == 1012
        err = idle_rec.of("error")[-1]
        assert err["code"] == "server_draining" and err["fatal"] and "reconnect" in err["message"]

        async with httpx.AsyncClient() as client:
            r = await client.get(srv.http + "/health")
        assert r.status_code == 503 and r.json() == {"status": "draining"}
        async with await connect(srv.ws_url) as late:
            late_rec = await recv_until(late, Received(), timeout=10)
        assert late_rec.close_code == 1013
        assert late_rec.of("error")[-1]["code"] == "server_draining"

        busy_rec = await recv_until(busy, busy_rec, timeout=60)
        # the whole utterance arrived, then `flushed`, then the drain notice and 1012
        assert busy_rec.close_code == 1012
        kinds = [e["type"] for e in busy_rec.events]
        assert kinds.index("flushed") < kinds.index("error")
        # the hint counts every frame that left before it (it was 1-2 short: a resume
        # would have replayed them)
        hint = busy_rec.of("error")[-1]["resume"]
        assert hint["from_frame"] == len(busy_rec.frames), (hint, len(busy_rec.frames))
        spoken = " ".join(s["text"] for s in busy_rec.of("segment"))
        assert spoken.split() == LONG.split()
        assert len(busy_rec.frames) * 0.02 > 6.0
        assert srv.proc.wait(30) == 0
    finally:
        srv.stop()


async def test_grace_period_ends_unfinished_sessions() -> None:
    srv = ServerProcess(drain_grace_s=1.0)
    try:
        srv.wait_ready()
        async with await connect(srv.ws_url) as ws:
            await send(ws, type="start")
            rec = await recv_until(ws, Received(), stop="ready")
            await send(ws, type="text", text="An utterance that never gets its flush")
            await asyncio.sleep(0.5)  # the text is in before the signal
            t0 = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            rec = await recv_until(ws, rec, timeout=15)
        assert rec.close_code == 1012
        assert rec.of("error")[-1]["code"] == "server_draining"
        assert 0.8 < time.monotonic() - t0 < 10
        assert srv.proc.wait(30) == 0
    finally:
        srv.stop()
