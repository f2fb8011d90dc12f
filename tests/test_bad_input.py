"""Every kind of bad input gets a precise error or close code, while a healthy
session beside it streams on untouched."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import numpy as np
import pytest
import websockets

from tests.support import (
    Received,
    ServerProcess,
    connect,
    decode_pcm,
    recv_until,
    send,
    stream_tokens,
    transcribe,
    word_recall,
)

HEALTHY_TEXT = (
    "The quick brown fox jumps over the lazy dog. We will meet again tomorrow morning "
    "at the station."
)


@pytest.fixture
async def healthy(server: ServerProcess) -> AsyncIterator[Callable[[], Awaitable[Received]]]:
    """A well-behaved session that runs for the duration of the test."""
    rng = np.random.default_rng(7)

    async def run() -> Received:
        async with await connect(server.ws_url) as ws:
            await send(ws, type="start", output={"encoding": "pcm_s16le", "sample_rate": 16000})
            rec = await recv_until(ws, Received(), stop="ready")
            await stream_tokens(ws, HEALTHY_TEXT, rng, gap=(0.05, 0.1))
            await send(ws, type="end")
            return await recv_until(ws, rec)

    task = asyncio.create_task(run())
    await asyncio.sleep(0.2)

    async def finish() -> Received:
        rec = await task
        assert rec.close_code == 1000
        assert not rec.of("error"), rec.of("error")
        assert rec.of("done")[0]["frames"] == len(rec.frames)
        # every word was synthesized, in order, and nothing else
        assert " ".join(s["text"] for s in rec.of("segment")).split() == HEALTHY_TEXT.split()
        heard = transcribe(decode_pcm(rec.frames), 16000)
        assert word_recall(HEALTHY_TEXT, heard) >= 0.5, heard
        return rec

    yield finish
    if not task.done():
        task.cancel()


async def _error_after(ws: Any, raw: str) -> dict[str, Any]:
    await ws.send(raw)
    rec = await recv_until(ws, Received(), stop="error", timeout=10)
    return rec.of("error")[-1]


NON_FATAL = [
    ('{"type":"text","text":"hi"}', "not_started", "'text' before 'start'"),
    ('{"type":"shout"}', "unknown_type", "unknown message type 'shout'"),
    ('{"type":"start","speed":"fast"}', "invalid_field", "$.speed"),
    ('{"type":"start","speed":9}', "out_of_range", "$.speed"),
    ('{"type":"start","output":{"sample_rate":44100}}', "out_of_range", "44100"),
    ('{"type":"start","output":{"encoding":"opus","frame_ms":25}}', "out_of_range", "25"),
    ('{"type":"start","output":{"encoding":"mp3"}}', "out_of_range", "$.output.encoding"),
    ('{"type":"start","output":{"encoding":"mulaw","bitrate":16000}}', "invalid_field", "bitrate"),
    ('{"type":"start","colour":"red"}', "unknown_field", "colour"),
    ('{"type":"text"}', "missing_field", "text"),
    ('{"text":"no type"}', "invalid_message", "type"),
    ("[1,2,3]", "invalid_message", "array"),
    ("{not json", "invalid_json", "not valid JSON"),
    ('{"type":"start","engine":"nope"}', "unknown_engine", "piper"),
    ('{"type":"start","voice":"nobody"}', "unknown_voice", "en_US-joe-medium"),
    ('{"type":"start","language":"fr"}', "unsupported_language", "'fr'"),
]


@pytest.mark.parametrize(("raw", "code", "needle"), NON_FATAL, ids=[c for _, c, _ in NON_FATAL])
async def test_non_fatal_errors_name_the_fault(
    server: ServerProcess,
    healthy: Callable[[], Awaitable[Received]],
    raw: str,
    code: str,
    needle: str,
) -> None:
    async with await connect(server.ws_url) as ws:
        err = await _error_after(ws, raw)
        assert err["code"] == code, err
        assert needle in err["message"], err
        assert err["fatal"] is False
        # the session is still usable: a correct start works after the error
        await send(ws, type="start", output={"encoding": "pcm_s16le", "sample_rate": 8000})
        rec = await recv_until(ws, Received(), stop="ready", timeout=10)
        assert rec.of("ready")
        await send(ws, type="text", text="Still here.")
        await send(ws, type="end")
        await recv_until(ws, rec)
        assert rec.close_code == 1000 and len(rec.frames) > 10
    await healthy()


async def test_second_start_and_text_after_end_are_refused(server: ServerProcess) -> None:
    async with await connect(server.ws_url) as ws:
        await send(ws, type="start")
        await recv_until(ws, Received(), stop="ready")
        err = await _error_after(ws, '{"type":"start"}')
        assert err["code"] == "already_started" and not err["fatal"]


async def _closed_with(ws: Any) -> Received:
    return await recv_until(ws, Received(), timeout=10)


async def test_binary_message_closes_1003(
    server: ServerProcess, healthy: Callable[[], Awaitable[Received]]
) -> None:
    async with await connect(server.ws_url) as ws:
        await send(ws, type="start")
        await recv_until(ws, Received(), stop="ready")
        await ws.send(b"\x00\x01\x02")
        rec = await _closed_with(ws)
    assert rec.close_code == 1003
    err = rec.of("error")[0]
    assert err["code"] == "binary_not_allowed" and err["fatal"] is True
    await healthy()


async def test_invalid_utf8_closes_1007(
    server: ServerProcess, healthy: Callable[[], Awaitable[Received]]
) -> None:
    async with await connect(server.ws_url) as ws:
        await send(ws, type="start")
        await recv_until(ws, Received(), stop="ready")
        # a text frame whose payload is not UTF-8 (the client library would refuse a str)
        await ws.send(b'{"type":"text","text":"\xff\xfe"}', text=True)
        rec = await _closed_with(ws)
    assert rec.close_code == 1007, (rec.close_code, rec.close_reason)
    await healthy()


async def test_oversized_message_closes_1009(
    server: ServerProcess, healthy: Callable[[], Awaitable[Received]]
) -> None:
    async with await connect(server.ws_url) as ws:
        await send(ws, type="start")
        await recv_until(ws, Received(), stop="ready")
        await send(ws, type="text", text="a" * (64 * 1024 + 10))
        rec = await _closed_with(ws)
    assert rec.close_code == 1009, (rec.close_code, rec.close_reason)
    assert "64" in rec.close_reason or "65536" in rec.close_reason
    await healthy()


# ---------------------------------------------------------------- configurable limits


@pytest.fixture(scope="module")
def strict_server() -> Iterator[ServerProcess]:
    srv = ServerProcess(
        max_buffered_chars=300,
        idle_timeout_s=1.5,
        max_session_s=4,
        start_timeout_s=1.5,
        max_sessions=3,
        max_message_bytes=4096,
    )
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


async def test_buffered_text_limit(strict_server: ServerProcess) -> None:
    async with await connect(strict_server.ws_url) as ws:
        await send(ws, type="start")
        await recv_until(ws, Received(), stop="ready")
        await send(ws, type="text", text="word " * 50)  # 250 characters, accepted
        err = await _error_after(ws, json.dumps({"type": "text", "text": "more " * 20}))
        assert err["code"] == "text_buffer_full" and err["fatal"] is False
        assert "limit is 300" in err["message"]


async def test_message_size_limit_is_configurable(strict_server: ServerProcess) -> None:
    async with await connect(strict_server.ws_url) as ws:
        await send(ws, type="start")
        await recv_until(ws, Received(), stop="ready")
        await send(ws, type="text", text="b" * 5000)
        rec = await _closed_with(ws)
    assert rec.close_code == 1009


async def test_idle_timeout(strict_server: ServerProcess) -> None:
    async with await connect(strict_server.ws_url) as ws:
        await send(ws, type="start")
        rec = await recv_until(ws, Received(), timeout=15)
    err = rec.of("error")[-1]
    assert err["code"] == "idle_timeout" and err["fatal"] is True
    assert rec.close_code == 1008


async def test_start_timeout(strict_server: ServerProcess) -> None:
    async with await connect(strict_server.ws_url) as ws:
        rec = await recv_until(ws, Received(), timeout=15)
    err = rec.of("error")[-1]
    assert err["code"] == "start_timeout" and err["fatal"] is True
    assert rec.close_code == 1008


async def test_session_length_limit(strict_server: ServerProcess) -> None:
    async with await connect(strict_server.ws_url) as ws:
        await send(ws, type="start")
        await recv_until(ws, Received(), stop="ready")

        async def keep_talking() -> None:
            for _ in range(20):
                await send(ws, type="text", text=" ")
                await asyncio.sleep(0.5)

        talker = asyncio.create_task(keep_talking())
        rec = await recv_until(ws, Received(), timeout=15)
        talker.cancel()
    err = rec.of("error")[-1]
    assert err["code"] == "session_too_long" and err["fatal"] is True
    assert rec.close_code == 1008


async def test_session_count_limit(strict_server: ServerProcess) -> None:
    conns = [await connect(strict_server.ws_url) for _ in range(3)]
    try:
        for ws in conns:
            await send(ws, type="start")
            await recv_until(ws, Received(), stop="ready")
        async with await connect(strict_server.ws_url) as extra:
            rec = await recv_until(extra, Received(), timeout=10)
        err = rec.of("error")[-1]
        assert err["code"] == "server_busy" and err["fatal"] is True
        assert rec.close_code == 1013
    finally:
        for ws in conns:
            await ws.close()


async def test_server_survives_garbage_storm(server: ServerProcess) -> None:
    """Many broken clients at once; the server answers a good one afterwards."""

    async def garbage(i: int) -> None:
        try:
            async with await connect(server.ws_url) as ws:
                await ws.send(["{", "[]", '{"type":1}', "null", '"x"'][i % 5])
                await ws.send(b"\xff" * (i + 1))
                await recv_until(ws, Received(), timeout=10)
        except (websockets.ConnectionClosed, OSError):
            pass

    await asyncio.gather(*(garbage(i) for i in range(30)))
    async with await connect(server.ws_url) as ws:
        await send(ws, type="start")
        rec = await recv_until(ws, Received(), stop="ready")
        await send(ws, type="text", text="All good.")
        await send(ws, type="end")
        await recv_until(ws, rec)
    assert rec.close_code == 1000 and rec.frames
