"""The core's data: what it is given to resume, and what it answers a fatal error with."""

from __future__ import annotations

from dataclasses import dataclass

from server import protocol as p
from server.engines.base import Audio

# WebSocket close codes (RFC 6455 §7.4.1); other protocols map them to their own.
CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN = 1013
# Private-use code (4000-4999): another connection resumed this session (409: conflict).
CLOSE_SESSION_MOVED = 4409
DRAIN_MESSAGE = (
    "this server is shutting down; reconnect to continue (the load balancer sends new "
    "connections to another node)"
)

Outgoing = tuple[bool, object]  # (True, frame bytes) or (False, a message to send)


@dataclass(frozen=True, slots=True)
class Fatal:
    """The conversation is over: say ``code``/``message`` (with ``resume``), then close."""

    code: str
    message: str
    close_code: int
    resume: p.ResumeHint | None = None


@dataclass(slots=True)
class ResumedChunk:
    """The chunk a resumed session was in the middle of, with its journaled audio."""

    index: int
    text: str
    audio: Audio
    skip_frames: int  # frames of it the old connection already sent


@dataclass(slots=True)
class Restore:
    """A resumed conversation's state, read from the journal by the adapter."""

    session_id: str
    next_frame: int  # the first frame to send (replayed frames are numbered from it)
    segments: int
    chars_in: int
    marks_in: int
    carry: bytes  # the framer's remainder after the last committed chunk
    replay: list[tuple[str, bytes]]  # (segment message or "", frame) from next_frame on
    text: str  # all text accepted; done_chars of it already spoken
    done_chars: int
    marks: list[tuple[int, str]]  # (offset, kind) of the marks not yet done
    chunk: ResumedChunk | None  # the chunk in progress, to finish from its engine audio
    finished: bool  # 'end' was done: only the replay is left
