"""Opening one connection: the WebSocket handshake, ``start`` → ``ready``, and which
failures another try (on this node or the next) may cure."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import NoReturn

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection

from server.protocol import Ack, Cancel, End, Error, Flush, Ready, ServerMessage, Start, Text

# Refusals of a new session or a resume that say "not here, not now": try the next node.
RETRY_CODES = frozenset({"server_busy", "not_ready", "state_unavailable", "server_draining"})
# Closes that blame what the client sent: sending it again elsewhere would not help.
CLIENT_FAULT_CLOSES = frozenset({1002, 1003, 1007, 1008, 1009, 1010})

ClientMessage = Start | Text | Flush | Cancel | End | Ack

_decoder = msgspec.json.Decoder(ServerMessage)
_encoder = msgspec.json.Encoder()


class VoxwireError(Exception):
    """The session cannot go on: ``code`` is the server's error code (or the client's
    own: ``unreachable``, ``connection_lost``, ``reconnect_failed``, ``resume_gap``,
    ``session_ending``), or the HTTP refusal's (``invalid_api_key``, ``http_403``)."""

    def __init__(self, code: str, message: str, close_code: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.close_code = close_code  # the WebSocket close code that came with it, if any


class Retry(Exception):
    """This try failed in a way the next one (another node, a moment later) may not."""

    def __init__(self, code: str, message: str, close_code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code


@dataclass(frozen=True, slots=True)
class Dial:
    """How to open a connection."""

    headers: dict[str, str] | None
    open_timeout: float
    ping_interval: float | None


def decode(raw: str | bytes) -> ServerMessage | None:
    """One server event, or None for one this client does not know (a newer server)."""
    try:
        msg: ServerMessage = _decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return msg


async def send(ws: ClientConnection, msg: ClientMessage) -> None:
    await ws.send(_encoder.encode(msg), text=True)  # JSON goes as a text message


async def open_session(
    dial: Dial, url: str, start: Start, timeout: float | None = None
) -> tuple[ClientConnection, Ready]:
    """Connect to ``url``, send ``start`` and wait for ``ready``; raises ``Retry`` or
    ``VoxwireError``."""
    timeout = dial.open_timeout if timeout is None else min(timeout, dial.open_timeout)
    try:
        ws = await websockets.connect(
            url,
            max_size=None,
            open_timeout=timeout,
            ping_interval=dial.ping_interval,
            additional_headers=dial.headers,
            compression=None,  # the server does not deflate: audio does not compress
            close_timeout=2,
        )
    except websockets.InvalidStatus as exc:
        _refused(url, exc)
    except (OSError, TimeoutError, websockets.InvalidURI, websockets.InvalidHandshake) as exc:
        raise Retry("unreachable", f"cannot reach {url}: {exc}") from exc
    try:
        await send(ws, start)
        async with asyncio.timeout(timeout):
            return ws, await _await_ready(ws, url)
    except websockets.ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else 1006
        raise Retry("unreachable", f"{url} closed the connection ({code})", code) from exc
    except TimeoutError as exc:
        await _abandon(ws)
        raise Retry("unreachable", f"{url} sent no 'ready' within {timeout:g} s") from exc
    except BaseException:
        await _abandon(ws)
        raise


class _HttpError(msgspec.Struct):
    code: str | None = None
    message: str = ""


class _HttpErrorBody(msgspec.Struct):
    error: _HttpError


def _refused(url: str, exc: websockets.InvalidStatus) -> NoReturn:
    """An HTTP answer instead of a WebSocket: a client fault (a bad key: 401) is final,
    anything else (503, 429) may pass."""
    status = exc.response.status_code
    try:
        err = msgspec.json.decode(exc.response.body or b"", type=_HttpErrorBody).error
        code, message = err.code or f"http_{status}", err.message
    except (msgspec.ValidationError, msgspec.DecodeError):
        code, message = f"http_{status}", str(exc)
    if 400 <= status < 500 and status != 429:
        raise VoxwireError(code, f"{url} refused the connection ({status}): {message}") from exc
    raise Retry(code, f"{url} refused the connection ({status}): {message}") from exc


async def _await_ready(ws: ClientConnection, url: str) -> Ready:
    while True:
        msg = decode(await ws.recv())
        if isinstance(msg, Ready):
            return msg
        if isinstance(msg, Error):
            # A fatal refusal is followed by the close: take its code along.
            code = await _close_code(ws) if msg.fatal else None
            if msg.code in RETRY_CODES:
                raise Retry(msg.code, f"{url}: {msg.message}", code)
            raise VoxwireError(msg.code, msg.message, code)


async def _close_code(ws: ClientConnection) -> int | None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2):
            await ws.wait_closed()
    return ws.close_code


async def _abandon(ws: ClientConnection) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2):
            await ws.close()
