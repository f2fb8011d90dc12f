"""Fail closed: a node whose API keys live in Redis never serves without a key because
Redis came back empty; and the check a session's watchdog makes on its key
(``key_still_valid``), against a real redis-server started without persistence."""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import httpx
import websockets
from redis.asyncio import Redis

from server.appstate import AppState
from server.auth import KeyRing, digest, key_id, key_still_valid
from server.config import Settings
from tests.support import (
    Received,
    RedisProcess,
    ServerProcess,
    connect,
    keys_cli,
    recv_until,
    send,
    speaks,
    ws_refused,
)

_speaks_again = functools.partial(speaks, text="Keys are back.")


async def _get(url: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(url, **kw)


async def test_redis_restarted_empty_never_opens_a_node() -> None:
    redis = RedisProcess()
    key = keys_cli("new", "--redis-url", redis.url)
    auth = {"Authorization": f"Bearer {key}"}
    srv = ServerProcess(redis_url=redis.url, state_check_interval_s=0.2)
    try:
        srv.wait_ready()
        assert (await _get(srv.http + "/v1/engines")).status_code == 401
        assert (await _get(srv.http + "/v1/engines", headers=auth)).status_code == 200

        redis.stop()
        redis.start()  # same port, no persistence: every key and the marker are gone
        seen = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            r = await _get(srv.http + "/v1/engines")
            seen.append(r.status_code)
            if r.status_code == 503 and r.json()["error"]["code"] == "access_rules_lost":
                break
            await asyncio.sleep(0.1)
        assert 200 not in seen and seen[-1] == 503, seen
        err = r.json()["error"]
        assert "access rules lost" in err["message"] and "api_keys" in err["message"]
        for headers in ({}, auth):  # the old key is not in Redis either
            r = await _get(srv.http + "/v1/models", headers=headers)
            assert r.status_code == 503 and r.json()["error"]["code"] == "access_rules_lost"
        speech = {"model": "tts-1", "voice": "alloy", "input": "Open?", "response_format": "pcm"}
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.post(srv.http + "/v1/audio/speech", json=speech)
        assert r.status_code == 503
        status, body = await ws_refused(srv.ws_url)
        assert status == 503 and body["error"]["code"] == "access_rules_lost"
        health = await _get(srv.http + "/health")
        assert health.status_code == 503
        assert health.json()["status"] == "access_rules_lost"
        assert "is empty" in health.json()["error"]
        assert len(srv.log_events("access_rules_lost")) == 1  # logged once

        # a key added again brings the node back, locked
        new_key = keys_cli("new", "--redis-url", redis.url)
        deadline = time.monotonic() + 10
        while (await _get(srv.http + "/health")).status_code != 200:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        assert (await _get(srv.http + "/v1/engines")).status_code == 401
        # /health is about the keys; the store check (every 0.2 s) may still hold the
        # ping that failed while Redis restarted: 1013 means try again, as a client would.
        while True:
            try:
                rec = await _speaks_again(
                    srv.ws_url, additional_headers={"Authorization": f"Bearer {new_key}"}
                )
                break
            except websockets.ConnectionClosedError as exc:
                assert exc.rcvd is not None and exc.rcvd.code == 1013, exc
                assert time.monotonic() < deadline + 10, exc
                await asyncio.sleep(0.2)
        assert rec.close_code == 1000 and rec.frames
        assert srv.log_events("access_rules_restored")
    finally:
        srv.stop()
        redis.stop()


async def test_require_api_keys_holds_on_a_fresh_node_against_an_empty_redis() -> None:
    redis = RedisProcess()  # empty: as after a loss, before this node ever saw a key
    srv = ServerProcess(redis_url=redis.url, require_api_keys=True)
    try:
        deadline = time.monotonic() + 60
        while True:  # up, but not ready: /health says why
            try:
                health = await _get(srv.http + "/health")
                if health.status_code == 503 and health.json()["status"] == "access_rules_lost":
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and srv.proc.poll() is None, srv.logs()[-2000:]
            await asyncio.sleep(0.2)
        assert "require_api_keys" in health.json()["error"]
        r = await _get(srv.http + "/v1/engines")
        assert r.status_code == 503 and r.json()["error"]["code"] == "access_rules_lost"
        status, _ = await ws_refused(srv.ws_url)
        assert status == 503
        key = keys_cli("new", "--redis-url", redis.url)
        deadline = time.monotonic() + 10
        while (await _get(srv.http + "/health")).status_code != 200:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        assert (await _get(srv.http + "/v1/engines")).status_code == 401
        r = await _get(srv.http + "/v1/engines", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
    finally:
        srv.stop()
        redis.stop()


def test_require_api_keys_without_any_keys_or_redis_does_not_start() -> None:
    srv = ServerProcess(require_api_keys=True)
    try:
        assert srv.proc.wait(60) == 2
        assert "require_api_keys is set" in srv.logs() and "not starting" in srv.logs()
    finally:
        srv.stop()


async def test_key_still_valid_follows_revocation_and_says_when_it_cannot_tell() -> None:
    redis_proc = RedisProcess()
    prefix = "kv:"
    key = keys_cli("new", "--redis-url", redis_proc.url, "--redis-prefix", prefix)
    other = keys_cli("new", "--redis-url", redis_proc.url, "--redis-prefix", prefix)
    configured = "vw_configured_key_0123456789"
    client = Redis.from_url(redis_proc.url, socket_timeout=2.0, socket_connect_timeout=2.0)
    ring = KeyRing({digest(configured)}, client, prefix + "api_keys")
    state = AppState(settings=Settings(), engines={}, keys=ring)
    kid, other_kid = key_id(digest(key)), key_id(digest(other))
    try:
        assert await ring.has(digest(key))  # as the access middleware does on admission
        assert await key_still_valid(state, kid) is True
        # a key this node never saw admitted (a token's, say) is looked up by its id
        assert await key_still_valid(state, other_kid) is True
        assert await key_still_valid(state, key_id(digest(configured))) is True
        assert await key_still_valid(state, "0" * 16) is False

        keys_cli("revoke", key, "--redis-url", redis_proc.url, "--redis-prefix", prefix)
        deadline = time.monotonic() + 5  # answers are cached for a couple of seconds
        while await key_still_valid(state, kid) is not False:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        assert await key_still_valid(state, other_kid) is True

        redis_proc.stop()  # Redis down: cannot tell, the session goes on
        await asyncio.sleep(2.1)
        assert await key_still_valid(state, other_kid) is None
        assert await key_still_valid(state, key_id(digest(configured))) is True
        redis_proc.start()  # back empty: revoked or not is unknown, not "revoked"
        await asyncio.sleep(2.1)
        assert await key_still_valid(state, other_kid) is None
    finally:
        await client.aclose()
        redis_proc.stop()


async def test_a_revoked_keys_live_sessions_are_closed() -> None:
    redis = RedisProcess()
    key = keys_cli("new", "--redis-url", redis.url)
    other = keys_cli("new", "--redis-url", redis.url)
    srv = ServerProcess(redis_url=redis.url, idle_timeout_s=600)
    try:
        srv.wait_ready()
        doomed = await connect(srv.ws_url, additional_headers={"Authorization": f"Bearer {key}"})
        kept = await connect(srv.ws_url, additional_headers={"Authorization": f"Bearer {other}"})
        recs = []
        for ws in (doomed, kept):
            await send(ws, type="start")
            recs.append(await recv_until(ws, Received(), stop="ready"))
        keys_cli("revoke", key, "--redis-url", redis.url)
        t0 = time.monotonic()
        rec = await recv_until(doomed, recs[0], timeout=15)
        assert rec.close_code == 1008 and time.monotonic() - t0 < 10
        err = rec.of("error")[-1]
        assert err["code"] == "key_revoked" and err["fatal"], rec.events
        # the other key's session goes on and speaks
        await send(kept, type="text", text="Still here.")
        await send(kept, type="end")
        rec2 = await recv_until(kept, recs[1], timeout=30)
        assert rec2.close_code == 1000 and rec2.frames and not rec2.of("error")
    finally:
        srv.stop()
        redis.stop()
