"""Finding a node: the first connection (each URL once, in order) and, after a drop,
the resume (the next URLs in turn, with a short backoff, until a time limit)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from websockets.asyncio.client import ClientConnection

from server.protocol import Ready, ResumeRequest, Start
from voxwire._wire import Dial, Retry, VoxwireError, open_session

_FIRST_BACKOFF_S = 0.05
_MAX_BACKOFF_S = 1.0


async def first_connection(
    urls: Sequence[str], dial: Dial, start: Start
) -> tuple[int, ClientConnection, Ready]:
    """Each URL once, in order: fail fast on a wrong address. (index, ws, ready)."""
    last: Retry | None = None
    for i, url in enumerate(urls):
        try:
            ws, ready = await open_session(dial, url, start)
        except Retry as exc:
            last = exc
            continue
        return i, ws, ready
    assert last is not None
    raise VoxwireError(last.code, last.message, last.close_code) from last.__cause__


async def resume_connection(
    urls: Sequence[str],
    after: int,
    dial: Dial,
    ready: Ready,
    frames: int,
    limit_s: float,
) -> tuple[int, ClientConnection, Ready]:
    """Resume the session of ``ready`` from frame ``frames`` on the URLs after index
    ``after``, round robin (a node that just failed is tried last); raises
    ``VoxwireError`` when the server refuses for good or ``limit_s`` runs out."""
    token = ready.resume_token
    assert token is not None
    start = Start(resume=ResumeRequest(session_id=ready.session_id, token=token, from_frame=frames))
    deadline = time.monotonic() + limit_s
    delay = 0.0
    i = after
    while True:
        i = (i + 1) % len(urls)
        try:
            ws, new = await open_session(
                dial, urls[i], start, max(1.0, deadline - time.monotonic())
            )
        except Retry as exc:
            delay = min(max(_FIRST_BACKOFF_S, delay * 2), _MAX_BACKOFF_S)
            if time.monotonic() + delay >= deadline:
                raise VoxwireError(
                    "reconnect_failed",
                    f"no connection within max_reconnect_s={limit_s:g}: {exc.message}",
                ) from exc
            await asyncio.sleep(delay)
            continue
        return i, ws, new
