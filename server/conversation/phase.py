"""The conversation's lifecycle: an explicit state with guarded transitions.

::

    AWAITING_START ──start/resume──▶ STREAMING ──end──▶ ENDING
          │                              │                 │
          │                              └──drain (idle)───┤
          │                                                ▼
          │                               CLOSING (close once the outbox is empty)
          ▼                                                │
        CLOSED ◀──── fatal error, drop, or the close ──────┘

STREAMING takes text; ENDING and CLOSING take only acks while their audio plays;
CLOSED takes nothing and drops late engine output.
"""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    AWAITING_START = "awaiting_start"
    STREAMING = "streaming"  # text, flush, cancel, end and acks are taken
    ENDING = "ending"  # 'end' taken (or the node drains): audio of what was sent plays out
    CLOSING = "closing"  # the last audio is queued: close once the outbox is empty
    CLOSED = "closed"  # nothing more: queued work dropped, late output ignored


_ALLOWED: dict[Phase, frozenset[Phase]] = {
    Phase.AWAITING_START: frozenset({Phase.STREAMING, Phase.CLOSED}),
    Phase.STREAMING: frozenset({Phase.ENDING, Phase.CLOSING, Phase.CLOSED}),
    Phase.ENDING: frozenset({Phase.CLOSING, Phase.CLOSED}),
    Phase.CLOSING: frozenset({Phase.CLOSING, Phase.CLOSED}),
    Phase.CLOSED: frozenset(),
}


class TransitionError(RuntimeError):
    """A transition the lifecycle does not allow: a bug in the caller, never the client."""


def check(src: Phase, dst: Phase) -> Phase:
    """``dst`` if the lifecycle allows going there from ``src``; else TransitionError."""
    if dst not in _ALLOWED[src]:
        raise TransitionError(f"conversation cannot go from {src.name} to {dst.name}")
    return dst


def takes_text(phase: Phase) -> bool:
    return phase is Phase.STREAMING


def started(phase: Phase) -> bool:
    return phase is not Phase.AWAITING_START
