"""Redis lost while a node runs: sessions in progress keep streaming, new sessions are
refused with `state_unavailable` (1013), and the node recovers by itself once Redis is
back."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx

from tests.support import (
    Received,
    RedisProcess,
    ServerProcess,
    connect,
    keys_cli,
    new_session,
    recv_until,
    send,
)

TEXT = (
    "The quick brown fox jumps over the lazy dog. We will meet again tomorrow morning at "
    "the station. A journey of a thousand miles begins with a single step. Please call "
    "Stella and ask her to bring these things with her from the store."
)


async def test_redis_stopped_and_restarted_under_running_sessions() -> None:
    redis = RedisProcess()
    srv = ServerProcess(redis_url=redis.url, state_check_interval_s=0.2)
    try:
        srv.wait_ready()
        ws = await connect(srv.ws_url)
        await send(ws, type="start")
        rec = await recv_until(ws, Received(), stop="ready")
        await send(ws, type="text", text=TEXT)
        await send(ws, type="flush")
        rec = await recv_until(ws, rec, stop="segment")
        redis.stop()  # mid-utterance

        rec = await recv_until(ws, rec, stop="flushed", timeout=60)
        # every sentence still arrived, with a notice that resume is off for this session
        spoken = " ".join(s["text"] for s in rec.of("segment"))
        assert spoken.split() == TEXT.split()
        assert len(rec.frames) * 0.02 > 8.0
        notice = [e for e in rec.of("error") if e["code"] == "resume_unavailable"]
        assert notice and not notice[0]["fatal"]
        assert "can no longer be resumed" in notice[0]["message"]

        await asyncio.sleep(0.6)  # the store check has seen it
        refused = await new_session(srv.ws_url)
        assert refused.close_code == 1013
        err = refused.of("error")[-1]
        assert err["code"] == "state_unavailable" and "Redis" in err["message"]
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(srv.http + "/metrics")).text
        assert "voxwire_state_store_up 0.0" in metrics

        # the running session still takes text while Redis is away
        await send(ws, type="text", text="We will meet again tomorrow morning at the station.")
        await send(ws, type="end")
        rec = await recv_until(ws, rec, timeout=60)
        assert rec.close_code == 1000 and rec.of("done")

        redis.start()  # same port, empty (no persistence)
        t0 = time.monotonic()
        while True:
            back = await new_session(srv.ws_url)
            if back.of("ready"):
                break
            assert time.monotonic() - t0 < 10, back.events
            await asyncio.sleep(0.2)
        assert back.of("ready")[0]["resume_token"]
        assert srv.log_events("state_store_recovered")
    finally:
        srv.stop()
        redis.stop()


async def test_keys_held_in_redis_cannot_be_checked_while_it_is_down() -> None:
    """A locked server stays locked: a key it cannot check gets 503 state_unavailable."""
    redis = RedisProcess()
    auth = {"Authorization": f"Bearer {keys_cli('new', '--redis-url', redis.url)}"}
    srv = ServerProcess(redis_url=redis.url)
    try:
        srv.wait_ready()
        async with httpx.AsyncClient() as client:
            assert (await client.get(srv.http + "/v1/engines", headers=auth)).status_code == 200
            redis.stop()
            r = await client.get(srv.http + "/v1/engines", headers=auth)
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "state_unavailable"
            assert "API keys cannot be checked" in r.json()["error"]["message"]
            r = await client.get(srv.http + "/v1/engines")  # still locked without a key
            assert r.status_code == 401
            assert (await client.get(srv.http + "/health")).status_code == 200
    finally:
        srv.stop()
        redis.stop()


async def test_a_hung_redis_stalls_a_session_at_most_the_write_timeout() -> None:
    """Redis stops answering without refusing (SIGSTOP: a partition, not a crash)."""
    redis = RedisProcess()
    srv = ServerProcess(redis_url=redis.url, state_check_interval_s=0.2)
    try:
        srv.wait_ready()
        ws = await connect(srv.ws_url)
        await send(ws, type="start")
        rec = await recv_until(ws, Received(), stop="ready")
        assert redis.proc is not None
        redis.proc.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        await send(ws, type="text", text=TEXT)
        await send(ws, type="flush")
        rec = await recv_until(ws, rec, stop="flushed", timeout=60)
        assert rec.first_frame_at is not None
        # the first write waits out state_write_timeout_s (1 s), then audio flows unjournaled
        assert rec.first_frame_at - t0 < 5.0
        assert " ".join(s["text"] for s in rec.of("segment")).split() == TEXT.split()
        assert [e["code"] for e in rec.of("error")] == ["resume_unavailable"]
        await asyncio.sleep(1.0)
        refused = await new_session(srv.ws_url)
        assert refused.of("error")[-1]["code"] == "state_unavailable"
        redis.proc.send_signal(signal.SIGCONT)
        t1 = time.monotonic()
        while not (await new_session(srv.ws_url)).of("ready"):
            assert time.monotonic() - t1 < 10
            await asyncio.sleep(0.2)
        await ws.close()
    finally:
        if redis.proc is not None:
            redis.proc.send_signal(signal.SIGCONT)
        srv.stop()
        redis.stop()
