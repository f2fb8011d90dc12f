"""Output handed from threads to the loop: everything arrives, in order, and a burst
of slices wakes the loop once."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from server.engines.handoff import Handoff


async def test_slices_from_threads_arrive_in_order_with_few_wake_ups() -> None:
    loop = asyncio.get_running_loop()
    h = Handoff(loop)
    got: dict[str, list[Any]] = {"a": [], "b": []}
    woke = 0

    def producer(name: str) -> None:
        nonlocal woke

        def deliver(generation: int, items: list[Any]) -> None:
            got[name].extend(items)

        for i in range(500):
            woke += h.put(deliver, 0, [i])

    threads = [threading.Thread(target=producer, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()  # the loop is not running meanwhile: everything queues
    await asyncio.sleep(0)
    assert got == {"a": list(range(500)), "b": list(range(500))}
    assert woke == 1  # one wake-up for the thousand slices
    assert h.put(lambda gen, items: got["a"].extend(items), 0, ["next"])  # empty again: wakes
    await asyncio.sleep(0)
    assert got["a"][-1] == "next"
