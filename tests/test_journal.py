"""The session journal: writes in order, frames released only once durable, a moved
journal stops (the memory store, no sockets; a broken store is tests/test_state_outage)."""

from __future__ import annotations

import asyncio
import contextlib
import functools

from server.journal import Journal
from server.state.sessions import ChunkAudio, Commit, Fence, MemorySessionStore, StoredFrame


async def test_release_follows_the_write_and_keeps_order() -> None:
    store = MemorySessionStore(ttl_s=10)
    await store.create("s", "a", b"{}", replay_frames=100)
    released: list[str] = []
    j = Journal(store, "s", "a", 0, lambda: released.append("moved"), lambda w: None)
    j.text("Hello. ")
    j.commit(Commit(frames=[StoredFrame(0, b"x", "")], chars=7), lambda: released.append("c1"))
    j.commit(Commit(frames=[StoredFrame(0, b"y", "")]), lambda: released.append("c2"))
    assert released == []  # nothing goes out before it is in the store
    assert j.frames == 2
    await j.close(delete=False, timeout=5)
    assert released == ["c1", "c2"]
    snap = await store.takeover("s", "b")
    assert snap is not None and snap.frames == 2 and snap.done_chars == 7


async def test_moved_journal_releases_nothing_more() -> None:
    store = MemorySessionStore(ttl_s=10)
    await store.create("s", "a", b"{}", replay_frames=100)
    await store.takeover("s", "b")
    events: list[str] = []
    j = Journal(store, "s", "a", 0, lambda: events.append("moved"), lambda w: None)
    j.commit(Commit(frames=[StoredFrame(0, b"x", "")]), lambda: events.append("released"))
    await j.close(delete=True, timeout=5)
    assert events == ["moved"]
    assert await store.takeover("s", "c") is not None  # a moved journal deletes nothing


async def test_queued_commits_go_as_one_and_keep_a_new_chunk() -> None:
    """Commits queued behind each other are merged (group commit); a chunk's end and the
    next chunk's start are not, so the new chunk's audio survives."""
    store = MemorySessionStore(ttl_s=10)
    await store.create("s", "a", b"{}", replay_frames=100)
    released: list[int] = []
    j = Journal(store, "s", "a", 0, lambda: None, lambda w: None)
    j.text("One. Two.")
    first = ChunkAudio(index=0, first=0, chars=5, pcm=b"1111")
    second = ChunkAudio(index=1, first=3, chars=4, pcm=b"2222")
    commits = [
        Commit(chunk=first, frames=[StoredFrame(0, b"a", "")]),
        Commit(frames=[StoredFrame(0, b"b", "")]),
        Commit(frames=[StoredFrame(0, b"c", "")], chars=5, chunk_done=True, segments=1),
        Commit(chunk=second, frames=[StoredFrame(0, b"d", "")], segments=1),
    ]
    for i, c in enumerate(commits):
        j.commit(c, functools.partial(released.append, i))
    await j.close(delete=False, timeout=5)
    assert released == [0, 1, 2, 3]
    snap = await store.takeover("s", "b")
    assert snap is not None and snap.frames == 4 and snap.done_chars == 5
    assert snap.chunk == second
    assert [f.audio for f in await store.frames_from("s", 0)] == [b"a", b"b", b"c", b"d"]


class _GatedStore(MemorySessionStore):
    """The memory store, with heartbeat replies released by the test: it lets a test put
    a reply and a cancel in the same event-loop turn, the interleaving that lost a
    session's cancellation on Python 3.11 (issue 11)."""

    def __init__(self) -> None:
        super().__init__(ttl_s=10)
        self.gate: asyncio.Future[None] | None = None

    async def heartbeat(self, session_id: str, owner: str) -> Fence:
        self.gate = asyncio.get_running_loop().create_future()
        await self.gate
        return await super().heartbeat(session_id, owner)


async def test_a_cancel_in_the_same_turn_as_the_heartbeat_reply_is_not_lost() -> None:
    store = _GatedStore()
    await store.create("s", "a", b"{}", replay_frames=10)
    j = Journal(store, "s", "a", 0, lambda: None, lambda w: None)
    for _ in range(20):  # the race was one-sided: it either lost the cancel or not
        task = asyncio.create_task(j.heartbeat())
        for _ in range(100):  # a few loop turns until it waits on the gate
            if store.gate is not None:
                break
            await asyncio.sleep(0)
        gate, store.gate = store.gate, None
        assert gate is not None
        gate.set_result(None)  # the reply arrives ...
        task.cancel()  # ... and the connection drops, in the same loop turn
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled(), "the heartbeat swallowed its task's cancellation"
    await j.close(delete=True, timeout=5)
