"""The session journal: writes in order, frames released only once durable, a moved
journal stops (the memory store, no sockets; a broken store is tests/test_state_outage)."""

from __future__ import annotations

from server.journal import Journal
from server.state.sessions import Commit, MemorySessionStore, StoredFrame


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
