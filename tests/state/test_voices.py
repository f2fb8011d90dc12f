"""The voice stores: memory and Redis (a real, private redis-server, and a real Redis
Cluster) behind one interface; atomic writes and deletes; delete notices that evict
other nodes' caches."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import numpy as np
import pytest

from server.state.voices import (
    MemoryVoiceStore,
    RedisVoiceStore,
    VoiceCache,
    VoiceEvent,
    VoiceMeta,
    VoiceStore,
    VoiceStoreFull,
)
from tests.state.conftest import REDIS_KINDS, Connect, all_keys, url_of


def meta(i: int = 0, **kw: Any) -> VoiceMeta:
    fields: dict[str, Any] = {
        "id": "v_" + secrets.token_urlsafe(12),
        "name": f"voice {i}",
        "engine": "f5",
        "language": "en",
        "transcript": "Some words that were said.",
        "created": 1_700_000_000.0 + i,
        "duration_s": 4.0,
    }
    fields.update(kw)
    return VoiceMeta(**fields)


def pcm(seconds: float = 0.5, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return rng.integers(-20000, 20000, int(24000 * seconds), dtype="<i2").tobytes()


StoreFactory = Callable[[int], Awaitable[VoiceStore]]


@pytest.fixture(params=["memory", *REDIS_KINDS])
async def make_store(request: pytest.FixtureRequest, connect: Connect) -> StoreFactory:
    prefix = f"t{secrets.token_hex(4)}:"
    url = "" if request.param == "memory" else url_of(request, request.param)

    async def make(max_voices: int = 0) -> VoiceStore:
        cache: VoiceCache[Any] = VoiceCache(8)
        if not url:
            return MemoryVoiceStore(cache, max_voices)
        return RedisVoiceStore(connect(url), prefix, cache, max_voices, retry_s=0.1)

    return make


async def test_put_get_list_delete(make_store: StoreFactory) -> None:
    store = await make_store(0)
    a, b = meta(1), meta(2, name="second", language="zh")
    await store.put(b, pcm(seed=2))
    await store.put(a, pcm(seed=1))
    assert await store.meta(a.id) == a and await store.meta(b.id) == b
    assert await store.audio(a.id) == pcm(seed=1)
    assert [m.id for m in await store.list()] == [a.id, b.id]  # oldest first
    with pytest.raises(ValueError, match="exists already"):
        await store.put(a, pcm())
    store.cache.put(a.id, "prepared")
    assert await store.delete(a.id) is True
    assert a.id not in store.cache  # the deleting node evicts at once
    assert await store.meta(a.id) is None and await store.audio(a.id) is None
    assert await store.delete(a.id) is False
    assert [m.id for m in await store.list()] == [b.id]


async def test_limit_on_stored_voices(make_store: StoreFactory) -> None:
    store = await make_store(2)
    await store.put(meta(1), pcm())
    await store.put(meta(2), pcm())
    with pytest.raises(VoiceStoreFull) as exc:
        await store.put(meta(3), pcm())
    assert (exc.value.count, exc.value.limit) == (2, 2)
    assert "limit is 2" in str(exc.value)
    assert len(await store.list()) == 2


async def test_bad_audio_writes_nothing(make_store: StoreFactory) -> None:
    store = await make_store(0)
    m = meta()
    for bad in (b"", b"\x01\x02\x03"):
        with pytest.raises(ValueError, match="16-bit PCM"):
            await store.put(m, bad)
    assert await store.meta(m.id) is None and await store.list() == []


# Metadata ids and audio keys read in one step: a script runs atomically, and on a
# cluster on the node of the ``{voices}`` slot, where every voice key is.
_SNAPSHOT = "return {redis.call('HKEYS', KEYS[1]), redis.call('KEYS', ARGV[1])}"


async def test_redis_layout_and_atomic_writes(redis_url: str, connect: Connect) -> None:
    """Under a storm of concurrent puts and deletes, a consistent look at Redis never
    finds metadata without its audio or audio without its metadata."""
    prefix = f"t{secrets.token_hex(4)}:"
    writer, reader = connect(redis_url), connect(redis_url)
    store = RedisVoiceStore(writer, prefix, VoiceCache(4))
    m = meta()
    await store.put(m, pcm())
    assert await reader.hexists(f"{prefix}{{voices}}", m.id)
    assert await reader.exists(f"{prefix}{{voices}}:audio:{m.id}") == 1
    assert len(await all_keys(reader, f"{prefix}*")) == 2  # (and all_keys finds keys)
    await store.delete(m.id)
    assert await all_keys(reader, f"{prefix}*") == []

    stop = asyncio.Event()
    snapshot = reader.register_script(_SNAPSHOT)

    async def churn(seed: int) -> None:
        while not stop.is_set():
            x = meta(seed)
            await store.put(x, pcm(0.2, seed))
            await store.delete(x.id)

    async def snapshots() -> int:
        checked = 0
        for _ in range(300):
            ids, audio_keys = await snapshot(
                keys=[f"{prefix}{{voices}}"], args=[f"{prefix}{{voices}}:audio:*"]
            )
            with_meta = {i.decode() for i in ids}
            with_audio = {k.decode().rsplit(":", 1)[1] for k in audio_keys}
            assert with_meta == with_audio
            checked += len(with_meta)
        return checked

    tasks = [asyncio.create_task(churn(i)) for i in range(4)]
    try:
        checked = await snapshots()
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert checked > 0  # the snapshots did see voices mid-churn
    assert await all_keys(reader, f"{prefix}*") == []


async def _wait(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_delete_notice_evicts_another_nodes_cache(redis_url: str, connect: Connect) -> None:
    prefix = f"t{secrets.token_hex(4)}:"
    ra, rb = connect(redis_url), connect(redis_url)
    node_a = RedisVoiceStore(ra, prefix, VoiceCache(4), retry_s=0.1)
    node_b = RedisVoiceStore(rb, prefix, VoiceCache(4), retry_s=0.1)
    heard: list[VoiceEvent] = []

    async def on_event(ev: VoiceEvent) -> None:
        heard.append(ev)

    listener = asyncio.create_task(node_b.listen(on_event))
    try:
        await _wait(lambda: VoiceEvent("resync") in heard)
        m = meta()
        await node_a.put(m, pcm())
        await _wait(lambda: VoiceEvent("created", m.id) in heard)
        node_b.cache.put(m.id, "prepared on b")
        assert await node_a.delete(m.id)
        await _wait(lambda: m.id not in node_b.cache)
        assert VoiceEvent("deleted", m.id) in heard
        # A load that was under way when the delete came does not bring it back.
        node_b.cache.put(m.id, "late load")
        assert m.id not in node_b.cache

        # A notice missed while B was not listening is caught up when it resubscribes.
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        m2 = meta(2)
        await node_a.put(m2, pcm())
        node_b.cache.put(m2.id, "prepared on b")
        await node_a.delete(m2.id)
        assert m2.id in node_b.cache  # nobody told B
        listener = asyncio.create_task(node_b.listen(on_event))
        await _wait(lambda: m2.id not in node_b.cache)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


async def test_memory_store_notices() -> None:
    store = MemoryVoiceStore(VoiceCache(4))
    heard: list[VoiceEvent] = []

    async def on_event(ev: VoiceEvent) -> None:
        heard.append(ev)

    listener = asyncio.create_task(store.listen(on_event))
    try:
        await _wait(lambda: bool(heard))
        m = meta()
        await store.put(m, pcm())
        store.cache.put(m.id, "prepared")
        await store.delete(m.id)
        await _wait(lambda: len(heard) == 3)
        assert heard == [
            VoiceEvent("resync"),
            VoiceEvent("created", m.id),
            VoiceEvent("deleted", m.id),
        ]
        assert m.id not in store.cache
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


def test_cache_is_a_bounded_lru() -> None:
    cache: VoiceCache[str] = VoiceCache(2)
    assert cache.put("a", "A") == [] and cache.put("b", "B") == []
    assert cache.get("a") == "A"  # a use: "b" is now the least recent
    assert cache.put("c", "C") == ["b"]
    assert cache.ids() == ["a", "c"] and len(cache) == 2
    assert cache.evict("a") and not cache.evict("a")
    cache.put("a", "again")  # an LRU eviction is not a delete: it may come back
    assert cache.get("a") == "again"
    cache.evict("a", deleted=True)
    cache.put("a", "after delete")
    assert "a" not in cache


async def test_the_owner_is_stored(make_store: StoreFactory) -> None:
    """The key that uploaded a voice is part of its record (None: an open server's)."""
    store = await make_store(0)
    mine, anyones = meta(1, owner="0123456789abcdef"), meta(2)
    await store.put(mine, pcm())
    await store.put(anyones, pcm())
    got = await store.meta(mine.id)
    assert got is not None and got.owner == "0123456789abcdef" and got == mine
    got = await store.meta(anyones.id)
    assert got is not None and got.owner is None
    assert [(m.id, m.owner) for m in await store.list()] == [
        (mine.id, "0123456789abcdef"),
        (anyones.id, None),
    ]


async def test_records_from_before_owners_have_none(redis_url: str, connect: Connect) -> None:
    """A record written before voices had owners (no ``owner`` in its JSON) still reads,
    with owner None (which server.voices.registry treats as everyone's)."""
    prefix = f"t{secrets.token_hex(4)}:"
    r = connect(redis_url)
    store = RedisVoiceStore(r, prefix, VoiceCache(4))
    old = meta(1)
    raw = msgspec.json.decode(msgspec.json.encode(old))
    del raw["owner"]
    await r.set(f"{prefix}{{voices}}:audio:{old.id}", pcm())
    await r.hset(f"{prefix}{{voices}}", old.id, msgspec.json.encode(raw))
    got = await store.meta(old.id)
    assert got == old and got is not None and got.owner is None
    assert [m.id for m in await store.list()] == [old.id]
    assert await store.audio(old.id) == pcm()


def test_cache_keeps_the_meta_it_was_put_with() -> None:
    """A node tells who may use a cached voice from it while the store is away."""
    cache: VoiceCache[str] = VoiceCache(2)
    a, b, c = meta(1, owner="aaaa"), meta(2, owner="bbbb"), meta(3)
    cache.put(a.id, "A", a)
    cache.put(b.id, "B", b)
    assert cache.meta(a.id) == a and cache.meta(b.id) == b
    cache.put(c.id, "C", c)  # pushes a out: its meta goes with it
    assert a.id not in cache and cache.meta(a.id) is None
    cache.put(b.id, "B again")  # replaced without a meta: the old one is not kept
    assert cache.meta(b.id) is None
    assert cache.evict(c.id) and cache.meta(c.id) is None
