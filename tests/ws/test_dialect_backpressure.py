"""A dialect client that stops reading is bounded and closed like a native one, and
the node's log says why (session_start / session_end with the protocol)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from tests.dialects.wire import Got, collect, send
from tests.support import ServerProcess, connect, logged

VOICE = "en_US-joe-medium"
SENTENCE = "Every sentence here adds a few more seconds of speech to the stream. "


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProcess]:
    s = ServerProcess(max_unsent_audio_s=1.0, slow_consumer_timeout_s=2.0, chunk_max_chars=100)
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


def _small_socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel absorbs little
    sock.connect(("127.0.0.1", port))
    return sock


async def test_a_deepgram_client_that_stops_reading_is_closed(srv: ServerProcess) -> None:
    url = f"ws://127.0.0.1:{srv.port}/v1/speak?model={VOICE}&encoding=linear16&sample_rate=48000"
    ws = await connect(url, sock=_small_socket(srv.port), max_queue=1)
    await send(ws, type="Speak", text=SENTENCE * 30)  # minutes of speech
    await send(ws, type="Flush")
    await asyncio.sleep(6.0)  # reads nothing
    got = await collect(ws, Got(), timeout=60)
    ends = await logged(srv, "session_end", lambda e: e.get("protocol") == "deepgram")
    assert ends and ends[-1]["close_reason"] == "slow_consumer", ends[-1:]
    # bounded: far less than the text's minutes of audio were made and sent
    assert ends[-1]["audio_s"] < 30, ends[-1]
    assert got.close_code is not None and not any(m.get("type") == "Flushed" for m in got.msgs)
    starts = [e for e in srv.log_events("session_start") if e.get("protocol") == "deepgram"]
    assert starts
