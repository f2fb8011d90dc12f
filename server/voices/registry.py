"""The node-local side of uploaded voices: getting them from the shared store into the
engine that speaks them, and keeping that bounded cache honest.

- ``ensure_voice``: a session (or request) about to use a voice calls it. For an
  uploaded voice it reads the metadata from the store (check-on-use: a voice deleted
  on another node is refused here even if the delete notice was missed), and loads
  the voice into the engine's cache when this node does not have it ready.
- ``follow``: a task per node. It hears the store's notices: a delete evicts (the
  store does that), a creation elsewhere is prepared here at once, and on start and
  after every reconnection the newest voices are prepared up to the cache's size, so
  a session that names a voice usually finds it ready.

The F5 engine reads uploaded voices from ``store.cache`` (installed as
``F5Engine.uploaded`` at start-up), so ``engine.voices()`` and ``engine.voice()``
know every voice this node has ready.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import structlog
from redis.exceptions import RedisError

from server.engines.base import EngineError, from_pcm16
from server.state.voices import VoiceEvent, VoiceMeta

if TYPE_CHECKING:
    from server.app import AppState
    from server.engines.base import Audio, Engine

log = structlog.get_logger("voxwire.voices")

# "v_" + secrets.token_urlsafe(12): the only shape an uploaded voice id has. Anything
# else never reaches the store.
VOICE_ID = re.compile(r"v_[A-Za-z0-9_-]{16}")


@runtime_checkable
class CloningEngine(Protocol):
    """An engine that can speak uploaded voices (F5)."""

    uploaded: Any

    def prepare_uploaded(
        self, voice_id: str, name: str, language: str, transcript: str, audio: Audio
    ) -> Any: ...


def is_uploaded_id(voice_id: str) -> bool:
    return VOICE_ID.fullmatch(voice_id) is not None


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
    out = state.voices.cache.put(meta.id, prepared)
    log.info("voice_loaded", voice=meta.id, engine=meta.engine, pushed_out=out)
    return meta.id in state.voices.cache


async def ensure_voice(state: AppState, engine_name: str, voice_id: str) -> tuple[str, str] | None:
    """Make ``voice_id`` ready on ``engine_name`` if it is an uploaded voice.

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
        if voice_id in cache:  # keep serving what this node has while the store is away
            log.warning("voice_check_skipped", voice=voice_id, error=repr(exc))
            return None
        return (
            "state_unavailable",
            f"voice {voice_id!r} is not loaded on this node and the voice store (Redis) is "
            "not reachable; retry shortly",
        )
    if meta is None:
        cache.evict(voice_id, deleted=True)
        return ("unknown_voice", f"there is no voice {voice_id!r} (deleted, or never existed)")
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
        return ("unknown_voice", f"there is no voice {voice_id!r} (deleted, or never existed)")
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
