"""Graceful shutdown: on SIGTERM a node drains instead of dropping its sessions.

Readiness (``/health``) turns 503 at once so the load balancer stops sending new
sessions; new WebSockets get ``server_draining`` and close 1013 (try again
elsewhere); idle sessions are closed with 1012 (service restart) right away;
sessions in the middle of an utterance finish it (up to ``drain_grace_s``), then
close with 1012. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog
import uvicorn

if TYPE_CHECKING:
    from types import FrameType

    from server.appstate import AppState

log = structlog.get_logger("voxwire.drain")


async def drain(state: AppState, grace_s: float) -> None:
    state.draining = True
    log.info("drain_start", sessions=len(state.sessions), grace_s=grace_s)
    for session in list(state.sessions):
        session.begin_drain()
    waits = [asyncio.create_task(s.closed.wait()) for s in state.sessions]
    if waits:
        _, pending = await asyncio.wait(waits, timeout=grace_s)
        for t in pending:
            t.cancel()
    left = list(state.sessions)
    await asyncio.gather(*(s.drain_now() for s in left), return_exceptions=True)
    log.info("drain_done", closed_at_deadline=len(left))


class DrainingServer(uvicorn.Server):
    """uvicorn's server, with a drain before its own shutdown on the first signal."""

    def __init__(self, config: uvicorn.Config, state: AppState, grace_s: float) -> None:
        super().__init__(config)
        self._state = state
        self._grace_s = grace_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining: asyncio.Future[None] | None = None

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining is not None or self._loop is None:
            super().handle_exit(sig, frame)  # second signal (or not serving yet): exit now
            self.force_exit = True
            return
        # Signal handlers run between bytecodes of the loop's thread: hand over safely.
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._draining = asyncio.ensure_future(drain(self._state, self._grace_s))
        self._draining.add_done_callback(lambda _f: setattr(self, "should_exit", True))
