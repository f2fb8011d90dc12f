"""What the engine supervisors share (server/engines/process.py for Piper's pool,
server/engines/f5/remote.py for F5's generation host): starting a child on a pipe,
the child's bookkeeping, and how its death is put in words."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from typing import Any


def spawn(
    ctx: SpawnContext, target: Callable[..., None], args: tuple[Any, ...], name: str
) -> tuple[BaseProcess, Connection]:
    """Start ``target(child_end, *args)``; returns the process and this side's end of the
    pipe. Raises OSError when no process can be started."""
    parent, child = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=target, args=(child, *args), name=name, daemon=True)
    try:
        proc.start()
    except OSError:
        parent.close()
        child.close()
        raise
    child.close()  # the child's end lives in the child now: EOF here when it dies
    return proc, parent


class Child:
    """A child process and its pipe, as its supervisor tracks it."""

    def __init__(self, proc: BaseProcess, conn: Connection) -> None:
        self.proc = proc
        self.conn = conn
        self.pid = proc.pid or 0
        self.born = time.monotonic()
        self.ready = False
        self.dead = False
        self.kill_reason = ""  # set before the supervisor kills it

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()


def exit_text(code: int | None) -> str:
    """A process's exit code in words: ``SIGSEGV``, ``exit status 1``."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"
