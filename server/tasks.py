"""Ending a group of asyncio tasks so that a cancellation cannot be lost."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

# How often a task that ignored its cancellation is cancelled again.
_RETRY_S = 0.1


async def cancel_all(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until every one has ended.

    A task can swallow a cancellation (on Python 3.11, ``asyncio.wait_for`` returns
    the result when the awaited call completes in the same loop turn as the cancel),
    so a single ``cancel()`` followed by ``gather`` may wait forever: the session then
    outlives its connection. Tasks still running are cancelled again until they end.
    """
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=_RETRY_S)
