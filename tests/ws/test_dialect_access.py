"""Keys in each dialect's own place, the Origin check and per-key limits, on a
server that requires keys."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dialects.wire import Got, collect, send
from tests.support import ServerProcess, connect, ws_refused

KEY = "vw_test_key_dialects_0123456789"
VOICE = "en_US-joe-medium"


@pytest.fixture(scope="module")
def secured() -> Iterator[ServerProcess]:
    srv = ServerProcess(api_keys=KEY, key_max_sessions=1)
    srv.wait_ready()
    yield srv
    srv.stop()


def el(srv: ServerProcess) -> str:
    return (
        f"ws://127.0.0.1:{srv.port}/v1/text-to-speech/{VOICE}/stream-input?output_format=pcm_16000"
    )


async def speak_el(ws) -> Got:  # type: ignore[no-untyped-def]
    await send(ws, text="Hello there.")
    await send(ws, text="")
    return await collect(ws, Got())


async def test_elevenlabs_key_in_the_header_or_the_first_message(secured: ServerProcess) -> None:
    async with await connect(el(secured), additional_headers={"xi-api-key": KEY}) as ws:
        got = await speak_el(ws)
    assert got.close_code == 1000 and got.audio()
    async with await connect(el(secured)) as ws:
        await send(ws, text=" ", xi_api_key=KEY)
        got = await speak_el(ws)
    assert got.close_code == 1000 and got.audio()
    for first in ({"text": " "}, {"text": " ", "xi_api_key": "wrong"}):
        async with await connect(el(secured)) as ws:
            await send(ws, **first)
            got = await collect(ws, Got(), timeout=10)
        assert got.close_code == 1008
        assert got.msgs[-1]["error"] == "invalid_api_key" and not got.audio()
    # a wrong key in the header is refused at the handshake
    status, body = await ws_refused(el(secured), additional_headers={"xi-api-key": "nope"})
    assert status == 401 and body["error"]["code"] == "invalid_api_key"


async def test_deepgram_token_and_cartesia_x_api_key(secured: ServerProcess) -> None:
    dg = f"ws://127.0.0.1:{secured.port}/v1/speak?model={VOICE}"
    status, _ = await ws_refused(dg)
    assert status == 401
    async with await connect(dg, additional_headers={"Authorization": f"Token {KEY}"}) as ws:
        await send(ws, type="Speak", text="Hello there.")
        await send(ws, type="Close")
        got = await collect(ws, Got())
    assert got.close_code == 1000 and got.binary
    ca = f"ws://127.0.0.1:{secured.port}/tts/websocket"
    status, body = await ws_refused(ca + f"?api_key={KEY}")
    assert status == 400 and body["error"]["code"] == "key_in_url"
    async with await connect(ca, additional_headers={"X-API-Key": KEY}) as ws:
        fmt = {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 16000}
        voice = {"mode": "id", "id": VOICE}
        await send(ws, context_id="c", transcript="Hello.", voice=voice, output_format=fmt)
        got = await collect(ws, Got(), until=lambda m: m["type"] == "done")
    assert got.audio("data", "c", "context_id")


async def test_the_keys_session_limit_covers_dialect_connections(secured: ServerProcess) -> None:
    headers = {"xi-api-key": KEY}
    async with await connect(el(secured), additional_headers=headers) as first:
        await send(first, text=" ")
        async with await connect(el(secured), additional_headers=headers) as second:
            got = await collect(second, Got(), timeout=10)
        assert got.close_code == 1008 and got.msgs[-1]["error"] == "limit_exceeded"
        done = await speak_el(first)
    assert done.close_code == 1000


async def test_a_foreign_origin_is_refused(secured: ServerProcess) -> None:
    headers = {"xi-api-key": KEY, "Origin": "https://evil.example"}
    status, body = await ws_refused(el(secured), additional_headers=headers)
    assert status == 403 and body["error"]["code"] == "origin_not_allowed"
