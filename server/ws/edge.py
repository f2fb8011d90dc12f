"""What every WebSocket edge (the native protocol, the dialects) does the same way:
read one client message within the limits, keep the key's slot and check the key,
measure the audio the client's TCP has not taken, close within a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.exceptions import RedisError
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketState

from server import admission
from server.auth import key_still_valid
from server.conversation.types import CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_UNSUPPORTED
from server.ws_protocol import SEND_FRAMES, UNSENT_BYTES

if TYPE_CHECKING:
    from server.appstate import AppState

WATCHDOG_PERIOD_S = 0.25
_SLOT_REFRESH_S = 20.0  # well inside the limiter's slot_ttl_s
_KEY_CHECK_S = 2.0  # a revoked key's sessions end within this (plus the key ring's cache)


@dataclass(frozen=True, slots=True)
class Refused:
    """A client message that ends the connection: say it, then close with ``close_code``."""

    code: str
    message: str
    close_code: int


REVOKED = Refused(
    "key_revoked", "the API key this session was opened with was revoked", CLOSE_POLICY
)


def text_of(msg: Message, limit: int) -> str | Refused:
    """A received WebSocket message's text, or why it is refused (binary, too large)."""
    text = msg.get("text")
    if text is None:
        return Refused(
            "binary_not_allowed",
            "client messages must be JSON text; binary messages are not accepted",
            CLOSE_UNSUPPORTED,
        )
    if len(text) > limit // 4 and len(text.encode()) > limit:
        # uvicorn enforces the same limit on the wire; this guards other servers.
        return Refused(
            "message_too_large",
            f"message exceeds {limit} bytes (max_message_bytes)",
            CLOSE_TOO_BIG,
        )
    return str(text)


class KeyWatch:
    """Keeps the key's session slot alive and notices when the key is revoked."""

    def __init__(self, state: AppState, key_id: str | None, slot: str) -> None:
        self.state = state
        self.key_id = key_id
        self.slot = slot
        now = time.monotonic()
        self._refresh_at = now + _SLOT_REFRESH_S
        self._check_at = now + _KEY_CHECK_S

    async def revoked(self, now: float) -> bool:
        """Called every watchdog tick; True once the store says the key is gone."""
        kid = self.key_id
        if kid is None:
            return False
        if now >= self._refresh_at:
            self._refresh_at = now + _SLOT_REFRESH_S
            await admission.refresh_slot(self.state, kid, self.slot)
        if now < self._check_at:
            return False
        self._check_at = now + _KEY_CHECK_S
        try:  # None (cannot tell) or an unreachable store: go on
            async with asyncio.timeout(self.state.settings.state_write_timeout_s):
                return await key_still_valid(self.state, kid) is False
        except (RedisError, OSError, TimeoutError):
            return False


def unsent_probe(ws: WebSocket) -> Callable[[], int]:
    """Bytes sent that the client's TCP has not taken (server/ws_protocol.py), or 0."""
    probe = ws.scope.get("extensions", {}).get(UNSENT_BYTES)
    return probe if callable(probe) else (lambda: 0)


def frames_sender(ws: WebSocket) -> Callable[[Sequence[bytes]], Awaitable[None]] | None:
    """The server's call that sends several binary messages in one write
    (server/ws_protocol.py), or None: send them one by one."""
    send = ws.scope.get("extensions", {}).get(SEND_FRAMES)
    return send if callable(send) else None


def unsent_audio_s(unsent_bytes: int, bytes_sent: int, audio_s: float) -> float:
    """The unsent bytes as seconds of audio, at the rate this connection sent it."""
    if not bytes_sent or audio_s <= 0:
        return 0.0
    return min(unsent_bytes / (bytes_sent / audio_s), audio_s)


async def close(ws: WebSocket, code: int, reason: str, timeout: float) -> None:
    """Close, giving a stalled client ``timeout`` to take the close frame."""
    if ws.application_state == WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                await ws.close(code, reason)
