"""The session journal's store, both implementations, against the same expectations
(Redis: a real server, and a real three-primary Redis Cluster; tests/state/conftest.py)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.state.sessions import (
    ChunkAudio,
    Commit,
    MemorySessionStore,
    RedisSessionStore,
    ResumeUnavailable,
    SessionStore,
    StoredFrame,
)
from tests.redis_cluster import RedisNode
from tests.state.conftest import REDIS_KINDS, Connect, all_keys, url_of


@pytest.fixture(params=["memory", *REDIS_KINDS])
async def store(request: pytest.FixtureRequest, connect: Connect) -> AsyncIterator[SessionStore]:
    if request.param == "memory":
        yield MemorySessionStore(ttl_s=0.6)
        return
    client = connect(url_of(request, request.param))
    yield RedisSessionStore(client, f"t{secrets.token_hex(4)}:", ttl_s=0.6)


def _frames(*names: str) -> list[StoredFrame]:
    return [StoredFrame(0, n.encode(), "") for n in names]


async def test_commits_and_takeover_snapshot(store: SessionStore) -> None:
    await store.create("s1", "a", b'{"engine":"piper"}', replay_frames=100)
    assert await store.append_text("s1", "a", "Héllo there. ") == "ok"
    assert await store.append_text("s1", "a", "Second one") == "ok"
    assert await store.add_mark("s1", "a", 13, "flush") == "ok"
    seg = '{"type":"segment"}'
    c = Commit(
        frames=[StoredFrame(0, b"f0", seg), *_frames("f1", "f2")],
        chars=13,
        carry=b"\x00\x01",
        segments=1,
    )
    assert await store.commit("s1", "a", c) == "ok"
    assert await store.commit("s1", "a", Commit(frames=_frames("p0"), marks=1, segments=1)) == "ok"
    assert await store.ack("s1", "a", 1) == "ok"
    assert await store.ack("s1", "a", 0) == "ok"  # acks never go back

    snap = await store.takeover("s1", "b")
    assert snap is not None
    assert snap.meta == b'{"engine":"piper"}' and snap.epoch == 1
    assert (snap.frames, snap.acked, snap.done_chars, snap.marks_done) == (4, 1, 13, 1)
    assert snap.text == "Héllo there. Second one"  # offsets count characters, not bytes
    assert snap.text[snap.done_chars :] == "Second one"
    assert snap.marks == [(13, "flush")] and snap.carry == b"" and snap.segments == 1
    frames = await store.frames_from("s1", 1)
    assert [(f.n, f.audio) for f in frames] == [(1, b"f1"), (2, b"f2"), (3, b"p0")]
    assert (await store.frames_from("s1", 0))[0].message == seg


async def test_the_old_owner_is_fenced_off(store: SessionStore) -> None:
    await store.create("s2", "a", b"{}", replay_frames=10)
    assert await store.takeover("s2", "b") is not None
    for write in (
        store.append_text("s2", "a", "late"),
        store.add_mark("s2", "a", 0, "end"),
        store.commit("s2", "a", Commit(frames=_frames("x"))),
        store.cancel("s2", "a", 0, 0, 0),
        store.ack("s2", "a", 0),
        store.heartbeat("s2", "a"),
    ):
        assert await write == "moved"
    await store.delete("s2", "a")  # refused too: the record stays
    snap = await store.takeover("s2", "c")
    assert snap is not None and snap.frames == 0 and snap.text == "" and snap.epoch == 2


async def test_cancel_drops_unsent_frames_and_the_text(store: SessionStore) -> None:
    await store.create("s3", "a", b"{}", replay_frames=10)
    await store.append_text("s3", "a", "One. Two. Three.")
    await store.commit("s3", "a", Commit(frames=_frames("a", "b", "c", "d"), chars=5))
    assert await store.cancel("s3", "a", sent=2, chars=16, marks=0) == "ok"
    await store.append_text("s3", "a", " Four.")
    await store.commit("s3", "a", Commit(frames=_frames("e"), chars=6))
    snap = await store.takeover("s3", "b")
    assert snap is not None and snap.frames == 3 and snap.done_chars == 22
    assert [(f.n, f.audio) for f in await store.frames_from("s3", 0)] == [
        (0, b"a"),
        (1, b"b"),
        (2, b"e"),
    ]


async def test_replay_window_keeps_the_newest_frames(store: SessionStore) -> None:
    await store.create("s4", "a", b"{}", replay_frames=5)
    for i in range(0, 400, 4):
        await store.commit("s4", "a", Commit(frames=_frames(*(str(i + k) for k in range(4)))))
    kept = await store.frames_from("s4", 0)
    ns = [f.n for f in kept]
    assert ns[-1] == 399 and ns == list(range(ns[0], 400))  # contiguous, newest last
    # the memory store trims exactly; Redis trims whole stream nodes (~100 entries)
    assert 5 <= len(ns) <= 5 + 110


async def test_state_expires_without_heartbeats(store: SessionStore) -> None:
    await store.create("s5", "a", b"{}", replay_frames=10)
    await store.append_text("s5", "a", "text")
    for _ in range(3):
        await asyncio.sleep(0.3)
        assert await store.heartbeat("s5", "a") == "ok"  # 0.9 s alive on a 0.6 s ttl
    await asyncio.sleep(0.9)
    assert await store.heartbeat("s5", "a") == "gone"
    assert await store.takeover("s5", "b") is None
    if isinstance(store, RedisSessionStore):  # no key is left behind
        assert await all_keys(store.redis, f"{store.prefix}*") == []


async def test_a_poisoned_record_is_not_resumed(store: SessionStore) -> None:
    await store.create("s6", "a", b"{}", replay_frames=10)
    await store.poison("s6", "a")
    with pytest.raises(ResumeUnavailable):
        await store.takeover("s6", "b")


async def test_delete_by_the_owner(store: SessionStore) -> None:
    await store.create("s7", "a", b"{}", replay_frames=10)
    await store.delete("s7", "a")
    assert await store.takeover("s7", "b") is None


async def test_the_chunk_in_progress_is_kept_until_it_ends(store: SessionStore) -> None:
    """Its engine audio, written with its first slice, is what a takeover finishes from."""
    await store.create("s8", "a", b"{}", replay_frames=100)
    await store.append_text("s8", "a", "One two three. Four.")
    pcm = bytes(range(256)) * 40
    chunk = ChunkAudio(index=0, first=0, chars=15, pcm=pcm)
    await store.commit("s8", "a", Commit(chunk=chunk, frames=_frames("a", "b")))
    await store.commit("s8", "a", Commit(frames=_frames("c")))
    snap = await store.takeover("s8", "b")
    assert snap is not None and snap.chunk == chunk and snap.frames == 3
    assert snap.done_chars == 0  # the chunk is not done: B finishes it from its audio
    done = Commit(frames=_frames("d"), chars=15, chunk_done=True, carry=b"\x01", segments=1)
    assert await store.commit("s8", "b", done) == "ok"
    snap = await store.takeover("s8", "c")
    assert snap is not None and snap.chunk is None and snap.done_chars == 15
    assert snap.carry == b"\x01"
    if isinstance(store, RedisSessionStore):  # the audio is dropped with the chunk
        assert not await store.redis.exists(store.keys("s8")[4])
    chunk2 = ChunkAudio(index=1, first=4, chars=5, pcm=b"xyz0")
    await store.commit("s8", "c", Commit(chunk=chunk2, frames=_frames("e")))
    await store.cancel("s8", "c", sent=4, chars=20, marks=0)
    snap = await store.takeover("s8", "d")
    assert snap is not None and snap.chunk is None and snap.frames == 4


async def test_peek_reads_without_taking_over(store: SessionStore) -> None:
    assert await store.peek("nope") is None
    await store.create("s9", "a", b"{}", replay_frames=5)
    p = await store.peek("s9")
    assert p is not None and (p.frames, p.acked, p.oldest) == (0, -1, None)
    for i in range(0, 400, 4):
        await store.commit("s9", "a", Commit(frames=_frames(*(str(i + k) for k in range(4)))))
    await store.ack("s9", "a", 397)
    p = await store.peek("s9")
    assert p is not None and p.frames == 400 and p.acked == 397
    assert p.oldest == (await store.frames_from("s9", 0))[0].n
    assert await store.heartbeat("s9", "a") == "ok"  # still a's
    await store.poison("s9", "a")
    with pytest.raises(ResumeUnavailable):
        await store.peek("s9")


async def _rewind(store: RedisSessionStore, sid: str, to: dict[str, bytes | None]) -> None:
    """Put a session's keys back as they were (``DUMP``s): what a failover to a replica
    that had not received the latest writes leaves behind."""
    for key, dumped in to.items():
        await store.redis.delete(key)
        if dumped is not None:
            await store.redis.restore(key, 60_000, dumped)


async def test_a_record_that_lost_writes_refuses_the_next(redis_url: str, connect: Connect) -> None:
    """Replication is asynchronous, so a failover can leave an older prefix of a journal.
    Its writer's next write is refused (``gone``: the journal breaks and stops) rather
    than numbered from the wrong frame; the poisoned record is not resumed."""
    store = RedisSessionStore(connect(redis_url), f"t{secrets.token_hex(4)}:", ttl_s=60)
    await store.create("s", "a", b"{}", replay_frames=100)
    await store.append_text("s", "a", "One. ")
    await store.commit("s", "a", Commit(frames=_frames("f0", "f1"), chars=5))
    replica = {k: await store.redis.dump(k) for k in store.keys("s")}
    assert await store.append_text("s", "a", "Two. ") == "ok"
    assert await store.commit("s", "a", Commit(frames=_frames("f2"), chars=5)) == "ok"
    await _rewind(store, "s", replica)

    assert await store.commit("s", "a", Commit(frames=_frames("f3"))) == "gone"
    assert await store.ack("s", "a", 0) == "gone"  # and every write after it
    assert await store.heartbeat("s", "a") == "ok"  # (a heartbeat writes nothing)
    await store.poison("s", "a")  # what the broken journal does next
    with pytest.raises(ResumeUnavailable):
        await store.takeover("s", "b")

    # A node that took a session over counts from the record it took over.
    await store.create("t", "a", b"{}", replay_frames=100)
    await store.append_text("t", "a", "One. ")
    snap = await store.takeover("t", "b")
    assert snap is not None and snap.text == "One. "
    assert await store.append_text("t", "b", "Two. ") == "ok"
    replica = {k: await store.redis.dump(k) for k in store.keys("t")}
    assert await store.commit("t", "b", Commit(frames=_frames("f0"), chars=5)) == "ok"
    await _rewind(store, "t", replica)
    assert await store.append_text("t", "b", "Three.") == "gone"
    snap = await store.takeover("t", "c")  # (unpoisoned, it is a consistent older prefix)
    assert snap is not None and snap.text == "One. Two. " and snap.frames == 0


@pytest.mark.parametrize("appendonly", ["yes", "no"])
async def test_a_killed_redis_keeps_what_it_acknowledged_with_appendonly(
    appendonly: str, tmp_path: Path, connect: Connect
) -> None:
    """SIGKILL and restart: with ``appendonly yes`` (fsync every second) every write it
    had answered is back, and the session resumes; without persistence it is gone."""
    node = RedisNode(tmp_path, "--appendonly", appendonly, "--appendfsync", "everysec")
    node.start()
    try:
        store = RedisSessionStore(connect(f"redis://{node.address}/0"), "p:", ttl_s=60)
        await store.create("s", "a", b"{}", replay_frames=100)
        await store.append_text("s", "a", "Kept. ")
        await store.commit("s", "a", Commit(frames=_frames("f0", "f1"), chars=6))
        node.kill()
        node.start()  # same port and folder: the client reconnects by itself
        snap = await store.takeover("s", "b")
        if appendonly == "no":
            assert snap is None
            return
        assert snap is not None and snap.text == "Kept. " and snap.frames == 2
        assert [f.audio for f in await store.frames_from("s", 0)] == [b"f0", b"f1"]
    finally:
        node.stop()


async def test_write_counts_of_writers_gone_quiet_are_dropped(
    redis_server: Any, connect: Connect
) -> None:
    """The store counts each writer's writes in memory; one idle for two TTLs (its
    session expired, or its connection ended without a delete) is forgotten, so the
    counts stay as many as the node's live sessions."""
    store = RedisSessionStore(connect(redis_server.url), f"t{secrets.token_hex(4)}:", ttl_s=0.3)
    for i in range(20):
        await store.create(f"s{i}", "a", b"{}", replay_frames=10)
    assert len(store._writes) == 20
    await asyncio.sleep(0.7)
    await store.create("live", "a", b"{}", replay_frames=10)
    assert await store.append_text("live", "a", "x") == "ok"  # a write sweeps
    assert list(store._writes) == [("live", "a")]
