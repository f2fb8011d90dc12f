"""Admission: whether this node takes a stream now, and the per-key limits.

One place for the rules every entry point applies (the access middleware for
requests, the WebSocket protocols and the HTTP speech route for streams):
node readiness, draining, the state store, ``max_sessions``, and per API key
the request rate, the characters per minute and the concurrent-session slots
(server/limits.py counts them, in Redis when there is one). A refusal names what
was wrong and says how each protocol reports it: an HTTP status, a WebSocket
close code, and when to retry.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from server.conversation.types import CLOSE_POLICY, CLOSE_TRY_AGAIN, DRAIN_MESSAGE
from server.limits import LimitExceeded

if TYPE_CHECKING:
    from server.appstate import AppState

STATE_MESSAGE = "the shared state store (Redis) is not reachable; retry shortly"


@dataclass(frozen=True, slots=True)
class Refusal:
    code: str
    message: str
    http_status: int
    ws_close: int
    retry_after_s: int | None = None
    limit: str | None = None  # which per-key limit, for a 429's error code

    @staticmethod
    def over(over: LimitExceeded) -> Refusal:
        return Refusal(
            "limit_exceeded", over.message(), 429, CLOSE_POLICY, over.retry_after_s, over.limit
        )


UNAVAILABLE = Refusal("state_unavailable", STATE_MESSAGE, 503, CLOSE_TRY_AGAIN)


def node_refusal(state: AppState, stream: bool = True) -> Refusal | None:
    """Whether this node takes a new stream (``stream``: a WebSocket session, which also
    counts against ``max_sessions`` and is refused while draining)."""
    if not state.ready:
        message = "engines are still loading; retry shortly"
        return Refusal("not_ready", message, 503, CLOSE_TRY_AGAIN)
    if not stream:
        return None
    if state.draining:
        return Refusal("server_draining", DRAIN_MESSAGE, 503, CLOSE_TRY_AGAIN)
    if state.redis is not None and not state.store_ok:
        return UNAVAILABLE
    limit = state.settings.max_sessions
    if len(state.sessions) >= limit:
        return Refusal(
            "server_busy",
            f"server is at its session limit ({limit}); retry later",
            503,
            CLOSE_TRY_AGAIN,
        )
    return None


async def request_rate(state: AppState, key_id: str) -> Refusal | None:
    """One request of ``key_id`` (requests per minute)."""
    try:
        over = await state.limits.request(key_id)
    except (RedisError, OSError):
        return UNAVAILABLE
    return None if over is None else Refusal.over(over)


async def take_slot(
    state: AppState, key_id: str, slot: str, chars: int = 0, count_request: bool = False
) -> Refusal | None:
    """A stream of ``key_id`` starts: its request (``count_request``: the middleware does
    not count WebSocket upgrades), the text it brings, then a concurrent-session slot."""
    limits = state.limits
    try:
        over = None
        if count_request:
            over = await limits.request(key_id)
        if over is None and chars:
            over = await limits.chars(key_id, chars)
        if over is None:
            over = await limits.acquire(key_id, slot)
    except (RedisError, OSError):
        return UNAVAILABLE
    return None if over is None else Refusal.over(over)


async def charge_chars(state: AppState, key_id: str, n: int) -> Refusal | None:
    """Text sent in a running stream; a stream in progress keeps going while the store
    is away (only an answer of "over" refuses)."""
    try:
        over = await state.limits.chars(key_id, n)
    except (RedisError, OSError):
        return None
    return None if over is None else Refusal.over(over)


async def refresh_slot(state: AppState, key_id: str, slot: str) -> None:
    with contextlib.suppress(RedisError, OSError):
        await state.limits.refresh(key_id, slot)


async def release_slot(state: AppState, key_id: str, slot: str) -> None:
    with contextlib.suppress(RedisError, OSError):
        await state.limits.release(key_id, slot)
