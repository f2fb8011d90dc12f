"""What the conversation core drives, as narrow protocols: a worker, and a sink.

Both are in-memory calls on the event loop; the core never waits on them. The
worker schedules jobs on its engine threads; the sink sits between the worker's
output and the outbox, so that resume journaling (server/journal_sink.py) can hold
frames until they are durable. Without resume the sink is ``NullSink``: output
goes straight to the outbox and the core has no special case for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from server.engines.base import Engine
from server.engines.jobs import Job, Output

Release = Callable[[int, list[Output]], None]


class Worker(Protocol):
    """An engine worker (server/engines/worker.py, server/engines/f5/batch_worker.py)."""

    @property
    def engine(self) -> Engine: ...

    # True: it can hand a chunk's engine audio over whole before its frames (ChunkPcm)
    chunk_pcm: bool

    def submit(self, job: Job) -> None: ...

    def cancel(self, session_id: str) -> int: ...

    def take(self, session_id: str) -> list[Job]: ...

    def wake(self) -> None: ...

    def saturated(self) -> bool:
        """Whether a new first chunk would wait: work in hand fills every thread."""
        ...


class Sink(Protocol):
    """Where the conversation's text, marks, acks and engine output are recorded."""

    @property
    def journaling(self) -> bool:
        """True while output is being journaled (frames wait to be durable)."""
        ...

    @property
    def resumable(self) -> bool:
        """True while a client could resume this conversation elsewhere."""
        ...

    def text(self, text: str) -> None: ...

    def mark(self, offset: int, kind: str) -> None: ...

    def ack(self, frame: int) -> None: ...

    def cancel(self, sent: int, chars: int, marks: int) -> None: ...

    def deliver(self, generation: int, items: list[Output], release: Release) -> None:
        """Record ``items``; call ``release`` with them once their frames may be sent."""
        ...

    def drop(self) -> None:
        """Barge-in or close: output held and not yet recorded is forgotten."""
        ...


class NullSink:
    """No resume: nothing is recorded, and output is released at once."""

    journaling = False
    resumable = False

    def text(self, text: str) -> None:
        pass

    def mark(self, offset: int, kind: str) -> None:
        pass

    def ack(self, frame: int) -> None:
        pass

    def cancel(self, sent: int, chars: int, marks: int) -> None:
        pass

    def deliver(self, generation: int, items: list[Output], release: Release) -> None:
        release(generation, items)

    def drop(self) -> None:
        pass
