"""cancel_all: a task that swallows its cancellation is cancelled again until it ends."""

from __future__ import annotations

import asyncio

from server.tasks import cancel_all


async def test_a_task_that_swallows_a_cancel_still_ends() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # what wait_for does on 3.11 when the reply races the cancel

    t = asyncio.create_task(stubborn())
    plain = asyncio.create_task(asyncio.sleep(10))
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await cancel_all([t, plain])
    assert t.done() and plain.cancelled()
    assert swallowed == 1
