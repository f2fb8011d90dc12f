"""Whitespace and other text that is never spoken still costs journal space: every
character a session sends counts toward `max_session_chars` (issue 11: 3,000 messages
of 20,000 spaces grew Redis by 67 MB, and a resume then loaded 60 million characters)."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from tests.support import Received, RedisProcess, ServerProcess, connect, recv_until, send

LIMIT = 50_000
SPACES = " " * 20_000


async def test_whitespace_counts_toward_the_session_text_limit() -> None:
    redis = RedisProcess()
    srv = ServerProcess(redis_url=redis.url, max_session_chars=LIMIT)
    try:
        srv.wait_ready()
        ws = await connect(srv.ws_url)
        await send(ws, type="start")
        rec = await recv_until(ws, Received(), stop="ready")
        ready = rec.of("ready")[0]
        await send(ws, type="text", text="Hello there.")
        await send(ws, type="flush")
        rec = await recv_until(ws, rec, stop="flushed", timeout=30)
        for _ in range(10):  # nothing to speak: the text buffer stays empty
            await send(ws, type="text", text=SPACES)
        await send(ws, type="flush")
        rec = await recv_until(ws, rec, stop="flushed", timeout=30)
        refused = [e for e in rec.of("error") if e["code"] == "session_text_limit"]
        # 12 + 2 × 20,000 fit; each later message is refused, and the session goes on
        assert len(refused) == 8 and not refused[0]["fatal"], rec.events
        assert f"may send {LIMIT} in all (max_session_chars)" in refused[0]["message"]
        assert rec.frames  # "Hello there." was spoken
        await asyncio.sleep(0.5)  # the journal's writes land
        async with Redis.from_url(redis.url) as r:
            keys = [k async for k in r.scan_iter(match=f"*{ready['session_id']}*:text")]
            assert len(keys) == 1
            stored = await r.strlen(keys[0])
        assert stored == 12 + 2 * len(SPACES) <= LIMIT
        ws.transport.abort()
        ws2 = await connect(srv.ws_url)
        token = {"session_id": ready["session_id"], "token": ready["resume_token"]}
        await send(ws2, type="start", resume=token)
        again = await recv_until(ws2, Received(), stop="ready", timeout=20)
        assert again.of("ready")[0]["chars_accepted"] == stored
        await send(ws2, type="text", text=SPACES)  # the limit spans resumes
        again = await recv_until(ws2, again, stop="error", timeout=20)
        assert again.of("error")[-1]["code"] == "session_text_limit"
        await ws2.close()
    finally:
        srv.stop()
        redis.stop()
