"""API keys, browser tokens, the Origin check, per-key limits and CORS, on real servers."""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from websockets.typing import Origin

from server.auth import digest
from tests.support import (
    ROOT,
    Received,
    RedisProcess,
    ServerProcess,
    connect,
    recv_until,
    send,
    speaks,
    ws_refused,
)

_speaks_authorised = functools.partial(speaks, text="Authorised.")

KEY = "vw_test_key_one_0123456789"
KEY2 = "vw_test_key_two_abcdefghij"
SPEECH = {"model": "tts-1", "voice": "alloy", "input": "Hello there.", "response_format": "pcm"}


def _start(**settings: Any) -> ServerProcess:
    srv = ServerProcess(**settings)
    srv.wait_ready()
    return srv


@pytest.fixture(scope="module")
def secured() -> Iterator[ServerProcess]:
    srv = _start(
        api_keys=f"{KEY},sha256:{digest(KEY2)}",
        token_max_ttl_s=60,
        allowed_origins="https://good.example",
        cors_origins="https://app.example",
        allowed_hosts="tts.example",
    )
    yield srv
    srv.stop()


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _http(method: str, url: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as client:
        return await client.request(method, url, **kw)


def _err(r: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = r.json()["error"]
    return body


# ------------------------------------------------------------------ HTTP


@pytest.mark.parametrize(
    ("headers", "url_suffix", "status", "code"),
    [
        ({}, "", 401, "missing_api_key"),
        (_bearer("wrong"), "", 401, "invalid_api_key"),
        ({"Authorization": "Basic abc"}, "", 401, "invalid_authorization"),
        ({}, f"?api_key={KEY}", 400, "key_in_url"),
        ({}, "?token=forged.token", 401, "invalid_token"),
    ],
)
def test_http_auth_failures(
    secured: ServerProcess, headers: dict[str, str], url_suffix: str, status: int, code: str
) -> None:
    r = httpx.get(secured.http + "/v1/engines" + url_suffix, headers=headers)
    assert r.status_code == status
    err = _err(r)
    assert err["code"] == code and err["message"]
    if status == 401:
        assert r.headers["www-authenticate"] == "Bearer"


def test_keys_from_config_plain_and_hashed(secured: ServerProcess) -> None:
    for key in (KEY, KEY2):
        assert httpx.get(secured.http + "/v1/engines", headers=_bearer(key)).status_code == 200
        r = httpx.post(
            secured.http + "/v1/audio/speech", json=SPEECH, headers=_bearer(key), timeout=60
        )
        assert r.status_code == 200 and len(r.content) > 10000


def test_public_routes_need_no_key(secured: ServerProcess) -> None:
    assert httpx.get(secured.http + "/health").status_code == 200
    r = httpx.get(secured.http + "/")
    assert r.status_code == 307 and r.headers["location"] == "/demo/"
    r = httpx.get(secured.http + "/?token=abc")
    assert r.headers["location"] == "/demo/?token=abc"
    assert httpx.get(secured.http + "/metrics").status_code == 401
    assert httpx.post(secured.http + "/v1/audio/speech", json=SPEECH).status_code == 401


def test_cors_preflight_and_headers(secured: ServerProcess) -> None:
    r = httpx.options(
        secured.http + "/v1/audio/speech",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    r = httpx.options(
        secured.http + "/v1/audio/speech",
        headers={"Origin": "https://other.example", "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code == 400
    r = httpx.get(
        secured.http + "/v1/models", headers={"Origin": "https://app.example", **_bearer(KEY)}
    )
    assert r.headers["access-control-allow-origin"] == "https://app.example"


# ------------------------------------------------------------------ tokens and WebSockets


def _mint(srv: ServerProcess, key: str = KEY, **body: Any) -> dict[str, Any]:
    r = httpx.post(srv.http + "/v1/tokens", json=body, headers=_bearer(key))
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def test_websocket_needs_a_key_or_token(secured: ServerProcess) -> None:
    status, body = await ws_refused(secured.ws_url)
    assert status == 401 and body["error"]["code"] == "missing_api_key"
    status, body = await ws_refused(secured.ws_url, additional_headers=_bearer("nope"))
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    status, body = await ws_refused(secured.ws_url + f"?api_key={KEY}")
    assert status == 400 and body["error"]["code"] == "key_in_url"
    rec = await _speaks_authorised(secured.ws_url, additional_headers=_bearer(KEY))
    assert rec.close_code == 1000 and rec.frames
    token = _mint(secured, ttl_s=30)
    assert 25 < token["expires_in"] <= 30
    rec = await _speaks_authorised(secured.ws_url + "?token=" + token["token"])
    assert rec.close_code == 1000 and rec.frames


async def test_expired_and_tampered_tokens(secured: ServerProcess) -> None:
    token = _mint(secured, ttl_s=1)["token"]
    await asyncio.sleep(1.2)
    status, body = await ws_refused(secured.ws_url + "?token=" + token)
    assert status == 401 and body["error"]["code"] == "token_expired"
    assert "POST /v1/tokens" in body["error"]["message"]
    fresh = _mint(secured)["token"]
    payload, sig = fresh.split(".")
    status, body = await ws_refused(secured.ws_url + "?token=" + payload + "." + sig[::-1])
    assert status == 401 and body["error"]["code"] == "invalid_token"


def test_token_rules(secured: ServerProcess) -> None:
    token = _mint(secured)["token"]
    r = httpx.post(secured.http + "/v1/tokens?token=" + token)
    assert r.status_code == 403 and _err(r)["code"] == "token_not_allowed"
    r = httpx.post(secured.http + "/v1/tokens", json={"ttl_s": 3600}, headers=_bearer(KEY))
    assert r.status_code == 400 and _err(r)["param"] == "ttl_s"
    # a token also works on HTTP routes, for browsers' fetches
    r = httpx.get(secured.http + "/v1/voices?token=" + token)
    assert r.status_code == 200


async def test_cross_site_websocket_is_refused_403(
    secured: ServerProcess, server: ServerProcess
) -> None:
    for srv in (secured, server):  # with keys and without
        status, body = await ws_refused(
            srv.ws_url, origin="https://evil.example", additional_headers=_bearer(KEY)
        )
        assert status == 403 and body["error"]["code"] == "origin_not_allowed"
    # the allow-listed site and the server's own pages are fine
    rec = await _speaks_authorised(
        secured.ws_url, origin="https://good.example", additional_headers=_bearer(KEY)
    )
    assert rec.close_code == 1000
    rec = await _speaks_authorised(server.ws_url, origin=f"http://127.0.0.1:{server.port}")
    assert rec.close_code == 1000


# ------------------------------------------------------------------ DNS rebinding and Host


async def _connect_as(srv: ServerProcess, host: str, origin: str | None, **kw: Any) -> Any:
    """A WebSocket to ``srv`` through a URL naming ``host`` (which does not resolve here:
    the TCP connection goes to 127.0.0.1, as a DNS-rebound name would)."""
    sock = socket.create_connection(("127.0.0.1", srv.port))
    url = f"ws://{host}:{srv.port}/v1/stream"
    return await websockets.connect(
        url, sock=sock, origin=Origin(origin) if origin else None, open_timeout=20, **kw
    )


async def test_dns_rebinding_origin_is_refused(
    secured: ServerProcess, server: ServerProcess
) -> None:
    for srv, auth in ((secured, _bearer(KEY)), (server, {})):
        # a page on evil.example, its name resolving to this server: Origin and Host match
        with pytest.raises(websockets.InvalidStatus) as info:
            await _connect_as(
                srv, "evil.example", f"http://evil.example:{srv.port}", additional_headers=auth
            )
        resp = info.value.response
        assert resp.status_code == 403
        err = json.loads(resp.body or b"{}")["error"]
        assert err["code"] == "origin_not_allowed" and "allowed_hosts" in err["message"]
        # the same shape on HTTP, which a rebound page can read as same-origin
        r = await _http(
            "POST",
            srv.http + "/v1/audio/speech",
            json=SPEECH,
            headers={
                "Host": f"evil.example:{srv.port}",
                "Origin": f"http://evil.example:{srv.port}",
                **auth,
            },
        )
        assert r.status_code == 403 and _err(r)["code"] == "host_not_allowed"
        # no Origin (not a browser page): the Host alone decides nothing
        r = await _http("GET", srv.http + "/v1/models", headers={"Host": "evil.example", **auth})
        assert r.status_code == 200


async def test_known_hosts_count_as_the_servers_own(secured: ServerProcess) -> None:
    """A name in allowed_hosts, a loopback name and an IP address are same-origin."""
    auth = _bearer(KEY)
    for host in ("tts.example", "localhost", "127.0.0.1"):
        origin = f"http://{host}:{secured.port}"
        async with await _connect_as(secured, host, origin, additional_headers=auth) as ws:
            await send(ws, type="start", output={"encoding": "pcm_s16le", "sample_rate": 8000})
            rec = await recv_until(ws, Received(), stop="ready")
            await send(ws, type="text", text="Known host.")
            await send(ws, type="end")
            rec = await recv_until(ws, rec)
        assert rec.close_code == 1000 and rec.frames, host
    # a listed origin is fine whatever the Host
    async with await _connect_as(
        secured, "other.example", "https://good.example", additional_headers=auth
    ) as ws:
        await send(ws, type="start")
        assert (await recv_until(ws, Received(), stop="ready")).of("ready")


# ------------------------------------------------------------------ duplicate headers


def test_duplicate_authorization_or_origin_is_refused(secured: ServerProcess) -> None:
    url = secured.http + "/v1/engines"
    twice = [("Authorization", "Bearer wrong"), ("Authorization", f"Bearer {KEY}")]
    r = httpx.get(url, headers=twice)
    assert r.status_code == 400 and _err(r)["code"] == "duplicate_header"
    assert "Authorization" in _err(r)["message"]
    origins = [("Origin", "https://app.example"), ("Origin", "https://evil.example")]
    r = httpx.get(url, headers=[*origins, ("Authorization", f"Bearer {KEY}")])
    assert r.status_code == 400 and "Origin" in _err(r)["message"]
    assert httpx.get(url, headers=twice[1:]).status_code == 200


async def test_duplicate_headers_refuse_the_websocket(secured: ServerProcess) -> None:
    twice = [("Authorization", "Bearer wrong"), ("Authorization", f"Bearer {KEY}")]
    status, body = await ws_refused(secured.ws_url, additional_headers=twice)
    assert status == 400 and body["error"]["code"] == "duplicate_header"
    assert "Authorization" in body["error"]["message"]
    origins = [("Origin", "https://evil.example"), ("Origin", "https://good.example")]
    status, body = await ws_refused(
        secured.ws_url, additional_headers=[*origins, ("Authorization", f"Bearer {KEY}")]
    )
    assert status == 400 and "Origin" in body["error"]["message"]


def test_logs_never_contain_keys_or_tokens(secured: ServerProcess) -> None:
    token = _mint(secured)["token"]
    httpx.get(secured.http + "/v1/voices?token=" + token)
    httpx.get(secured.http + "/v1/voices", headers=_bearer("a-wrong-key-value"))
    httpx.get(secured.http + f"/v1/voices?api_key={KEY}")
    logs = secured.logs()
    assert "access_denied" in logs
    for secret in (KEY, KEY2, token, token.split(".")[1], "a-wrong-key-value"):
        assert secret not in logs


# ------------------------------------------------------------------ limits (in memory)


@pytest.fixture(scope="module")
def limited() -> Iterator[ServerProcess]:
    srv = _start(
        api_keys=f"{KEY},{KEY2}",
        key_max_sessions=1,
        key_requests_per_minute=6,
        key_chars_per_day=200,
    )
    yield srv
    srv.stop()


async def test_concurrent_session_limit(limited: ServerProcess) -> None:
    async with await connect(limited.ws_url, additional_headers=_bearer(KEY)) as first:
        await send(first, type="start")
        await recv_until(first, Received(), stop="ready")
        async with await connect(limited.ws_url, additional_headers=_bearer(KEY)) as second:
            rec = await recv_until(second, Received())
        err = rec.of("error")[-1]
        assert err["code"] == "limit_exceeded" and err["fatal"] is True
        assert "1 concurrent sessions" in err["message"]
        assert rec.close_code == 1008
        r = await _http(
            "POST", limited.http + "/v1/audio/speech", json=SPEECH, headers=_bearer(KEY)
        )
        assert r.status_code == 429 and _err(r)["code"] == "sessions"
        # another key has its own budget
        rec = await _speaks_authorised(limited.ws_url, additional_headers=_bearer(KEY2))
        assert rec.close_code == 1000
    # the slot is free again once the first session ended
    await asyncio.sleep(0.3)
    rec = await _speaks_authorised(limited.ws_url, additional_headers=_bearer(KEY))
    assert rec.close_code == 1000


async def test_chars_per_day_limit(limited: ServerProcess) -> None:
    r = await _http(
        "POST",
        limited.http + "/v1/audio/speech",
        headers=_bearer(KEY2),
        json={**SPEECH, "input": "x" * 250},
    )
    assert r.status_code == 429 and _err(r)["code"] == "chars_per_day"
    assert "200 characters per day" in _err(r)["message"] and "resets at" in _err(r)["message"]
    assert int(r.headers["retry-after"]) > 0
    async with await connect(limited.ws_url, additional_headers=_bearer(KEY2)) as ws:
        await send(ws, type="start")
        await recv_until(ws, Received(), stop="ready")
        for _ in range(5):
            await send(ws, type="text", text="a" * 60)
        rec = await recv_until(ws, Received())
    err = rec.of("error")[-1]
    assert err["code"] == "limit_exceeded" and "characters per day" in err["message"]
    assert rec.close_code == 1008


def test_requests_per_minute_limit(limited: ServerProcess) -> None:
    codes = []
    for _ in range(10):
        r = httpx.get(limited.http + "/v1/engines", headers=_bearer(KEY))
        codes.append(r.status_code)
        if r.status_code == 429:
            assert _err(r)["code"] == "requests_per_minute"
            assert "6 requests per minute" in _err(r)["message"]
            assert 1 <= int(r.headers["retry-after"]) <= 60
    assert 429 in codes and codes.index(429) <= 6


# ------------------------------------------------------------------ keys and limits in Redis


def _keys_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "keys", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_redis_keys_and_shared_limits_across_nodes(redis_server: RedisProcess) -> None:
    prefix = f"t{int(time.time() * 1000)}:"
    made = _keys_cli("new", "--redis-url", redis_server.url, "--redis-prefix", prefix)
    assert made.returncode == 0
    key = made.stdout.strip()
    assert key.startswith("vw_") and key not in made.stderr
    assert redis_server.cli("SISMEMBER", prefix + "api_keys", digest(key)) == "1"
    common = {"redis_url": redis_server.url, "redis_prefix": prefix, "key_max_sessions": 1}
    a, b = _start(**common), _start(**common)
    try:
        # no key configured on the nodes: the one in Redis is required and accepted
        assert (await _http("GET", a.http + "/v1/engines")).status_code == 401
        assert (await _http("GET", b.http + "/v1/engines", headers=_bearer(key))).status_code == 200
        async with await connect(a.ws_url, additional_headers=_bearer(key)) as ws:
            await send(ws, type="start")
            await recv_until(ws, Received(), stop="ready")
            # the session on node A holds the key's only slot, seen from node B
            async with await connect(b.ws_url, additional_headers=_bearer(key)) as other:
                rec = await recv_until(other, Received())
            assert rec.of("error")[-1]["code"] == "limit_exceeded"
            assert rec.close_code == 1008
        revoked = _keys_cli(
            "revoke", key, "--redis-url", redis_server.url, "--redis-prefix", prefix
        )
        assert revoked.returncode == 0
        assert (await _http("GET", b.http + "/v1/engines", headers=_bearer(key))).status_code == 401
        # revoking the last key does not open the nodes
        await asyncio.sleep(2.5)
        assert (await _http("GET", b.http + "/v1/engines")).status_code == 401
    finally:
        a.stop()
        b.stop()


def test_redis_down_at_start_refuses_to_start() -> None:
    srv = ServerProcess(redis_url="redis://127.0.0.1:9/0")
    try:
        assert srv.proc.wait(60) == 2
        logs = srv.logs()
        assert "cannot reach Redis at redis://127.0.0.1:9/0" in logs and "not starting" in logs
    finally:
        srv.stop()
