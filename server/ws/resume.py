"""Resume on the native protocol: check the token, take the session over in the store,
and turn its journal into the ``Restore`` the conversation core continues from.

A refused resume leaves the session be: it is checked (``peek``) before the
takeover, and again after it, since the old node may have written (and trimmed
its replay window) in between.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
from redis.exceptions import RedisError

from server import protocol as p
from server.admission import UNAVAILABLE
from server.conversation.types import CLOSE_POLICY, Restore, ResumedChunk
from server.engines.base import from_pcm16
from server.state.sessions import (
    Peek,
    ResumeUnavailable,
    SessionStore,
    Snapshot,
    StoredFrame,
    TokenUsed,
)
from server.state.tokens import ResumeTokenError

if TYPE_CHECKING:
    from server.appstate import AppState


class SessionMeta(msgspec.Struct, kw_only=True):
    """A session's resolved settings, journaled so that another node can take it over."""

    engine: str
    voice: str
    language: str | None
    speed: float
    output: p.OutputFormat
    started_at: float  # wall clock: max_session_s counts from here, across resumes
    timings: bool = False  # start.timings: "word"
    options: p.EngineOptions | None = None  # start.engine_options


class Refused(Exception):
    """The resume is refused: say ``code``/``message`` and close with ``close_code``."""

    def __init__(self, code: str, message: str, close_code: int = CLOSE_POLICY) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code


@dataclass(slots=True)
class TakenOver:
    snap: Snapshot
    meta: SessionMeta
    first: int  # the first frame to send
    frames: list[StoredFrame]  # the replay, from ``first``


def replay_frames(replay_window_s: float, frame_ms: int) -> int:
    """How many frames the journal keeps for a replay."""
    return max(1, math.ceil(replay_window_s * 1000 / frame_ms))


def first_frame(r: p.ResumeRequest, acked: int) -> int:
    """Where a resume starts: ``from_frame``, else one past the last acked frame."""
    return r.from_frame if r.from_frame is not None else acked + 1


def check(r: p.ResumeRequest, peek: Peek, replay_window_s: float) -> tuple[str, str] | None:
    first = first_frame(r, peek.acked)
    if first > peek.frames:
        return (
            "invalid_resume",
            f"from_frame {first} is past the {peek.frames} frames the session has sent",
        )
    if first < peek.frames and (peek.oldest is None or peek.oldest > first):
        oldest = peek.frames if peek.oldest is None else peek.oldest
        return (
            "replay_unavailable",
            f"frame {first} is no longer kept: the replay window (replay_window_s="
            f"{replay_window_s:g}) now starts at frame {oldest}",
        )
    return None


async def take_over(
    state: AppState, r: p.ResumeRequest, key_id: str | None, owner: str
) -> TakenOver:
    """Take session ``r.session_id`` over for ``owner``; raises ``Refused``."""
    store = state.session_store
    if store is None:
        raise Refused(
            "resume_disabled",
            "this server keeps no session state (resume_window_s=0); start a new session",
        )
    try:
        epoch = state.resume_tokens.verify(r.token, r.session_id, key_id)
    except ResumeTokenError as exc:
        raise Refused(exc.code, exc.message) from None
    try:
        return await _take(state, store, r, owner, epoch)
    except TokenUsed:
        raise Refused(
            "resume_token_used",
            f"this resume token of session {r.session_id!r} was used already (a token is "
            "good for one resume; use the one from the newest 'ready')",
        ) from None
    except ResumeUnavailable:
        raise Refused(
            "resume_unavailable",
            f"session {r.session_id!r} cannot be resumed: the state store failed while "
            "it ran, so its saved state is incomplete; start a new session",
        ) from None
    except (RedisError, OSError):
        u = UNAVAILABLE
        raise Refused(u.code, u.message, u.ws_close) from None


async def _take(
    state: AppState, store: SessionStore, r: p.ResumeRequest, owner: str, epoch: int
) -> TakenOver:
    sid = r.session_id
    window = state.settings.replay_window_s
    expired = Refused(
        "session_expired",
        f"session {sid!r} is not known: it ended, or its state expired "
        f"(resume_window_s={state.settings.resume_window_s:g} s after its connection "
        "dropped)",
    )
    peek = await store.peek(sid)
    if peek is None:
        raise expired
    problem = check(r, peek, window)
    if problem is not None:
        raise Refused(*problem)
    snap = await store.takeover(sid, owner, epoch)
    if snap is None:
        raise expired
    first = first_frame(r, snap.acked)
    frames = await store.frames_from(sid, first) if first < snap.frames else []
    # again: the old node may have written (and trimmed) in between
    oldest = frames[0].n if frames else None
    problem = check(r, Peek(frames=snap.frames, acked=snap.acked, oldest=oldest), window)
    if problem is not None:
        raise Refused(*problem)
    meta = msgspec.json.decode(snap.meta, type=SessionMeta)
    return TakenOver(snap, meta, first, frames)


def restore_of(t: TakenOver) -> Restore:
    """What the conversation continues from: the replay, and the text still to speak."""
    snap = t.snap
    chunk = None
    if snap.chunk is not None:
        ch = snap.chunk
        text = snap.text[snap.done_chars : snap.done_chars + ch.chars]
        chunk = ResumedChunk(ch.index, text, from_pcm16(ch.pcm), snap.frames - ch.first)
    return Restore(
        session_id=snap.session_id,
        next_frame=t.first,
        segments=snap.segments,
        chars_in=len(snap.text),
        marks_in=len(snap.marks),
        carry=snap.carry,
        replay=[(f.message, f.audio) for f in t.frames],
        text=snap.text,
        done_chars=snap.done_chars,
        marks=list(snap.marks[snap.marks_done :]),
        chunk=chunk,
        finished=snap.finished,
    )


def started_at(meta: SessionMeta, now_monotonic: float) -> float:
    """The session's start on this node's monotonic clock (max_session_s is the
    session's, not the connection's)."""
    return now_monotonic - max(0.0, time.time() - meta.started_at)
