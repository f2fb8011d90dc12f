"""Uploaded voices: metadata plus prepared reference audio, shared by every node.

A voice is a ``VoiceMeta`` (id, name, engine, language, transcript, created, duration,
sample rate, owner) and its reference audio: mono 16-bit PCM (little-endian) at 24 kHz, F5's
rate. 16-bit, not float32: half the bytes in Redis and on the wire to every node (a
30 s voice is 1.4 MB instead of 2.9 MB), and after loudness normalisation (speech at
-20 dBFS, peaks under -1 dBFS) its 96 dB of range is far below anything the reference
mel can tell apart.

Two stores behind one small interface (``VoiceStore``):

- ``MemoryVoiceStore``: one process, the embedded default when no ``redis_url`` is set.
- ``RedisVoiceStore`` (``redis.asyncio``): every node sees a voice as soon as it is
  stored. Keys, all under ``settings.redis_prefix``:

  - ``{prefix}{voices}``: a hash, voice id -> metadata (JSON); also the index.
  - ``{prefix}{voices}:audio:{id}``: the PCM.
  (``{voices}`` is a hash tag: on a Redis Cluster every voice key is in one slot, as the
  multi-key scripts need.)
  - channel ``{prefix}voices:events``: ``{"event": "created"|"deleted", "id": …}``.

  A put and a delete are each one Lua script, so they are atomic: no reader ever sees
  metadata without its audio, and a write cut short leaves nothing behind. The audio is
  written before the metadata that points at it.

Owner. ``VoiceMeta.owner`` is the id of the API key that uploaded the voice
(``server.auth.key_id``: a non-secret prefix of the key's digest, the same on every
node), or None for a voice uploaded while the server was open (no keys) and for records
written before voices had owners (they decode with None). The store keeps it; who may
see, use and delete what is decided in ``server.voices.registry`` (``visible``,
``deletable``).

Each node keeps prepared voices (for F5: the reference and its mel) in a bounded LRU
``VoiceCache``; a store evicts from it when a voice is deleted anywhere (the delete
notice), and on every (re)subscription it drops what the store no longer has, so a
notice missed while the connection was down is caught up. Callers that must be sure
(a session starting with a voice) also read the metadata from the store on use.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

import msgspec
import structlog
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub

    from server.state.connect import StateRedis

log = structlog.get_logger("voxwire.voices")

SAMPLE_RATE = 24000  # the stored reference's rate (F5's)
SAMPLE_WIDTH = 2  # int16
_TOMBSTONES = 4096


class VoiceMeta(msgspec.Struct, kw_only=True, frozen=True):
    """What the server knows about an uploaded voice besides its audio."""

    id: str
    name: str
    engine: str
    language: str
    transcript: str
    created: float  # Unix time, seconds
    duration_s: float
    sample_rate: int = SAMPLE_RATE
    # The id of the API key that uploaded it; None: uploaded on an open server, or a
    # record from before voices had owners (see server.voices.registry.visible).
    owner: str | None = None


class VoiceEvent(msgspec.Struct, frozen=True):
    """A notice from the store: a voice was created or deleted (on any node), or the
    node (re)subscribed and should check its cache against the store (``resync``)."""

    event: Literal["created", "deleted", "resync"]
    id: str = ""


class VoiceStoreFull(Exception):
    """The store holds ``max_voices`` voices already."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"{count} voices are stored and the limit is {limit}")
        self.count = count
        self.limit = limit


T = TypeVar("T")


class VoiceCache(Generic[T]):
    """A bounded, thread-safe LRU of prepared voices (engine threads read it; the event
    loop fills and evicts it). ``get`` counts as a use."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, T] = OrderedDict()
        # The metadata a cached voice was prepared from (owner included), so a node can
        # still tell who may use it while the store is unreachable.
        self._metas: dict[str, VoiceMeta] = {}
        self._lock = threading.Lock()
        # Ids deleted from the store: a load that was under way when the delete came
        # must not put the voice back (ids are never reused, so this is permanent).
        self._gone: OrderedDict[str, None] = OrderedDict()
        # In-flight loads by id, so concurrent first uses prepare a voice once (event
        # loop only).
        self.pending: dict[str, asyncio.Future[Any]] = {}

    def get(self, voice_id: str) -> T | None:
        with self._lock:
            item = self._items.get(voice_id)
            if item is not None:
                self._items.move_to_end(voice_id)
            return item

    def put(self, voice_id: str, item: T, meta: VoiceMeta | None = None) -> list[str]:
        """Add (or replace) a voice, with the metadata it was prepared from; returns the
        ids pushed out to make room. A voice deleted meanwhile is not added."""
        with self._lock:
            if voice_id in self._gone:
                return []
            self._items[voice_id] = item
            self._items.move_to_end(voice_id)
            if meta is not None:
                self._metas[voice_id] = meta
            else:
                self._metas.pop(voice_id, None)
            out = []
            while len(self._items) > self.size:
                old = self._items.popitem(last=False)[0]
                self._metas.pop(old, None)
                out.append(old)
            return out

    def meta(self, voice_id: str) -> VoiceMeta | None:
        """The metadata a cached voice was put with (None: not cached, or put without)."""
        with self._lock:
            return self._metas.get(voice_id)

    def evict(self, voice_id: str, deleted: bool = False) -> bool:
        """Drop a voice; ``deleted``: it is gone from the store for good."""
        with self._lock:
            if deleted:
                self._gone[voice_id] = None
                while len(self._gone) > _TOMBSTONES:
                    self._gone.popitem(last=False)
            self._metas.pop(voice_id, None)
            return self._items.pop(voice_id, None) is not None

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def values(self) -> list[T]:
        with self._lock:
            return list(self._items.values())

    def __contains__(self, voice_id: object) -> bool:
        with self._lock:
            return voice_id in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


Listener = Callable[[VoiceEvent], Awaitable[None]]


class VoiceStore(Protocol):
    """Where uploaded voices live. Every method may raise ``RedisError``/``OSError``
    when the store is Redis and it is unreachable."""

    cache: VoiceCache[Any]

    async def put(self, meta: VoiceMeta, audio: bytes) -> None:
        """Store a new voice atomically; raises ``VoiceStoreFull`` at the limit."""
        ...

    async def meta(self, voice_id: str) -> VoiceMeta | None: ...

    async def audio(self, voice_id: str) -> bytes | None: ...

    async def list(self) -> list[VoiceMeta]:
        """Every voice, oldest first."""
        ...

    async def delete(self, voice_id: str) -> bool:
        """Remove a voice atomically and tell every node; False when there was none."""
        ...

    async def listen(self, on_event: Listener) -> None:
        """Run until cancelled: evict deleted voices from ``cache`` and pass every
        notice on to ``on_event`` (a ``resync`` first, and after every reconnection)."""
        ...


async def _call(on_event: Listener, ev: VoiceEvent) -> None:
    """A failing listener must not stop the notices."""
    try:
        await on_event(ev)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("voice_event_failed", event=ev.event, voice=ev.id, error=repr(exc))


def _check_audio(voice_id: str, audio: bytes) -> None:
    if not audio or len(audio) % SAMPLE_WIDTH:
        raise ValueError(f"voice {voice_id!r}: the audio is not 16-bit PCM ({len(audio)} bytes)")


class MemoryVoiceStore:
    """In-process voices: one node, no Redis. Lost when the process exits."""

    def __init__(self, cache: VoiceCache[Any], max_voices: int = 0) -> None:
        self.cache = cache
        self.max_voices = max_voices
        self._voices: dict[str, tuple[VoiceMeta, bytes]] = {}
        self._listeners: list[asyncio.Queue[VoiceEvent]] = []

    def _notify(self, ev: VoiceEvent) -> None:
        for q in self._listeners:
            q.put_nowait(ev)

    async def put(self, meta: VoiceMeta, audio: bytes) -> None:
        _check_audio(meta.id, audio)
        if meta.id in self._voices:
            raise ValueError(f"voice {meta.id!r} exists already")
        if self.max_voices and len(self._voices) >= self.max_voices:
            raise VoiceStoreFull(len(self._voices), self.max_voices)
        self._voices[meta.id] = (meta, bytes(audio))
        self._notify(VoiceEvent("created", meta.id))

    async def meta(self, voice_id: str) -> VoiceMeta | None:
        item = self._voices.get(voice_id)
        return item[0] if item else None

    async def audio(self, voice_id: str) -> bytes | None:
        item = self._voices.get(voice_id)
        return item[1] if item else None

    async def list(self) -> list[VoiceMeta]:
        return sorted((m for m, _ in self._voices.values()), key=lambda m: (m.created, m.id))

    async def delete(self, voice_id: str) -> bool:
        found = self._voices.pop(voice_id, None) is not None
        self.cache.evict(voice_id, deleted=True)
        if found:
            self._notify(VoiceEvent("deleted", voice_id))
        return found

    async def listen(self, on_event: Listener) -> None:
        q: asyncio.Queue[VoiceEvent] = asyncio.Queue()
        self._listeners.append(q)
        try:
            await _call(on_event, VoiceEvent("resync"))
            while True:
                ev = await q.get()
                if ev.event == "deleted":
                    self.cache.evict(ev.id, deleted=True)
                await _call(on_event, ev)
        finally:
            self._listeners.remove(q)


# KEYS: metadata hash, audio key. ARGV: id, metadata, audio, max voices (0: no limit),
# channel, notice. Returns 1 when stored, -1 when the id exists, -2-count when full.
_PUT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return -1 end
local n = redis.call('HLEN', KEYS[1])
local limit = tonumber(ARGV[4])
if limit > 0 and n >= limit then return -2 - n end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
"""
# KEYS: metadata hash, audio key. ARGV: id, channel, notice. Returns 1 when deleted.
_DELETE = """
local n = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
if n == 1 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return n
"""

_meta_decoder = msgspec.json.Decoder(VoiceMeta)
_event_decoder = msgspec.json.Decoder(VoiceEvent)


class RedisVoiceStore:
    """Voices in Redis, seen by every node at once (see the module docstring)."""

    def __init__(
        self,
        redis: StateRedis,
        prefix: str,
        cache: VoiceCache[Any],
        max_voices: int = 0,
        retry_s: float = 1.0,
    ) -> None:
        self.cache = cache
        self.max_voices = max_voices
        self.retry_s = retry_s
        self._r = redis
        self._index = f"{prefix}{{voices}}"
        self._prefix = prefix
        self.channel = f"{prefix}voices:events"
        self._put = redis.register_script(_PUT)
        self._delete = redis.register_script(_DELETE)

    def _audio_key(self, voice_id: str) -> str:
        return f"{self._prefix}{{voices}}:audio:{voice_id}"

    async def put(self, meta: VoiceMeta, audio: bytes) -> None:
        _check_audio(meta.id, audio)
        notice = msgspec.json.encode(VoiceEvent("created", meta.id))
        res = int(
            await self._put(
                keys=[self._index, self._audio_key(meta.id)],
                args=[
                    meta.id,
                    msgspec.json.encode(meta),
                    audio,
                    self.max_voices,
                    self.channel,
                    notice,
                ],
            )
        )
        if res == -1:
            raise ValueError(f"voice {meta.id!r} exists already")
        if res <= -2:
            raise VoiceStoreFull(-2 - res, self.max_voices)

    async def meta(self, voice_id: str) -> VoiceMeta | None:
        raw = await self._r.hget(self._index, voice_id)
        return None if raw is None else _meta_decoder.decode(raw)

    async def audio(self, voice_id: str) -> bytes | None:
        raw = await self._r.get(self._audio_key(voice_id))
        if raw is None:
            return None
        data = raw.encode() if isinstance(raw, str) else bytes(raw)
        _check_audio(voice_id, data)
        return data

    async def list(self) -> list[VoiceMeta]:
        raw = await self._r.hvals(self._index)
        metas = [_meta_decoder.decode(r) for r in raw]
        return sorted(metas, key=lambda m: (m.created, m.id))

    async def delete(self, voice_id: str) -> bool:
        notice = msgspec.json.encode(VoiceEvent("deleted", voice_id))
        n = int(
            await self._delete(
                keys=[self._index, self._audio_key(voice_id)],
                args=[voice_id, self.channel, notice],
            )
        )
        self.cache.evict(voice_id, deleted=True)
        return n == 1

    async def _resync(self) -> None:
        """Drop cached voices the store no longer has (notices missed while away)."""
        cached = self.cache.ids()
        if not cached:
            return
        present = await self._r.hmget(self._index, cached)
        for vid, raw in zip(cached, present, strict=True):
            if raw is None and self.cache.evict(vid, deleted=True):
                log.info("voice_evicted", voice=vid, reason="resync")

    async def listen(self, on_event: Listener) -> None:
        while True:
            pubsub: PubSub | None = None
            try:
                if isinstance(self._r, RedisCluster):
                    # Its pubsub takes the node of the channel's slot from the client's
                    # slot map, which only commands load and refresh: one on that slot
                    # (a key named like the channel) finds who serves it now, after a
                    # failover too; otherwise it would subscribe to the dead node forever.
                    await self._r.type(self.channel)
                pubsub = self._r.pubsub()
                await pubsub.subscribe(self.channel)
                await self._resync()
                await _call(on_event, VoiceEvent("resync"))
                while True:
                    # A timeout below the client's socket_timeout: an idle channel is not
                    # a dead connection.
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is None or msg.get("type") != "message":
                        continue
                    try:
                        ev = _event_decoder.decode(msg["data"])
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        log.warning("voice_event_malformed", data=repr(msg["data"])[:200])
                        continue
                    if ev.event == "deleted" and self.cache.evict(ev.id, deleted=True):
                        log.info("voice_evicted", voice=ev.id, reason="deleted")
                    await _call(on_event, ev)
            except (RedisError, RedisClusterException, OSError) as exc:
                # (a cluster's pubsub raises RedisClusterException for a slot it cannot
                # place, which is not a RedisError)
                log.warning("voice_events_lost", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(self.retry_s)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]


def now() -> float:
    return round(time.time(), 3)
