"""The Starlette application: routes, engine start-up and shared state."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from server import engine_metrics, openapi, speech, voices_api
from server.access import AccessControl, mint_token
from server.appstate import AppState as AppState  # re-exported until every user imports appstate
from server.auth import AuthError, KeyRing, Tokens, parse_keys
from server.config import Settings
from server.cpus import usable_cpus
from server.engines.base import Engine
from server.engines.f5.engine import F5Engine
from server.engines.piper import PiperEngine
from server.engines.process import ProcessEngine
from server.engines.worker import EngineWorker
from server.http_metrics import HttpMetrics
from server.limits import LimitConfig, Limits, MemoryLimits, RedisLimits
from server.responses import EnginesResponse, option_ranges, outputs
from server.rtp.policy import parse_allowlist
from server.rtp.sender import RtpGate
from server.state.sessions import MemorySessionStore, RedisSessionStore
from server.state.tokens import ResumeTokens, shared_secret
from server.state.voices import MemoryVoiceStore, RedisVoiceStore, VoiceCache, VoiceStore
from server.streaming.chunker import ChunkPolicy
from server.text import for_piper
from server.voices import registry as voice_registry
from server.voices.ids import server_voices
from server.ws import dialect_routes
from server.ws.native import NativeSession

if TYPE_CHECKING:
    from server.state.connect import StateRedis

log = structlog.get_logger("voxwire.app")

# The browser demo: plain files, no build step, nothing fetched from the internet.
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def _split(spec: str) -> frozenset[str]:
    return frozenset(s.strip().rstrip("/") for s in spec.split(",") if s.strip())


def access_state(settings: Settings) -> dict[str, Any]:
    """Keys, tokens, limits and origins from the settings (Redis-backed when Redis is on)."""
    redis = None
    cfg = LimitConfig(
        sessions=settings.key_max_sessions,
        requests_per_minute=settings.key_requests_per_minute,
        chars_per_day=settings.key_chars_per_day,
    )
    limits: Limits = MemoryLimits(cfg)
    if settings.redis_url:
        from server.state.connect import redis_client

        redis = redis_client(settings.redis_url, settings.redis_timeout_s, settings.redis_retries)
        limits = RedisLimits(cfg, redis, settings.redis_prefix)
    return {
        "keys": KeyRing(
            parse_keys(settings.api_keys),
            redis,
            f"{settings.redis_prefix}api_keys",
            required=settings.require_api_keys,
        ),
        "tokens": Tokens(settings.token_secret, settings.token_max_ttl_s),
        "limits": limits,
        "allowed_origins": _split(settings.allowed_origins),
        "redis": redis,
    }


def voice_store(settings: Settings, redis: StateRedis | None) -> VoiceStore:
    """Redis when ``redis_url`` is set (every node sees every voice), else memory."""
    cache: VoiceCache[Any] = VoiceCache(settings.voice_cache_size)
    if redis is not None:
        return RedisVoiceStore(redis, settings.redis_prefix, cache, settings.voice_max_count)
    return MemoryVoiceStore(cache, settings.voice_max_count)


def chunk_policy(settings: Settings) -> ChunkPolicy:
    """The chunker's policy from the settings; lengths that the hard maximum
    undercuts shrink with it."""
    d = ChunkPolicy()
    return ChunkPolicy(
        first_min_words=settings.chunk_first_min_words,
        hurry_words=settings.chunk_hurry_words,
        max_chars=settings.chunk_max_chars,
        first_max_chars=min(d.first_max_chars, settings.chunk_max_chars),
        max_target_chars=min(d.max_target_chars, settings.chunk_max_chars),
    )


def _worker_threads(name: str, settings: Settings) -> int:
    """Threads of an engine's worker. The zero-cost engine makes no audio work of its
    own (it stands in for a GPU's): its threads only resample and encode, so there is
    one per usable CPU, not one per engine process's share of them."""
    if name == "replay" and not settings.engine_threads:
        return usable_cpus()
    return settings.engines()


def _verbalizes(engine: str, settings: Settings) -> bool:
    return engine == "piper" and settings.text_normalization


def build_engines(settings: Settings) -> dict[str, Engine]:
    piper: Engine
    if settings.engine_isolation == "process":
        # Piper's espeak-ng front end can segfault on odd text: it runs in supervised
        # processes, so a crash costs one chunk, not the node (issue 11).
        from server.engines.process import ProcessEngine, ProcessOptions

        piper = ProcessEngine("piper", ProcessOptions.from_settings(settings))
    else:
        from server.engines.piper_voices import PiperOptions

        piper = PiperEngine(PiperOptions.from_settings(settings, settings.engine_cpu_threads()))
    engines: dict[str, Engine] = {"piper": piper}
    if settings.replay_engine:
        from server.engines.replay import ReplayEngine

        engines["replay"] = ReplayEngine(piper)
    if settings.f5_enabled:  # F5-TTS voice cloning (issue 3; the voxwire[f5] extra)
        from server.engines.f5.options import F5Options

        engines["f5"] = F5Engine(F5Options.from_settings(settings))
    if settings.engine not in engines:
        raise ValueError(
            f"unknown engine {settings.engine!r}; available: {', '.join(sorted(engines))}"
        )
    return engines


def _load_and_warm(state: AppState) -> None:
    """Runs on a thread: load every engine, then synthesize once so the first
    session does not pay for lazy initialisation."""
    for name, engine in state.engines.items():
        t0 = time.perf_counter()
        engine.load()
        load_s = time.perf_counter() - t0
        voices = {v.id for v in engine.voices()}
        if name == state.settings.engine and state.settings.voice not in voices:
            raise ValueError(
                f"engine {name!r} has no voice {state.settings.voice!r}; "
                f"available: {', '.join(sorted(voices))}"
            )
        warm_s = 0.0
        if state.settings.warmup:
            t1 = time.perf_counter()
            try:
                for _ in engine.synthesize("Warming up.", engine.info().default_voice, 1.0):
                    pass
            except Exception as exc:
                if name == state.settings.engine:
                    raise
                # A failing extra engine (F5 without its checkpoint) must not keep the
                # server down: its sessions fail over to the default engine.
                log.error("engine_warmup_failed", engine=name, error=f"{type(exc).__name__}: {exc}")
            warm_s = time.perf_counter() - t1
        log.info("engine_loaded", engine=name, load_s=round(load_s, 3), warmup_s=round(warm_s, 3))


async def _start_state(state: AppState) -> None:
    """The session store and the resume secret (shared through Redis when it is on)."""
    s = state.settings
    if s.resume_window_s <= 0:
        return
    ttl = s.resume_window_s
    if state.redis is not None:
        state.session_store = RedisSessionStore(state.redis, s.redis_prefix, ttl)
    else:
        state.session_store = MemorySessionStore(ttl)
    if s.token_secret:
        secret = s.token_secret.encode()
    elif state.redis is not None:
        secret = await shared_secret(state.redis, f"{s.redis_prefix}resume_secret")
    else:
        secret = secrets.token_bytes(32)
    state.resume_tokens = ResumeTokens(secret)


async def _check_store(state: AppState) -> None:
    """Watch Redis: while it does not answer, new sessions are refused (1013); sessions
    in progress go on. redis-py reconnects by itself, so recovery needs nothing more."""
    redis = state.redis
    if redis is None:
        return
    interval = state.settings.state_check_interval_s
    while True:
        try:
            async with asyncio.timeout(max(interval, 0.5)):
                await redis.ping()
            ok = True
        except (RedisError, OSError, TimeoutError) as exc:
            ok = False
            if state.store_ok:
                log.error("state_store_unavailable", error=f"{type(exc).__name__}: {exc}")
        if ok and not state.store_ok:
            log.info("state_store_recovered")
        state.store_ok = ok
        state.metrics.state_store_up.set(1 if ok else 0)
        await asyncio.sleep(interval)


def create_app(settings: Settings, engines: dict[str, Engine] | None = None) -> Starlette:
    access = access_state(settings)
    state = AppState(
        settings=settings,
        engines=engines or build_engines(settings),
        chunk_policy=chunk_policy(settings),
        voices=voice_store(settings, access["redis"]),
        rtp=RtpGate(
            parse_allowlist(settings.rtp_allowed_destinations),
            settings.rtp_streams_per_minute,
            settings.rtp_max_streams,
        ),
        **access,
    )
    voice_registry.install(state)
    for engine in state.engines.values():
        # F5: its generation host (issue 11); Piper in this process says itself which
        # voices it holds (in engine processes, their host does)
        if isinstance(engine, ProcessEngine | F5Engine | PiperEngine):
            engine.events = state.metrics.engine_event
    engine_metrics.watch_engines(state.metrics, state.engines)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for name, engine in state.engines.items():
            gauge = state.metrics.queue_depth.labels(name)
            if name == "f5":  # one batching worker per F5 device (issue 3)
                from server.engines.f5.batch_worker import make_worker

                worker: EngineWorker = make_worker(
                    engine, settings, state.metrics.registry, gauge.set
                )
            else:
                worker = EngineWorker(
                    engine,
                    _worker_threads(name, settings),
                    on_queue_depth=gauge.set,
                    on_output_cut=state.metrics.engine_output_cut.labels(name).inc,
                    # espeak-ng misreads currency, dates, units (docs/normalization.md)
                    verbalize=for_piper if _verbalizes(name, settings) else None,
                )
            worker.start()
            state.workers[name] = worker
        engine_metrics.install(state.metrics, state.workers)

        async def load() -> None:
            try:
                await asyncio.to_thread(_load_and_warm, state)
            except Exception as exc:
                state.load_error = f"{type(exc).__name__}: {exc}"
                log.error("engine_load_failed", error=state.load_error)
                return
            state.ready = True
            log.info("ready")

        await _start_state(state)
        loader = asyncio.create_task(load())
        voice_follower = asyncio.create_task(voice_registry.follow(state))
        checker = asyncio.create_task(_check_store(state))
        try:
            yield
        finally:
            loader.cancel()
            voice_follower.cancel()
            checker.cancel()
            for w in state.workers.values():
                await w.stop()
            for engine in state.engines.values():
                if isinstance(engine, ProcessEngine | F5Engine):
                    await asyncio.to_thread(engine.close)
            if state.redis is not None:
                await state.redis.aclose()

    async def health(request: Request) -> Response:
        if state.draining:  # readiness fails first, so the load balancer moves on
            return JSONResponse({"status": "draining"}, status_code=503)
        if state.store_ok:  # (a Redis that is down is the store check's to report)
            with contextlib.suppress(AuthError, RedisError, OSError):
                await state.keys.enabled()
        if state.keys.lost is not None:  # keys expected but gone from Redis: serves nothing
            lost = {"status": "access_rules_lost", "error": state.keys.lost}
            return JSONResponse(lost, status_code=503)
        if state.ready:
            return JSONResponse({"status": "ok"})
        body = {"status": "error" if state.load_error else "loading"}
        if state.load_error:
            body["error"] = state.load_error
        return JSONResponse(body, status_code=503)

    async def engines_route(request: Request) -> Response:
        infos = [
            msgspec.structs.replace(e.info(), voices=[v.id for v in server_voices(e)])
            for e in state.engines.values()
        ]
        body = EnginesResponse(
            default=settings.engine, engines=infos, options=option_ranges(), outputs=outputs()
        )
        return Response(msgspec.json.encode(body), media_type="application/json")

    openapi_body = msgspec.json.encode(openapi.document())

    async def openapi_route(request: Request) -> Response:
        return Response(openapi_body, media_type="application/json")

    async def metrics_route(request: Request) -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def stream(ws: WebSocket) -> None:
        await NativeSession(ws, state).run()

    async def root(request: Request) -> Response:
        # keep the query: /?token=… must reach the page
        query = request.url.query
        return RedirectResponse("/demo/" + ("?" + query if query else ""), status_code=307)

    async def docs_root(request: Request) -> Response:
        return RedirectResponse("/docs/", status_code=307)

    static = Path(settings.static_dir) if settings.static_dir else STATIC_DIR
    middleware = [Middleware(AccessControl, state=state)]
    if settings.cors_origins:
        # outermost, so browsers' preflight requests are answered without a key
        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=sorted(_split(settings.cors_origins)),
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type"],
            ),
        )
    # outermost of all: every request is counted and timed, refused or not
    middleware.insert(0, Middleware(HttpMetrics, metrics=state.metrics))
    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/engines", engines_route),
            *voices_api.ROUTES,  # /v1/voices… (issue 4)
            Route("/metrics", metrics_route),
            WebSocketRoute("/v1/stream", stream),
            WebSocketRoute(
                "/v1/text-to-speech/{voice_id}/stream-input", dialect_routes.elevenlabs_single
            ),
            WebSocketRoute(
                "/v1/text-to-speech/{voice_id}/multi-stream-input", dialect_routes.elevenlabs_multi
            ),
            WebSocketRoute("/v1/speak", dialect_routes.deepgram),
            WebSocketRoute("/tts/websocket", dialect_routes.cartesia),
            Route("/v1/audio/speech", speech.speech, methods=["POST"]),
            Route("/v1/models", speech.models),
            Route("/v1/tokens", mint_token, methods=["POST"]),
            Route("/openapi.json", openapi_route),
            Route("/docs", docs_root),
            Mount("/docs", StaticFiles(directory=static / "docs", html=True), name="docs"),
            Route("/", root),
            Route("/demo", root),
            Mount(
                "/demo",
                StaticFiles(directory=static / "demo", html=True, check_dir=False),
                name="demo",
            ),
        ],
        lifespan=lifespan,
        middleware=middleware,
    )
    app.state.voxwire = state
    return app
