"""A dialect connection's contexts: one conversation core each (sans-I/O).

It keeps the contexts in the order they opened (the sender serves them in that
order), enforces the dialect's limit on how many are open at once, ends them the
dialect's two ways (finish: speak the rest; stop: barge-in and end), and gives
the liveness rules one view of them all.
"""

from __future__ import annotations

from dataclasses import dataclass

from server import protocol as p
from server.conversation.core import Conversation
from server.conversation.phase import Phase
from server.dialects.intents import Wire


class Contexts:
    @dataclass(slots=True, eq=False)
    class Entry:
        ctx: str
        conv: Conversation
        stopped: bool = False  # ended by a barge-in: its final message says so

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, Contexts.Entry] = {}
        self._said: list[Wire] = []  # connection-level messages (errors) to send
        self.opened = 0
        self.ttfa: list[float] = []
        # what contexts already gone had sent (the view adds them up)
        self._gone_audio_s = 0.0
        self._gone_bytes = 0

    # ------------------------------------------------------------------ registry

    def check_room(self, ctx: str) -> None:
        if ctx in self._open:
            raise p.ProtocolError("context_exists", f"context {ctx!r} is already open")
        if len(self._open) >= self.limit:
            raise p.ProtocolError(
                "max_active_conversations",
                f"at most {self.limit} contexts may be open on one connection; close one "
                f"before opening {ctx!r}",
            )

    def add(self, ctx: str, conv: Conversation) -> None:
        self._open[ctx] = Contexts.Entry(ctx, conv)
        self.opened += 1

    def get(self, ctx: str) -> Contexts.Entry | None:
        return self._open.get(ctx)

    def all(self) -> list[Contexts.Entry]:
        return list(self._open.values())

    def open(self) -> list[Contexts.Entry]:
        """Contexts that still take text."""
        return [c for c in self._open.values() if c.conv.phase is Phase.STREAMING]

    def any(self) -> bool:
        return bool(self._open)

    def remove(self, c: Contexts.Entry) -> None:
        if self._open.get(c.ctx) is c:
            del self._open[c.ctx]
        self._gone_audio_s += c.conv.audio_s_sent
        self._gone_bytes += c.conv.bytes_sent
        self.ttfa.extend(c.conv.ttfa)
        c.conv.close()

    def close_all(self) -> None:
        for c in list(self._open.values()):
            self.remove(c)

    # ------------------------------------------------------------------ endings

    def finish(self, c: Contexts.Entry) -> None:
        """Speak what the context has, then its final message."""
        if c.conv.phase is Phase.STREAMING:
            c.conv.end()

    def stop(self, c: Contexts.Entry) -> None:
        """Barge-in and end: its audio stops now and its final message follows."""
        conv = c.conv
        if conv.phase is Phase.STREAMING:
            conv.end()
        c.stopped = True
        conv.cancel()

    # ------------------------------------------------------------------ connection messages

    def say(self, w: Wire) -> None:
        self._said.append(w)

    def take_said(self) -> list[Wire]:
        said, self._said = self._said, []
        return said

    # ------------------------------------------------------------------ one view for liveness

    def bytes_sent(self) -> int:
        return self._gone_bytes + sum(c.conv.bytes_sent for c in self._open.values())

    def view(self) -> View:
        return View(self)


class View:
    """All of a connection's contexts as one ``liveness.Watched``."""

    def __init__(self, contexts: Contexts) -> None:
        self._c = contexts
        self._convs = [c.conv for c in contexts.all()]

    @property
    def phase(self) -> Phase:
        # A dialect has no 'start': the connection is under way from its handshake, so
        # the start rule never applies. A silent connection meets the idle rule instead
        # (ElevenLabs' inactivity_timeout counts from the connection, as ElevenLabs does;
        # Pipecat connects before its first reply and keeps the socket alive with
        # {"text": ""}, which opens no context).
        return Phase.STREAMING

    @property
    def unsent_s(self) -> float:
        return sum(c.unsent_s for c in self._convs)

    @property
    def client_unsent_s(self) -> float:
        return sum(c.client_unsent_s for c in self._convs)

    @property
    def outbox(self) -> list[int]:
        return [len(c.outbox) for c in self._convs if len(c.outbox)]

    @property
    def audio_s_sent(self) -> float:
        return self._c._gone_audio_s + sum(c.audio_s_sent for c in self._convs)

    @property
    def socket_unsent_s(self) -> float:
        return max((c.socket_unsent_s for c in self._convs), default=0.0)

    def busy(self) -> bool:
        return any(c.busy() for c in self._convs)
