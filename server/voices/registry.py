"""The node-local side of uploaded voices: getting them from the shared store into the
engine that speaks them, and keeping that bounded cache honest.

- ``visible`` / ``deletable``: who may see and use, and who may delete, an uploaded
  voice (see "Owners" below).
- ``ensure_voice``: a session (or request) about to use a voice calls it. For an
  uploaded voice it reads the metadata from the store (check-on-use: a voice deleted
  on another node is refused here even if the delete notice was missed), checks that
  the caller's key may use it, and loads the voice into the engine's cache when this
  node does not have it ready.
- ``follow``: a task per node. It hears the store's notices: a delete evicts (the
  store does that), a creation elsewhere is prepared here at once, and on start and
  after every reconnection the newest voices are prepared up to the cache's size, so
  a session that names a voice usually finds it ready.

Owners. An uploaded voice belongs to the API key that uploaded it (``VoiceMeta.owner``,
the key id the access layer gives: ``server.auth.key_of``). With keys configured, a
voice exists only for its owner (setting ``voice_sharing: private``, the default): to
any other key it is answered exactly like an id that was never uploaded (404
``voice_not_found`` over HTTP, ``unknown_voice`` on the WebSocket, absent from
listings), so nothing tells a key that another key's voice exists. With
``voice_sharing: shared`` every key lists and speaks with every voice, and only the
owner deletes it. Built-in voices are everyone's. On an open server (no keys, so no
key id) everything is everyone's, as before owners existed.

A voice without an owner (uploaded while the server was open, or stored before voices
had owners) is treated as the operator's and shared: every key sees, uses and may
delete it, which is exactly how it behaved before, so an upgrade neither hides voices
that sessions use nor leaves records that no key can remove (they would still count
against ``voice_max_count``). To make such a voice private, upload it again with the
key that should own it and delete the old one.

The F5 engine reads uploaded voices from ``store.cache`` (installed as
``F5Engine.uploaded`` at start-up), so ``engine.voices()`` and ``engine.voice()``
know every voice this node has ready.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import structlog
from redis.exceptions import RedisError

from server.engines.base import EngineError, from_pcm16
from server.state.voices import VoiceEvent, VoiceMeta
from server.voices.ids import VOICE_ID as VOICE_ID
from server.voices.ids import is_uploaded_id as is_uploaded_id
from server.voices.ids import server_voices as server_voices

if TYPE_CHECKING:
    from server.appstate import AppState
    from server.engines.base import Audio, Engine

log = structlog.get_logger("voxwire.voices")


@runtime_checkable
class CloningEngine(Protocol):
    """An engine that can speak uploaded voices (F5)."""

    uploaded: Any

    def prepare_uploaded(
        self, voice_id: str, name: str, language: str, transcript: str, audio: Audio
    ) -> Any: ...


def cloning_engines(state: AppState) -> dict[str, CloningEngine]:
    return {n: e for n, e in state.engines.items() if isinstance(e, CloningEngine)}


def install(state: AppState) -> None:
    """Point every cloning engine at this node's cache of prepared voices."""
    for engine in cloning_engines(state).values():
        engine.uploaded = state.voices.cache


async def load(state: AppState, meta: VoiceMeta) -> bool:
    """Prepare ``meta``'s voice from the store into its engine's cache (once, however
    many ask at the same time). False when the voice is gone from the store. Raises
    VoiceError (reference unusable), EngineError, RedisError/OSError."""
    cache = state.voices.cache
    if meta.id in cache:
        return True
    task = cache.pending.get(meta.id)
    if task is None:
        task = asyncio.ensure_future(_load(state, meta))
        cache.pending[meta.id] = task
        task.add_done_callback(lambda _t: cache.pending.pop(meta.id, None))
    return bool(await asyncio.shield(task))


async def _load(state: AppState, meta: VoiceMeta) -> bool:
    engine = cloning_engines(state).get(meta.engine)
    if engine is None:
        raise EngineError(
            "unknown_voice", f"engine {meta.engine!r} of voice {meta.id!r} is not on this node"
        )
    pcm = await state.voices.audio(meta.id)
    if pcm is None:
        return False
    prepared = await asyncio.to_thread(
        engine.prepare_uploaded,
        meta.id,
        meta.name,
        meta.language,
        meta.transcript,
        from_pcm16(pcm),
    )
    out = state.voices.cache.put(meta.id, prepared, meta)
    log.info("voice_loaded", voice=meta.id, engine=meta.engine, pushed_out=out)
    return meta.id in state.voices.cache


def visible(state: AppState, meta: VoiceMeta, key_id: str | None) -> bool:
    """Whether the caller authenticated as ``key_id`` (None: an open server) may see and
    speak with the uploaded voice ``meta`` (see "Owners" in the module docstring)."""
    if key_id is None or meta.owner is None:
        return True
    return meta.owner == key_id or state.settings.voice_sharing == "shared"


def deletable(meta: VoiceMeta, key_id: str | None) -> bool:
    """Whether ``key_id`` may delete ``meta``'s voice: its owner's, or anyone's when the
    voice has no owner (see "Owners" in the module docstring)."""
    return key_id is None or meta.owner is None or meta.owner == key_id


def no_voice(voice_id: str) -> str:
    """The message for a voice that does not exist for the caller: the same whether it
    never existed, was deleted, or belongs to another key."""
    return f"there is no voice {voice_id!r} (deleted, or never existed)"


async def ensure_voice(
    state: AppState, engine_name: str, voice_id: str, key_id: str | None = None
) -> tuple[str, str] | None:
    """Make ``voice_id`` ready on ``engine_name`` if it is an uploaded voice that
    ``key_id`` may use.

    ``key_id``: the id of the API key of the caller (``server.auth.key_of(scope)``);
    None on an open server, where every voice is everyone's. A voice of another key
    (unless ``voice_sharing`` is ``shared``) is refused exactly like one that does not
    exist.

    Returns None when the session may go on (the voice is ready, or it is not an
    uploaded voice, which the engine's own voice list decides), else ``(code,
    message)`` for the client's error: ``unknown_voice``, ``state_unavailable`` (the
    store cannot be read and this node does not have the voice) or ``not_ready``.
    """
    if not is_uploaded_id(voice_id):
        return None
    cache = state.voices.cache
    try:
        meta = await state.voices.meta(voice_id)
    except (RedisError, OSError) as exc:
        # Keep serving what this node has while the store is away, to whom it may; the
        # owner comes from the metadata the voice was cached with. Anyone else gets the
        # answer an id that is not here gets, so an outage reveals nothing either.
        cached = cache.meta(voice_id)
        if voice_id in cache and (
            key_id is None or (cached is not None and visible(state, cached, key_id))
        ):
            log.warning("voice_check_skipped", voice=voice_id, error=repr(exc))
            return None
        return (
            "state_unavailable",
            f"voice {voice_id!r} is not loaded on this node and the voice store (Redis) is "
            "not reachable; retry shortly",
        )
    if meta is None:
        cache.evict(voice_id, deleted=True)
        return ("unknown_voice", no_voice(voice_id))
    if not visible(state, meta, key_id):
        log.info("voice_not_visible", voice=voice_id, key_id=key_id)
        return ("unknown_voice", no_voice(voice_id))
    if meta.engine != engine_name:
        return (
            "unknown_voice",
            f"voice {voice_id!r} is a voice of engine {meta.engine!r}, not {engine_name!r}; "
            f'start with "engine": "{meta.engine}"',
        )
    if voice_id in cache:
        return None
    if not state.ready:
        return ("not_ready", "engines are still loading; retry shortly")
    try:
        found = await load(state, meta)
    except (RedisError, OSError):
        return ("state_unavailable", "the voice store (Redis) is not reachable; retry shortly")
    except (EngineError, ValueError) as exc:
        return ("unknown_voice", f"voice {voice_id!r} cannot be used on this node: {exc}")
    if not found:
        return ("unknown_voice", no_voice(voice_id))
    return None


async def _preload(state: AppState) -> None:
    """The newest voices of this node's engines, up to the cache's size."""
    cache = state.voices.cache
    engines = cloning_engines(state)
    metas = [m for m in await state.voices.list() if m.engine in engines]
    for meta in list(reversed(metas))[: cache.size]:
        if meta.id not in cache:
            await _try_load(state, meta)


async def _try_load(state: AppState, meta: VoiceMeta) -> None:
    try:
        await load(state, meta)
    except (RedisError, OSError):
        raise
    except Exception as exc:  # one bad voice must not stop the others
        log.error("voice_load_failed", voice=meta.id, error=f"{type(exc).__name__}: {exc}")


async def follow(state: AppState) -> None:
    """Run until cancelled (see the module docstring)."""
    if not cloning_engines(state):
        return
    while not state.ready:  # voices are prepared on the loaded engine
        if state.load_error:
            return
        await asyncio.sleep(0.1)

    async def on_event(ev: VoiceEvent) -> None:
        if ev.event == "resync":
            await _preload(state)
        elif ev.event == "created" and ev.id not in state.voices.cache:
            meta = await state.voices.meta(ev.id)
            if meta is not None and meta.engine in cloning_engines(state):
                await _try_load(state, meta)

    await state.voices.listen(on_event)


def engine_of(state: AppState, voice_id: str) -> Engine | None:
    """The engine that lists ``voice_id`` on this node."""
    for engine in state.engines.values():
        if any(v.id == voice_id for v in engine.voices()):
            return engine
    return None
