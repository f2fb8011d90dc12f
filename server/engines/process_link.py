"""One engine process's link, as the supervisor in server/engines/process.py uses it:
the process and its pipe, the request it is working on, and a request started ahead
of its reader (``Started``)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from server.engines import ipc
from server.engines.base import Audio, EngineError, Timed
from server.engines.child import Child


@dataclass(slots=True)
class Ended:
    """The request's end as its consumer sees it: ``error`` None means finished."""

    error: EngineError | None = None


@dataclass(slots=True)
class Request:
    id: int
    text: str
    voice: str
    deadline_s: float
    key: str
    started: float = field(default_factory=time.monotonic)
    out: queue.SimpleQueue[Audio | Timed | Ended] = field(default_factory=queue.SimpleQueue)
    over: bool = False  # its end (finished, failed, died) has been put in ``out``


class Proc(Child):
    """One engine process, its pipe, and the thread that reads the pipe."""

    def __init__(self, proc: BaseProcess, conn: Connection) -> None:
        super().__init__(proc, conn)
        self.current: Request | None = None
        self.slot = -1  # its slot in the engine's shared widths (server/engines/widths.py)
        self.send_lock = threading.Lock()
        self.resident_voices = 0  # as its last Finished said

    def send(self, msg: ipc.ToEngine) -> bool:
        try:
            with self.send_lock:
                self.conn.send_bytes(ipc.encode(msg))
            return True
        except (OSError, ValueError):
            return False


class Started:
    """A request already sent to a process, read later: its pieces, and ``close``
    that cancels it even before the first is read (closing a generator that never
    started runs none of its code, so its own cancel would not be sent)."""

    __slots__ = ("_p", "_pieces", "_read", "_req")

    def __init__(self, p: Proc, req: Request, pieces: Generator[Any, None, None]) -> None:
        self._p = p
        self._req = req
        self._pieces = pieces
        self._read = False

    def __iter__(self) -> Started:
        return self

    def __next__(self) -> Audio | Timed:
        self._read = True
        item: Audio | Timed = next(self._pieces)
        return item

    def close(self) -> None:
        if not self._read and not self._req.over:
            self._p.send(ipc.Cancel(self._req.id))
        self._pieces.close()
