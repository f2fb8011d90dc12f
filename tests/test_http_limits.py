"""The HTTP edge on a real server, over raw sockets: request bodies bounded while they
stream in (413), a client gone mid-body logged without a traceback, and a deadline on
reading a request's head (slowloris) that leaves bodies and WebSockets alone."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import Received, ServerProcess, connect, recv_until, send

HEADER_TIMEOUT_S = 1.0
VOICE_MAX_BYTES = 256 * 1024
BIG = 200 * 1024 * 1024  # the size of the bodies that took a node from 1.15 to 2.76 GB
SPEECH = {"model": "tts-1", "voice": "alloy", "input": "Hi.", "response_format": "pcm"}


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProcess]:
    s = ServerProcess(header_timeout_s=HEADER_TIMEOUT_S, voice_max_bytes=VOICE_MAX_BYTES)
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


def _open(srv: ServerProcess, timeout: float = 15.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)
    return s


def _head(method: str, path: str, srv: ServerProcess, *extra: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{srv.port}", *extra, "", ""]
    return "\r\n".join(lines).encode()


def _read_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length body: (status, headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response head: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(status_line.split()[1]), headers, rest[:length]


def _closed_by_server(s: socket.socket) -> bool:
    """True once the server has closed the connection (EOF or reset)."""
    try:
        return s.recv(65536) == b""
    except ConnectionResetError:
        return True


def _stream_until_answered(s: socket.socket, total: int, piece: int = 1 << 20) -> int:
    """Send ``total`` bytes of chunked body, stopping as soon as the server answers
    (or closes): the bytes sent."""
    sent = 0
    chunk = f"{piece:x}\r\n".encode() + b"x" * piece + b"\r\n"
    while sent < total:
        readable, _, _ = select.select([s], [], [], 0)
        if readable:
            break
        try:
            s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += piece
    return sent


def _error(body: bytes) -> dict[str, Any]:
    err: dict[str, Any] = json.loads(body)["error"]
    return err


# ------------------------------------------------------------------ body limits


def test_declared_oversized_body_is_refused_before_it_is_read(srv: ServerProcess) -> None:
    with _open(srv) as s:
        # headers only: the 200 MB are never sent, so only a refusal made from the
        # declared length can come back
        s.sendall(
            _head(
                "POST",
                "/v1/audio/speech",
                srv,
                "Content-Type: application/json",
                f"Content-Length: {BIG}",
            )
        )
        status, headers, body = _read_response(s)
        assert status == 413
        err = _error(body)
        assert err["code"] == "body_too_large" and err["type"] == "invalid_request_error"
        assert "65536 bytes" in err["message"] and "max_body_bytes" in err["message"]
        assert str(BIG) in err["message"]
        assert headers["connection"] == "close" and _closed_by_server(s)


def test_chunked_body_is_cut_as_it_streams_in_and_memory_stays_flat(srv: ServerProcess) -> None:
    rss_before = srv.rss_bytes()
    with _open(srv) as s:
        s.sendall(
            _head(
                "POST",
                "/v1/audio/speech",
                srv,
                "Content-Type: application/json",
                "Transfer-Encoding: chunked",
            )
        )
        sent = _stream_until_answered(s, BIG)
        status, headers, body = _read_response(s)
        assert status == 413, body
        err = _error(body)
        assert err["code"] == "body_too_large" and "65536 bytes" in err["message"]
        assert "max_body_bytes" in err["message"]
        assert headers["connection"] == "close" and _closed_by_server(s)
    assert sent < BIG  # the server answered long before the end of the body
    grown = srv.rss_bytes() - rss_before
    assert grown < 40 * 1024 * 1024, f"RSS grew by {grown / 1048576:.0f} MiB"
    (event,) = srv.log_events("body_too_large")[-1:]
    assert event["path"] == "/v1/audio/speech" and event["declared"] is False
    # cut as soon as the count passed the limit: what uvicorn had buffered, no more
    assert 65536 < event["size"] < 1024 * 1024


def test_every_route_with_a_body_is_bounded(srv: ServerProcess) -> None:
    big = b"x" * (100 * 1024)
    r = httpx.post(srv.http + "/v1/tokens", content=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked
        yield b"text="
        for _ in range(64):
            yield b"y" * 16384

    r = httpx.post(
        srv.http + "/v1/voices/en_US-joe-medium/preview",
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 413 and "max_body_bytes" in r.json()["error"]["message"]
    r = httpx.post(
        srv.http + "/v1/voices/en_US-joe-medium/preview",
        content=b"text=" + big,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    # under the limit, the routes work as before
    r = httpx.post(srv.http + "/v1/audio/speech", json=SPEECH, timeout=60)
    assert r.status_code == 200 and len(r.content) > 1000


def test_voice_upload_limit_holds_while_the_body_streams_in(srv: ServerProcess) -> None:
    rss_before = srv.rss_bytes()
    with _open(srv) as s:
        s.sendall(
            _head(
                "POST",
                "/v1/voices",
                srv,
                "Content-Type: multipart/form-data; boundary=b0undary",
                "Transfer-Encoding: chunked",
            )
        )
        sent = _stream_until_answered(s, BIG)
        status, headers, body = _read_response(s)
        assert status == 413, body
        err = _error(body)
        assert err["code"] == "audio_too_large" and str(VOICE_MAX_BYTES) in err["message"]
        # the rest of the upload is not read and thrown away: the connection is closed
        assert headers["connection"] == "close" and _closed_by_server(s)
    assert sent < BIG
    assert srv.rss_bytes() - rss_before < 40 * 1024 * 1024


def test_a_client_gone_mid_body_leaves_no_traceback(srv: ServerProcess) -> None:
    for path in ("/v1/audio/speech", "/v1/voices/en_US-joe-medium/preview"):
        with _open(srv) as s:
            s.sendall(
                _head("POST", path, srv, "Content-Type: application/json", "Content-Length: 5000")
                + b'{"model": "tts-1", "inp'
            )
            time.sleep(0.2)
        deadline = time.monotonic() + 10
        while not [e for e in srv.log_events("client_disconnected") if e["path"] == path]:
            assert time.monotonic() < deadline, srv.logs()[-3000:]
            time.sleep(0.05)
    logs = srv.logs()
    assert "Traceback" not in logs and "Exception in ASGI application" not in logs
    assert '"level": "error"' not in logs and "ERROR" not in logs


# ------------------------------------------------------------------ request head deadline


def test_a_stalled_request_head_is_closed_after_the_deadline(srv: ServerProcess) -> None:
    with _open(srv) as s:
        t0 = time.monotonic()
        s.sendall(b"GET /health HT")  # half a request line, then nothing
        status, _, body = _read_response(s)
        waited = time.monotonic() - t0
        assert status == 408 and b"header_timeout_s" in body
        assert _closed_by_server(s)
    assert waited >= HEADER_TIMEOUT_S * 0.9
    with _open(srv) as s:  # a connection that sends nothing at all
        assert _closed_by_server(s)


def test_a_keep_alive_connection_that_stalls_in_its_next_head_is_closed(
    srv: ServerProcess,
) -> None:
    with _open(srv) as s:
        s.sendall(_head("GET", "/health", srv))
        assert _read_response(s)[0] == 200
        # uvicorn's keep-alive timer stops at the first byte of the next request
        s.sendall(b"GET /heal")
        status, _, _ = _read_response(s)
        assert status == 408 and _closed_by_server(s)


def test_slow_but_complete_requests_and_long_websockets_are_not_cut(srv: ServerProcess) -> None:
    with _open(srv) as s:  # a head that takes most of the deadline
        for piece in (b"GET /health HTTP/1.1\r\n", f"Host: 127.0.0.1:{srv.port}\r\n".encode()):
            s.sendall(piece)
            time.sleep(HEADER_TIMEOUT_S * 0.3)
        s.sendall(b"\r\n")
        assert _read_response(s)[0] == 200
    body = json.dumps(SPEECH).encode()
    with _open(srv) as s:  # a body that takes longer than the deadline: not timed here
        s.sendall(
            _head(
                "POST",
                "/v1/audio/speech",
                srv,
                "Content-Type: application/json",
                f"Content-Length: {len(body)}",
            )
        )
        for i in range(0, len(body), len(body) // 5 + 1):
            s.sendall(body[i : i + len(body) // 5 + 1])
            time.sleep(HEADER_TIMEOUT_S * 0.5)
        first = s.recv(64)
        assert first.startswith(b"HTTP/1.1 200 "), first

    async def long_session() -> Received:
        async with await connect(srv.ws_url) as ws:
            await send(ws, type="start", output={"encoding": "pcm_s16le", "sample_rate": 8000})
            rec = await recv_until(ws, Received(), stop="ready")
            await asyncio.sleep(HEADER_TIMEOUT_S * 2.5)
            await send(ws, type="text", text="Still here.")
            await send(ws, type="end")
            return await recv_until(ws, rec)

    rec = asyncio.run(long_session())
    assert rec.close_code == 1000 and rec.of("done") and rec.frames
