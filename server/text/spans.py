"""The span map of a verbalized text: which part of the spoken form stands for which part of
the written one (sans-I/O).

A ``Verbalized`` is the source text with some of its spans replaced ("$12.50" by "twelve
dollars and fifty cents"); each replacement is an ``Edit``. Between edits the two texts are
the same characters, so every position of the spoken form has an exact place in the source:
the same character outside an edit, the whole replaced span inside one.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import pairwise

import msgspec

__all__ = ["Builder", "Edit", "Part", "Verbalized"]


class Edit(msgspec.Struct, frozen=True, array_like=True):
    """``text[start:end]`` of the spoken form replaces ``source[source_start:source_end]``."""

    start: int
    end: int
    source_start: int
    source_end: int


class Part(msgspec.Struct, frozen=True):
    """A piece of the spoken form (``text``) and the span of the source it says (``source``)."""

    text: str
    source: str


class Verbalized(msgspec.Struct, frozen=True):
    """A spoken form (``text``) of ``source``: the source with ``edits`` applied, in order."""

    text: str
    source: str
    edits: tuple[Edit, ...] = ()

    @classmethod
    def same(cls, text: str) -> Verbalized:
        """``text`` unchanged: nothing to say differently."""
        return cls(text, text)

    def source_start(self, pos: int) -> int:
        """Where the spoken character at ``pos`` comes from (an edit's start inside one)."""
        i = bisect_right(self.edits, pos, key=lambda e: e.start) - 1
        if i < 0:
            return min(max(pos, 0), len(self.source))
        e = self.edits[i]
        if pos < e.end:
            return e.source_start
        return min(pos - e.end + e.source_end, len(self.source))

    def source_end(self, pos: int) -> int:
        """Where spoken text ending at ``pos`` (exclusive) ends in the source (an edit's end
        inside one)."""
        i = bisect_right(self.edits, pos - 1, key=lambda e: e.start) - 1
        if i < 0:
            return min(max(pos, 0), len(self.source))
        e = self.edits[i]
        if pos <= e.end:
            return e.source_end
        return min(pos - e.end + e.source_end, len(self.source))

    def to_source(self, start: int, end: int) -> tuple[int, int]:
        """The source span that spoken ``[start, end)`` says (at least the edits it touches)."""
        a = self.source_start(start)
        return a, max(a, self.source_end(end))

    def split(self, pieces: Sequence[str]) -> list[Part]:
        """Consecutive ``pieces`` of the spoken form (each found after the one before, as an
        engine's planner cuts it) as parts with their source spans. A cut inside an edit
        moves to the edit's end, so no replacement is split between two parts; parts whose
        text that leaves empty are dropped. ``[]`` if the pieces are not found in order."""
        cuts: list[int] = []
        at = 0
        for piece in pieces:
            k = self.text.find(piece, at)
            if k < 0:
                return []
            cuts.append(self._outside(k) if cuts else 0)
            at = k + len(piece)
        cuts.append(len(self.text))
        parts: list[Part] = []
        for a, b in pairwise(cuts):
            text = self.text[a:b].strip()
            if text:
                source = self.source[self.source_start(a) : self.source_end(b)].strip()
                parts.append(Part(text, source))
        return parts

    def _outside(self, pos: int) -> int:
        """``pos``, or the end of the edit it falls inside."""
        i = bisect_right(self.edits, pos, key=lambda e: e.start) - 1
        if i >= 0 and self.edits[i].start < pos < self.edits[i].end:
            return self.edits[i].end
        return pos


class Builder:
    """Assembles a ``Verbalized`` from left-to-right replacements of spans of ``source``,
    keeping the spoken form within ``limit`` characters (a replacement that would pass it
    is refused and its span stays as written)."""

    __slots__ = ("_edits", "_out", "_parts", "_src", "limit", "source")

    def __init__(self, source: str, limit: int) -> None:
        self.source = source
        self.limit = limit
        self._parts: list[str] = []
        self._edits: list[Edit] = []
        self._src = 0  # source characters consumed
        self._out = 0  # spoken characters written

    @property
    def consumed(self) -> int:
        return self._src

    def replace(self, start: int, end: int, new: str) -> bool:
        """Say ``new`` for ``source[start:end]``; False (nothing done) if the span is behind
        what is already consumed, empty, or the result would pass the limit."""
        if start < self._src or end <= start or not new:
            return False
        if new == self.source[start:end]:
            return True
        grown = self._out + (start - self._src) + len(new) + (len(self.source) - end)
        if grown > self.limit:
            return False
        self._parts.append(self.source[self._src : start])
        self._out += start - self._src
        self._edits.append(Edit(self._out, self._out + len(new), start, end))
        self._parts.append(new)
        self._out += len(new)
        self._src = end
        return True

    def done(self) -> Verbalized:
        if not self._edits:
            return Verbalized.same(self.source)
        self._parts.append(self.source[self._src :])
        return Verbalized("".join(self._parts), self.source, tuple(self._edits))
