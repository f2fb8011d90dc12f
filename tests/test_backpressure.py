"""A client that stops reading: the server's unsent audio for it stays bounded, it
stops taking engine work, and it is closed with ``slow_consumer``; others go on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import websockets

from tests.support import (
    Received,
    ServerProcess,
    connect,
    decode_pcm,
    logged,
    recv_until,
    send,
    transcribe,
    word_recall,
)

SENTENCE = "Every sentence here adds a few more seconds of speech to the stream. "
MAX_UNSENT_S = 1.0
# words the offline recognizer gets reliably, so the check is about the audio
POLITE = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def bp_server() -> Iterator[ServerProcess]:
    # Chunks of at most 100 characters (~7 s of speech): the bound on unsent audio is
    # max_unsent_audio_s plus the chunk in production when the bound was crossed.
    srv = ServerProcess(
        max_unsent_audio_s=MAX_UNSENT_S,
        slow_consumer_timeout_s=2.0,
        max_buffered_chars=50000,
        chunk_max_chars=100,
    )
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def _small_socket(port: int) -> socket.socket:
    sock = socket.socket()
    # A small receive window so the kernel cannot absorb minutes of audio for us.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


async def test_slow_consumer_is_bounded_and_closed(bp_server: ServerProcess) -> None:
    text = SENTENCE * 40  # about three minutes of speech

    async def healthy() -> Received:
        async with await connect(bp_server.ws_url) as ws:
            await send(ws, type="start", output={"encoding": "pcm_s16le", "sample_rate": 16000})
            rec = await recv_until(ws, Received(), stop="ready")
            await send(ws, type="text", text=POLITE)
            await send(ws, type="end")
            return await recv_until(ws, rec)

    # websockets stops reading the socket once max_queue messages wait unread.
    ws = await connect(bp_server.ws_url, sock=_small_socket(bp_server.port), max_queue=1)
    await send(ws, type="start", output={"encoding": "pcm_s16le", "sample_rate": 48000})
    await send(ws, type="text", text=text)
    await asyncio.sleep(1.0)
    other = await healthy()  # runs while the slow client is stuck
    rss_stuck = bp_server.rss_bytes()
    await asyncio.sleep(4.0)  # well past slow_consumer_timeout_s, within close_grace_s
    rss_later = bp_server.rss_bytes()
    rec = await recv_until(ws, Received(), timeout=30)  # now drain whatever was kept

    assert (rec.close_code, rec.close_reason) == (1008, "slow_consumer")
    # The error event is sent if the client drains within the grace period; this
    # one did (it reads again after 4 s), so it has the reason in words.
    err = rec.of("error")[-1]
    assert err["code"] == "slow_consumer" and err["fatal"] is True, rec.events[-3:]
    assert "max_unsent_audio_s=1" in err["message"]
    received_s = len(rec.frames) * 0.02
    # The text is ~180 s of speech; what reached the client (everything the server
    # queued plus socket buffers) is a few seconds.
    assert received_s < 15, received_s
    end = await logged(bp_server, "session_end", lambda e: e["close_reason"] == "slow_consumer")
    assert end, bp_server.logs()[-2000:]
    # Unsent audio never exceeded the bound by more than one engine chunk.
    assert end[-1]["peak_unsent_audio_s"] <= MAX_UNSENT_S + 8, end[-1]
    # and the server's memory did not grow with the text it was not allowed to speak
    assert rss_later - rss_stuck < 8 * 1024 * 1024, (rss_stuck, rss_later)

    assert other.close_code == 1000 and not other.of("error")
    heard = transcribe(decode_pcm(other.frames), 16000)
    assert word_recall(POLITE, heard) >= 0.5, heard


async def _read_paced(ws: Any, frame_gap_s: float) -> Received:
    """Everything until the close, sleeping ``frame_gap_s`` after each frame."""
    rec = Received()
    with contextlib.suppress(websockets.ConnectionClosed):
        async with asyncio.timeout(60):
            while True:
                msg = await ws.recv()
                if isinstance(msg, bytes):
                    rec.frames.append(msg)
                    await asyncio.sleep(frame_gap_s)
                else:
                    rec.events.append(json.loads(msg))
    return rec


@pytest.fixture(scope="module")
def rate_server() -> Iterator[ServerProcess]:
    # The default max_unsent_audio_s (4 s): the last of an utterance fits under it, so
    # only the take-rate rule can see a client that stopped reading.
    srv = ServerProcess(slow_consumer_timeout_s=2.0)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


async def test_a_client_that_stops_reading_at_the_end_gets_slow_consumer(
    rate_server: ServerProcess,
) -> None:
    """All the text is synthesized; what the socket buffers cannot take waits in the
    outbox below max_unsent_audio_s, the sender stuck in one send. Before, nothing
    fired until the WebSocket ping timeout (1011, ~40 s)."""
    ws = await connect(rate_server.ws_url, sock=_small_socket(rate_server.port), max_queue=1)
    await send(ws, type="start", output={"encoding": "pcm_s16le", "sample_rate": 48000})
    await send(ws, type="text", text=POLITE + " " + SENTENCE)
    await send(ws, type="end")
    await asyncio.sleep(6.0)  # reads nothing: 2 s to notice, within close_grace_s (5 s)
    rec = await recv_until(ws, Received(), timeout=30)
    assert (rec.close_code, rec.close_reason) == (1008, "slow_consumer"), rec.events[-3:]
    err = rec.of("error")[-1]
    assert err["code"] == "slow_consumer" and err["fatal"] is True
    assert "not taken by the client" in err["message"], err["message"]
    assert not rec.of("done")


async def test_a_client_reading_at_a_fifth_of_real_time_gets_slow_consumer(
    rate_server: ServerProcess,
) -> None:
    ws = await connect(rate_server.ws_url, sock=_small_socket(rate_server.port), max_queue=1)
    await send(ws, type="start")  # Opus
    await send(ws, type="text", text=SENTENCE * 8)
    await send(ws, type="end")
    rec = await _read_paced(ws, 0.1)  # a 20 ms frame every 100 ms
    # Closed before the end of the utterance. This reader is too slow to reach the error
    # event and close frame behind the audio in the socket buffers within close_grace_s,
    # so the server's log tells why.
    assert ws.close_code is not None and not rec.of("done")
    ends = await logged(rate_server, "session_end", lambda e: e["frames_sent"] > 0)
    assert ends and ends[-1]["close_reason"] == "slow_consumer", ends[-1:]
    errs = await logged(rate_server, "client_error", lambda e: e["code"] == "slow_consumer")
    assert "slow_consumer_min_rate=0.5" in errs[-1]["message"], errs[-1:]


async def test_a_client_reading_at_real_time_is_not_a_slow_consumer(
    rate_server: ServerProcess,
) -> None:
    ws = await connect(rate_server.ws_url, max_queue=1)
    await send(ws, type="start")
    await send(ws, type="text", text=SENTENCE * 2)  # ~10 s of speech, made faster
    await send(ws, type="end")
    rec = await _read_paced(ws, 0.015)  # a little faster than it plays
    assert ws.close_code == 1000 and rec.of("done"), rec.events[-3:]
    assert not rec.of("error")
