"""What the client sent that a resumed session may lack, and which answers are repeats.

The server journals a session's text and its ``flush``/``end`` marks in the order it
read them, and tells a resuming client only how much text it has
(``ready.chars_accepted``, in code points). So a mark followed by text the server
has is certainly journaled; text past ``chars_accepted`` is certainly not; a mark
right at that point is unknown. Such a mark is sent again, and the surplus answer
it may cause (a second ``flushed`` or ``cancelled``, or ``session_ending`` for a
second ``end``) is kept from the user.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Literal

Kind = Literal["text", "flush", "end", "cancel"]

# The server names the size of text it dropped (text_buffer_full, session_text_limit).
_DROPPED = re.compile(r"this text \((\d+) characters\)")


@dataclass(slots=True)
class Op:
    kind: Kind
    offset: int  # characters of text sent before this op (for text: where it starts)
    seq: int  # sending order
    text: str = ""
    answered: bool = False  # a mark whose flushed/cancelled/done arrived
    resent: bool = False  # sent again after a resume: its answer may come twice


class Ledger:
    """Ops since the last point the server is known to have, in sending order."""

    def __init__(self) -> None:
        self.ops: deque[Op] = deque()
        self._seq = 0
        self.chars = 0  # code points sent, as the server counts ``chars_accepted``
        self.dropped = 0  # code points the server said it dropped
        self._waiting: deque[Op] = deque()  # flush/cancel marks awaiting their answer
        self._repeat: str | None = None  # an answer that may come once more right now

    def text(self, text: str) -> Op:
        op = self._add(Op("text", self.chars, self._next(), text))
        self.chars += len(text)  # str length: code points, as the server counts
        return op

    def mark(self, kind: Kind) -> Op:
        op = self._add(Op(kind, self.chars, self._next()))
        if kind in ("flush", "cancel"):
            self._waiting.append(op)
        return op

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _add(self, op: Op) -> Op:
        self.ops.append(op)
        return op

    def text_dropped(self, message: str) -> None:
        """The server refused a piece of text: it is not in ``chars_accepted``."""
        m = _DROPPED.search(message)
        if m:
            self.dropped += int(m.group(1))

    def resend(self, chars_accepted: int) -> list[Op]:
        """After a resume: what to send again, in order (text cut where the server's ends).

        Dropped text is assumed to lie before the lost tail: the server says so within
        a round trip, the tail is what was in flight at the drop.
        """
        have = chars_accepted + self.dropped
        out: list[Op] = []
        keep: deque[Op] = deque()
        for op in self.ops:
            if op.kind == "text":
                if op.offset + len(op.text) <= have:
                    continue
                cut = max(0, have - op.offset)
                out.append(Op("text", op.offset + cut, op.seq, op.text[cut:]))
                keep.append(op)
            elif op.offset > have or (op.offset == have and not op.answered):
                op.resent = True
                out.append(op)
                keep.append(op)
        self.ops = keep
        return out

    # ---------------------------------------------------------------- answers

    def answer(self, kind: Literal["flush", "cancel"]) -> bool:
        """A ``flushed`` (kind "flush") or ``cancelled`` arrived: True if it is the
        user's, False if it repeats one already given (a mark sent twice)."""
        if self._repeat == kind:
            self._repeat = None
            return False
        self._repeat = None
        head = self._waiting[0] if self._waiting else None
        if kind == "flush":
            if head is None or head.kind != "flush":
                return False  # nothing of the user's waits for it
            self._waiting.popleft()
            self._confirm(head)
            return True
        # a cancel answers itself and drops the flushes queued before it
        while self._waiting and self._waiting[0].kind == "flush":
            self._waiting.popleft().answered = True
        if not self._waiting:
            return False
        self._confirm(self._waiting.popleft())
        return True

    def other(self) -> None:
        """Anything else arrived: a repeated answer would have come right away."""
        self._repeat = None

    def done(self) -> None:
        for op in self.ops:
            op.answered = True
        self.ops.clear()
        self._waiting.clear()

    def _confirm(self, op: Op) -> None:
        """The server acted on ``op``: it and everything sent before it are journaled."""
        op.answered = True
        if op.resent:
            self._repeat = op.kind
        while self.ops and self.ops[0].seq <= op.seq:
            self.ops.popleft()
