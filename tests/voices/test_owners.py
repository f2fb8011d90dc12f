"""Voices belong to the API key that uploaded them, against real servers (uvicorn, F5
on the tiny random-weight model): with two keys, key B cannot list, get, preview,
delete or speak with key A's voice (HTTP and WebSocket, on both nodes of a shared
Redis) and gets exactly the answers an id that never existed gets; key A can. With
``voice_sharing: shared`` B lists and speaks with it but cannot delete it. Records
without an owner (written before owners existed) are everyone's. An open server is
as before."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import msgspec
from redis.asyncio import Redis

from server.auth import digest, key_id
from tests.support import Received, ServerProcess, connect, recv_until, send
from tests.voices.conftest import AUTH, AUTH_B, KEY, TRANSCRIPT, Nodes
from tests.voices.test_two_nodes import wait_log

TEXT = "Good morning. The weather is mild today."
INDEX = "voxwire:{voices}"  # the default redis_prefix's voice index (a hash)


async def req(method: str, url: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=120) as http:
        return await http.request(method, url, **kw)


async def new_voice(srv: ServerProcess, data: bytes, headers: dict[str, str]) -> dict[str, Any]:
    r = await req(
        "POST",
        srv.http + "/v1/voices",
        data={"name": "Mine", "transcript": TRANSCRIPT, "language": "en", "engine": "f5"},
        files={"audio": ("me.flac", data, "audio/flac")},
        headers=headers,
        timeout=60,
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def never_uploaded() -> str:
    return "v_" + secrets.token_urlsafe(12)


async def listed(srv: ServerProcess, headers: dict[str, str]) -> set[str]:
    r = await req("GET", srv.http + "/v1/voices", headers=headers)
    assert r.status_code == 200, r.text
    return {v["id"] for v in r.json()["voices"]}


async def routes(srv: ServerProcess, vid: str, headers: dict[str, str]) -> list[httpx.Response]:
    """GET, preview and DELETE of ``vid`` (DELETE last)."""
    url = f"{srv.http}/v1/voices/{vid}"
    return [
        await req("GET", url, headers=headers),
        await req("POST", url + "/preview", json={"text": "Hi."}, headers=headers),
        await req("DELETE", url, headers=headers),
    ]


def anonymised(r: httpx.Response, vid: str) -> tuple[int, str]:
    """Status and body with the id taken out, to compare answers about two ids."""
    return r.status_code, r.text.replace(vid, "<id>")


async def start(
    srv: ServerProcess, voice: str, headers: dict[str, str], text: str = ""
) -> Received:
    """A WebSocket session started with ``voice``; with ``text``, spoken to the end."""
    async with await connect(srv.ws_url, additional_headers=headers) as ws:
        await send(ws, type="start", engine="f5", voice=voice)
        rec = await recv_until(ws, Received(), stop="ready", timeout=60)
        if rec.of("ready") and text:
            await send(ws, type="text", text=text)
            await send(ws, type="end")
            rec = await recv_until(ws, rec, timeout=180)
        return rec


def refusal(rec: Received, vid: str) -> dict[str, Any]:
    assert not rec.of("ready"), rec.events
    err = rec.of("error")
    assert err, rec.events
    return {**err[0], "message": err[0]["message"].replace(vid, "<id>")}


async def test_a_voice_exists_only_for_the_key_that_uploaded_it(
    nodes: Nodes, samples: dict[str, bytes]
) -> None:
    a, b = nodes.a, nodes.b
    voice = await new_voice(a, samples["flac"], AUTH)
    vid = voice["id"]
    try:
        # The owner is in the shared store's record, so every node knows it.
        async with Redis.from_url(nodes.redis.url) as store:
            record = await store.hget(INDEX, vid)
        assert record is not None
        assert msgspec.json.decode(record)["owner"] == key_id(digest(KEY))
        wait_log(b, "voice_loaded", vid)  # B's node has it ready: refusing must not rely on that

        never = never_uploaded()
        for node in (a, b):
            # Key B: the voice is absent from the listing and answers exactly like an id
            # that was never uploaded, on every route (DELETE last: it must not delete).
            assert vid not in await listed(node, AUTH_B)
            got = await routes(node, vid, AUTH_B)
            want = await routes(node, never, AUTH_B)
            for mine, other in zip(got, want, strict=True):
                assert mine.status_code == 404 and mine.json()["error"]["code"] == (
                    "voice_not_found"
                )
                assert anonymised(mine, vid) == anonymised(other, never)
            # ... and a session cannot start with it: the error a made-up voice gets.
            mine_ws = refusal(await start(node, vid, AUTH_B), vid)
            other_ws = refusal(await start(node, never, AUTH_B), never)
            assert mine_ws["code"] == "unknown_voice" and mine_ws == other_ws
            # ... nor speak with it over HTTP, where the error does not list it either.
            body = {"model": "f5", "input": "Hi.", "voice": vid}
            r = await req("POST", f"{node.http}/v1/audio/speech", json=body, headers=AUTH_B)
            r_never = await req(
                "POST",
                f"{node.http}/v1/audio/speech",
                json={**body, "voice": never},
                headers=AUTH_B,
            )
            assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_voice"
            assert anonymised(r, vid) == anonymised(r_never, never)
            # Built-in voices are everyone's.
            assert {"f5_basic_en", "en_US-joe-medium"} <= await listed(node, AUTH_B)
            rec = await start(node, "f5_basic_en", AUTH_B)
            assert rec.of("ready"), rec.events

            # Key A, on either node: listed, fetched, previewed, spoken with.
            assert vid in await listed(node, AUTH)
            assert (await req("GET", f"{node.http}/v1/voices/{vid}", headers=AUTH)).json() == voice
        r = await req(
            "POST", f"{b.http}/v1/voices/{vid}/preview", json={"text": "Hi."}, headers=AUTH
        )
        assert r.status_code == 200 and r.content[:4] == b"OggS"
        rec = await start(b, vid, AUTH, TEXT)
        assert rec.of("ready")[0]["voice"] == vid and rec.of("done"), rec.events
        body = {"model": "f5", "input": "Hi.", "voice": vid, "response_format": "pcm"}
        r = await req("POST", f"{a.http}/v1/audio/speech", json=body, headers=AUTH)
        assert r.status_code == 200 and len(r.content) > 4800, r.text[:300]
        assert rec.frames and rec.close_code == 1000
    finally:
        # Key B's DELETEs above removed nothing: A deletes it, on the other node.
        r = await req("DELETE", f"{b.http}/v1/voices/{vid}", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"id": vid, "deleted": True}
    assert vid not in await listed(a, AUTH)


async def test_records_without_an_owner_are_everyones(
    nodes: Nodes, samples: dict[str, bytes]
) -> None:
    """A voice stored before voices had owners (its record has no ``owner``): every key
    sees it and speaks with it, and any key may delete it, as before."""
    a, b = nodes.a, nodes.b
    voice = await new_voice(a, samples["flac"], AUTH)
    r = Redis.from_url(nodes.redis.url)
    old_id = never_uploaded()
    try:
        # The same voice written the way the store wrote it before owners existed.
        record = msgspec.json.decode(await r.hget(INDEX, voice["id"]) or b"")
        del record["owner"]
        record["id"] = old_id
        audio = await r.get(f"voxwire:{{voices}}:audio:{voice['id']}")
        assert audio is not None
        await r.set(f"voxwire:{{voices}}:audio:{old_id}", audio)
        await r.hset(INDEX, old_id, msgspec.json.encode(record))
        for headers in (AUTH, AUTH_B):
            assert old_id in await listed(b, headers)
            got = await req("GET", f"{b.http}/v1/voices/{old_id}", headers=headers)
            assert got.status_code == 200 and got.json() == {**voice, "id": old_id}
        rec = await start(b, old_id, AUTH_B, TEXT)
        assert rec.of("ready") and rec.of("done"), rec.events
        gone = await req("DELETE", f"{a.http}/v1/voices/{old_id}", headers=AUTH_B)
        assert gone.status_code == 200 and old_id not in await listed(a, AUTH)
    finally:
        await req("DELETE", f"{a.http}/v1/voices/{voice['id']}", headers=AUTH)
        await r.hdel(INDEX, old_id)
        await r.delete(f"voxwire:{{voices}}:audio:{old_id}")
        await r.aclose()


async def test_shared_voices_are_used_by_every_key_and_deleted_by_their_owner(
    shared_node: ServerProcess, samples: dict[str, bytes]
) -> None:
    srv = shared_node
    voice = await new_voice(srv, samples["flac"], AUTH)
    vid = voice["id"]
    assert vid in await listed(srv, AUTH_B)
    assert (await req("GET", f"{srv.http}/v1/voices/{vid}", headers=AUTH_B)).json() == voice
    r = await req(
        "POST", f"{srv.http}/v1/voices/{vid}/preview", json={"text": "Hi."}, headers=AUTH_B
    )
    assert r.status_code == 200 and r.content[:4] == b"OggS"
    rec = await start(srv, vid, AUTH_B, TEXT)
    assert rec.of("ready")[0]["voice"] == vid and rec.of("done"), rec.events
    # B may use it, not delete it; the refusal says why.
    r = await req("DELETE", f"{srv.http}/v1/voices/{vid}", headers=AUTH_B)
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert err["code"] == "voice_not_owned" and "only the key that uploaded it" in err["message"]
    assert vid in await listed(srv, AUTH)
    # A voice B uploads is A's to use too.
    theirs = (await new_voice(srv, samples["flac"], AUTH_B))["id"]
    assert theirs in await listed(srv, AUTH)
    assert (
        await req("DELETE", f"{srv.http}/v1/voices/{theirs}", headers=AUTH_B)
    ).status_code == 200
    r = await req("DELETE", f"{srv.http}/v1/voices/{vid}", headers=AUTH)
    assert r.status_code == 200 and vid not in await listed(srv, AUTH_B)


async def test_an_open_server_shares_everything_as_before(
    open_node: ServerProcess, samples: dict[str, bytes]
) -> None:
    srv = open_node
    voice = await new_voice(srv, samples["flac"], {})
    vid = voice["id"]
    assert vid in await listed(srv, {})
    assert (await req("GET", f"{srv.http}/v1/voices/{vid}")).json() == voice
    rec = await start(srv, vid, {}, TEXT)
    assert rec.of("ready")[0]["voice"] == vid and rec.of("done"), rec.events
    r = await req("DELETE", f"{srv.http}/v1/voices/{vid}")
    assert r.status_code == 200 and vid not in await listed(srv, {})
