"""The application's shared state: one ``AppState`` per app, handed to every route,
session and background task.

It lives apart from server.app (the Starlette application) so that the modules
that take the state (sessions, speech, voices, drain, access) need not import the
web application, and the application's import graph stays a tree. It imports
nothing from the web layer: live sessions are typed by what the app does with
them (``LiveSession``), not by the WebSocket session class.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from server.auth import KeyRing, Tokens
from server.limits import LimitConfig, Limits, MemoryLimits
from server.metrics import Metrics
from server.rtp.sender import RtpGate
from server.state.tokens import ResumeTokens
from server.state.voices import MemoryVoiceStore, VoiceCache, VoiceStore
from server.streaming.chunker import ChunkPolicy

if TYPE_CHECKING:
    from server.config import Settings
    from server.engines.base import Engine
    from server.engines.worker import EngineWorker
    from server.state.connect import StateRedis
    from server.state.sessions import SessionStore


class LiveSession(Protocol):
    """What the node does with a session open on it: drain it on shutdown
    (server.drain) and tell it when another connection resumed it elsewhere."""

    @property
    def session_id(self) -> str: ...

    closed: asyncio.Event  # set once the session has finished

    def begin_drain(self) -> None:
        """Close now if idle, else once the utterance in progress is done."""

    async def drain_now(self) -> None:
        """The drain's grace period is over: close whatever is still running."""

    def moved(self) -> None:
        """Another connection took the session over: stop working on it."""


@dataclass
class AppState:
    settings: Settings
    engines: dict[str, Engine]
    metrics: Metrics = field(default_factory=Metrics)
    workers: dict[str, EngineWorker] = field(default_factory=dict)
    ready: bool = False
    load_error: str | None = None
    chunk_policy: ChunkPolicy = field(default_factory=ChunkPolicy)
    keys: KeyRing = field(default_factory=lambda: KeyRing(()))
    tokens: Tokens = field(default_factory=lambda: Tokens("", 600.0))
    limits: Limits = field(default_factory=lambda: MemoryLimits(LimitConfig()))
    allowed_origins: frozenset[str] = frozenset()
    redis: StateRedis | None = None
    draining: bool = False
    sessions: set[LiveSession] = field(default_factory=set)
    # Uploaded voices (issue 4): the shared store, with this node's cache of prepared ones.
    voices: VoiceStore = field(default_factory=lambda: MemoryVoiceStore(VoiceCache(32)))
    # Resume (issue 4): session journals, their tokens, and whether the store answers.
    session_store: SessionStore | None = None
    resume_tokens: ResumeTokens = field(default_factory=lambda: ResumeTokens(b""))
    store_ok: bool = True
    # RTP out (issue 14): the destination policy and its counters.
    rtp: RtpGate = field(default_factory=lambda: RtpGate((), 0, 0))
