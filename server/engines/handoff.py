"""Engine output handed to the event loop in batches.

Each slice of audio an engine thread finishes must reach its session on the event
loop. ``loop.call_soon_threadsafe`` per slice writes a byte to the loop's self-pipe
and the loop reads it back: at capacity that was an eighth of the engine thread's
CPU (BENCHMARKS.md, "Where the CPU goes"). Here the slices queue under a lock, and
only the first one queued since the loop last emptied the queue wakes it; the loop
then delivers all of them, in the order they came.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

Deliver = Callable[[int, list[Any]], None]


class Handoff:
    __slots__ = ("_items", "_lock", "_loop", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._items: list[tuple[Deliver, int, list[Any]]] = []
        self._scheduled = False  # a drain is on the loop's way

    def put(self, deliver: Deliver, generation: int, items: list[Any]) -> bool:
        """From any thread: ``deliver(generation, items)`` soon, on the loop. True when
        this call woke the loop (the caller may then yield its CPU to it)."""
        with self._lock:
            self._items.append((deliver, generation, items))
            if self._scheduled:
                return False
            self._scheduled = True
        self._loop.call_soon_threadsafe(self._drain)
        return True

    def _drain(self) -> None:
        with self._lock:
            batch, self._items = self._items, []
            self._scheduled = False
        for deliver, generation, items in batch:
            deliver(generation, items)
