"""A session's write-ahead journal in the state store (the I/O edge of resume).

The session calls ``text``, ``mark``, ``commit``, ``cancel`` and ``ack`` on the event
loop without waiting; one task applies the writes in that order, so the store
always holds a prefix of what happened. ``commit`` takes a callback that releases
the chunk's frames to the sender once they are durable: a frame is never sent
before it could be replayed. Commits that queue up behind a write in flight go to
the store as one (a group commit), so a slow store costs fewer round trips, not
more latency.

If the store fails (Redis went away), the session keeps streaming, which matters
more to a listener than resumability: the journal marks itself broken, releases
every later chunk at once, tells the session (a non-fatal ``resume_unavailable``),
and keeps trying in the background to mark the stored record broken so that a
stale record is never resumed. If a write finds another owner, the session was
resumed elsewhere: ``on_moved`` is called and nothing more is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable

import structlog
from redis.exceptions import RedisError

from server.state.sessions import Commit, Fence, SessionStore

Release = Callable[[], None]

log = structlog.get_logger("voxwire.journal")

Op = Callable[[], Awaitable[Fence]]
# Poisoning a broken record is retried in the background this often until it works.
_POISON_RETRY_S = 1.0
_background: set[asyncio.Task[None]] = set()  # keeps retry tasks alive after their session


class Journal:
    def __init__(
        self,
        store: SessionStore,
        session_id: str,
        owner: str,
        frames: int,
        on_moved: Callable[[], None],
        on_broken: Callable[[str], None],
        timeout_s: float = 1.0,
    ) -> None:
        self.store = store
        # A store that hangs (a partition, not a refusal) breaks the journal after this
        # long instead of holding the session's audio for the client's socket timeout.
        self.timeout_s = timeout_s
        self.session_id = session_id
        self.owner = owner
        self.frames = frames  # the number the next committed frame gets
        self.broken = False
        self.moved = False
        self._on_moved = on_moved
        self._on_broken = on_broken
        # (write, release after it); a commit is queued as its Commit, to be merged.
        # None: close. A deque (not asyncio.Queue) so the writer can look at what is next.
        self._queue: deque[tuple[Op | Commit | None, Release | None]] = deque()
        self._wake = asyncio.Event()
        self._ack_pending: int | None = None
        self._task = asyncio.create_task(self._run(), name=f"journal-{session_id}")

    # ------------------------------------------------------------ session side

    def text(self, text: str) -> None:
        self._put(lambda: self.store.append_text(self.session_id, self.owner, text))

    def mark(self, offset: int, kind: str) -> None:
        self._put(lambda: self.store.add_mark(self.session_id, self.owner, offset, kind))

    def commit(self, c: Commit, release: Callable[[], None]) -> None:
        """Make ``c`` durable, then call ``release`` (at once if the journal is broken)."""
        self.frames += len(c.frames)
        if self.broken:
            release()
            return
        self._put(c, release)

    def cancel(self, sent: int, chars: int, marks: int) -> None:
        self.frames = sent
        self._put(lambda: self.store.cancel(self.session_id, self.owner, sent, chars, marks))

    def ack(self, frame: int) -> None:
        # Acks come every few frames: only the latest one waiting is written.
        if self._ack_pending is None:
            self._put(self._write_ack)
        self._ack_pending = frame if self._ack_pending is None else max(frame, self._ack_pending)

    async def heartbeat(self) -> None:
        """Keep the record alive; finds out when the session was resumed elsewhere."""
        if self.broken or self.moved:
            return
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the result
            # when a cancel lands in the same loop turn as the reply, and the session's
            # watchdog then outlived its connection (issue 11).
            async with asyncio.timeout(self.timeout_s):
                fence = await self.store.heartbeat(self.session_id, self.owner)
        except (RedisError, OSError, TimeoutError) as exc:
            self._break(f"{type(exc).__name__}: {exc}")
            return
        self._fence(fence)

    async def close(self, delete: bool, timeout: float) -> None:
        """Apply what is queued (within ``timeout``), then drop the record if ``delete``."""
        self._queue.append((None, None))
        self._wake.set()
        done, _ = await asyncio.wait([self._task], timeout=timeout)
        if not done:
            self._task.cancel()
        if delete and not self.broken and not self.moved:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.store.delete(self.session_id, self.owner)

    # ------------------------------------------------------------ writer

    def _put(self, op: Op | Commit, release: Release | None = None) -> None:
        if self.broken or self.moved:
            if release is not None and not self.moved:
                release()
            return
        self._queue.append((op, release))
        self._wake.set()

    async def _write_ack(self) -> Fence:
        frame, self._ack_pending = self._ack_pending, None
        if frame is None:
            return "ok"
        return await self.store.ack(self.session_id, self.owner, frame)

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            op, release = self._queue.popleft()
            if op is None:
                return
            releases = [release] if release is not None else []
            if isinstance(op, Commit):
                op = self._merge(op, releases)
            if not (self.broken or self.moved):
                try:
                    write = (
                        self.store.commit(self.session_id, self.owner, op)
                        if isinstance(op, Commit)
                        else op()
                    )
                    async with asyncio.timeout(self.timeout_s):
                        fence = await write
                    self._fence(fence)
                except (RedisError, OSError, TimeoutError) as exc:
                    self._break(f"{type(exc).__name__}: {exc}")
            if not self.moved:
                for r in releases:
                    r()

    def _merge(self, c: Commit, releases: list[Release]) -> Commit:
        """Fold the commits queued right behind ``c`` into it (their order is kept)."""
        q = self._queue
        while q:
            nxt, release = q[0]
            # one chunk's end and the next one's start stay two writes: in one, the
            # script would set the new chunk before dropping the old one
            if not isinstance(nxt, Commit) or c.chunk_done or nxt.chunk is not None:
                break
            q.popleft()
            c = Commit(
                chunk=c.chunk,
                chunk_done=nxt.chunk_done,
                frames=c.frames + nxt.frames,
                chars=c.chars + nxt.chars,
                marks=c.marks + nxt.marks,
                finished=c.finished or nxt.finished,
                carry=nxt.carry,
                segments=nxt.segments,
            )
            if release is not None:
                releases.append(release)
        return c

    def _fence(self, fence: Fence) -> None:
        if fence == "moved" and not self.moved:
            self.moved = True
            self._on_moved()
        elif fence == "gone":
            # The record expired or the store lost it (a Redis restart without persistence).
            self._break("the session's record is gone from the state store")

    def _break(self, why: str) -> None:
        if self.broken:
            return
        self.broken = True
        log.warning("journal_broken", session_id=self.session_id, error=why)
        self._on_broken(why)
        task = asyncio.get_running_loop().create_task(self._poison())
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def _poison(self) -> None:
        """Mark the stored record unresumable once the store answers (until it expires)."""
        deadline = time.monotonic() + self.store.ttl_s
        while time.monotonic() < deadline:
            try:
                await self.store.poison(self.session_id, self.owner)
                return
            except (RedisError, OSError):
                await asyncio.sleep(_POISON_RETRY_S)
