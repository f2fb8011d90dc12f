"""No session outlives its connection (issue 11): clients that drop while the node's
Redis replies are in flight leave no session behind, under the interleaving that
stranded them on Python 3.11 (a heartbeat reply and the disconnect in one loop turn)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from tests.support import Received, RedisProcess, ServerProcess, connect, recv_until, send

N = 20


async def _wait_metric(srv: ServerProcess, name: str, value: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        got = srv.metric(name)
        if got == value or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.1)


async def test_sessions_end_when_clients_drop_while_redis_replies_are_in_flight() -> None:
    redis = RedisProcess()
    srv = ServerProcess(
        redis_url=redis.url,
        max_sessions=N,
        state_write_timeout_s=10,
        resume_window_s=30,
        idle_timeout_s=600,
    )
    try:
        srv.wait_ready()
        for round_ in range(3):
            assert await _wait_metric(srv, "voxwire_state_store_up", 1, timeout=10) == 1
            clients = []
            for _ in range(N):
                ws = await connect(srv.ws_url)
                await send(ws, type="start")
                rec = await recv_until(ws, Received(), stop="ready", timeout=20)
                assert rec.of("ready"), rec.events
                clients.append(ws)
            assert srv.metric("voxwire_active_sessions") == N
            # Every session's watchdog sends a heartbeat at least once a second: with
            # Redis paused they all wait on its replies ...
            os.kill(redis.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]
            await asyncio.sleep(1.3)
            # ... then the node stops, Redis answers into its socket, and every client
            # drops: when the node runs again, replies and disconnects land together.
            os.kill(srv.pid, signal.SIGSTOP)
            os.kill(redis.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
            await asyncio.sleep(0.3)
            for ws in clients:
                ws.transport.abort()
            await asyncio.sleep(0.3)
            os.kill(srv.pid, signal.SIGCONT)
            left = await _wait_metric(srv, "voxwire_active_sessions", 0, timeout=3.0)
            assert left == 0, f"round {round_}: {left:g} sessions outlived their clients"
        # the node still takes new sessions
        assert await _wait_metric(srv, "voxwire_state_store_up", 1, timeout=10) == 1
        ws = await connect(srv.ws_url)
        await send(ws, type="start")
        rec = await recv_until(ws, Received(), stop="ready", timeout=20)
        assert rec.of("ready"), rec.events
        await ws.close()
    finally:
        srv.stop()
        redis.stop()
