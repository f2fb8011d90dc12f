"""When a conversation must end on its own: timeouts and slow consumers (sans-I/O).

The adapter's watchdog calls ``check`` a few times a second with the time; it
answers with the fault to end the conversation with, or None. The rules:
no ``start`` within ``start_timeout_s``; longer than ``max_session_s`` (counted
from the session's start, across resumes); no client message for
``idle_timeout_s`` while nothing is being spoken; and a slow consumer — unsent
audio over ``max_unsent_audio_s`` for ``slow_consumer_timeout_s``, or a client
that took audio slower than ``slow_consumer_min_rate`` over that window.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sized
from dataclasses import dataclass
from typing import Protocol

from server.config import Settings
from server.conversation.phase import Phase, started
from server.conversation.types import CLOSE_POLICY


class Watched(Protocol):
    """What the rules read: a ``Conversation``, or a dialect connection's contexts
    taken together (server/ws/contexts.py)."""

    @property
    def phase(self) -> Phase: ...

    @property
    def unsent_s(self) -> float: ...

    @property
    def client_unsent_s(self) -> float: ...

    @property
    def outbox(self) -> Sized: ...

    @property
    def audio_s_sent(self) -> float: ...

    @property
    def socket_unsent_s(self) -> float: ...

    def busy(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Fault:
    code: str
    message: str
    close_code: int = CLOSE_POLICY


class Liveness:
    def __init__(self, settings: Settings, connected_at: float) -> None:
        self.settings = settings
        self.connected_at = connected_at  # monotonic; moved back on resume
        self.last_client_msg = connected_at
        self.over_limit_since: float | None = None
        # (time, audio taken by the client's TCP) while audio waits for it
        self._backlog: deque[tuple[float, float]] = deque()

    def client_message(self, now: float) -> None:
        self.last_client_msg = now

    def check(self, conv: Watched, now: float, sending: bool) -> Fault | None:
        """The fault to end ``conv`` with at ``now`` (``sending``: a send is in progress)."""
        return (
            self._timeouts(conv, now)
            or self._unsent(conv, now)
            or self._take_rate(conv, now, sending)
        )

    def _timeouts(self, conv: Watched, now: float) -> Fault | None:
        s = self.settings
        if not started(conv.phase) and now - self.connected_at > s.start_timeout_s:
            return Fault("start_timeout", f"no 'start' within {s.start_timeout_s:g} s")
        if now - self.connected_at > s.max_session_s:
            return Fault(
                "session_too_long", f"session exceeded max_session_s={s.max_session_s:g} s"
            )
        # A flush/end still to run counts as work (F5 runs markers behind other
        # sessions' encoding, so that moment can outlast a watchdog tick).
        if not conv.busy() and now - self.last_client_msg > s.idle_timeout_s:
            return Fault("idle_timeout", f"no message for {s.idle_timeout_s:g} s")
        return None

    def _unsent(self, conv: Watched, now: float) -> Fault | None:
        s = self.settings
        if conv.client_unsent_s < s.max_unsent_audio_s:
            self.over_limit_since = None
            return None
        if self.over_limit_since is None:
            self.over_limit_since = now
        elif now - self.over_limit_since > s.slow_consumer_timeout_s:
            return Fault("slow_consumer", self._slow_message(conv, None))
        return None

    def _take_rate(self, conv: Watched, now: float, sending: bool) -> Fault | None:
        """How fast the client took audio over the last ``slow_consumer_timeout_s``, if
        audio waited for it all that time. A client that stopped reading leaves the
        sender stuck in one send once the socket buffers are full: the unsent-audio
        bound alone never sees it, since the engine stops at that bound."""
        s = self.settings
        waiting = len(conv.outbox) > 0 or sending
        if not waiting or s.slow_consumer_min_rate <= 0:
            self._backlog.clear()
            return None
        window = s.slow_consumer_timeout_s
        b = self._backlog
        taken = conv.audio_s_sent - conv.socket_unsent_s
        b.append((now, taken))
        while len(b) > 1 and b[1][0] <= now - window:
            b.popleft()
        t0, taken0 = b[0]
        if now - t0 < window:
            return None
        rate = max(0.0, taken - taken0) / (now - t0)
        if rate >= s.slow_consumer_min_rate:
            return None
        return Fault("slow_consumer", self._slow_message(conv, rate))

    def _slow_message(self, conv: Watched, rate: float | None) -> str:
        s = self.settings
        took = "" if rate is None else f"took {rate:.2f} s of audio per second and "
        return (
            f"client {took}left audio waiting for over {s.slow_consumer_timeout_s:g} s "
            f"({conv.unsent_s:.1f} s of it not taken by the client's TCP; limits: "
            f"max_unsent_audio_s="
            f"{s.max_unsent_audio_s:g}, slow_consumer_min_rate={s.slow_consumer_min_rate:g})"
        )
