"""How many onnxruntime threads each sentence of a Piper synthesis runs on.

A lone sentence is fastest on every core (``wide``: its first audio is what a caller
waits for), but syntheses that share every core make less speech per CPU second than
syntheses side by side on a core each (``busy``; BENCHMARKS.md, issue 15). So before
each sentence an engine process looks at the threads the others use: the sentence
runs wide if its threads fit beside theirs on the usable CPUs, else on ``busy``
threads. Deciding per sentence, not per chunk, keeps a wrong guess short: a long chunk
that started beside another goes wide once that one ends, and one that started alone
narrows when another starts.

A session's own syntheses do not narrow each other: its read-ahead (the next chunk,
started while this one's later sentences are made) runs beside its current chunk, and
were either narrow, the one left alone at the end would run on one core while the other
core idles. Two wide ones share the cores and the last gets both: a lone paragraph
finishes about when Piper's own server would (BENCHMARKS.md, issue 15, "Night").
Each request carries its session's ``group`` (a small int; 0: none) for this.

The engine processes share two arrays of ints, a slot each: the threads its current
sentence uses (0 between requests) and the group it is for. A process writes only its
own slot and reads the others without a lock (a slightly stale sum costs one sentence's
width); the supervisor zeroes a dead process's slot.
"""

from __future__ import annotations

import zlib
from collections.abc import MutableSequence


def group_of(session_id: str) -> int:
    """A session's requests' group: a small int, never 0 (a clash of two sessions costs
    them only a sentence's width)."""
    return zlib.crc32(session_id.encode()) & 0x7FFFFFFF or 1


class Widths:
    """One engine process's view of the shared slots."""

    __slots__ = ("busy", "cpus", "group", "groups", "slot", "slots", "wide")

    def __init__(
        self,
        slots: MutableSequence[int],
        groups: MutableSequence[int],
        slot: int,
        wide: int,
        busy: int,
        cpus: int,
    ) -> None:
        self.slots = slots
        self.groups = groups
        self.slot = slot
        self.wide = wide
        self.busy = busy
        self.cpus = cpus
        self.group = 0  # the session of the request running now (set per request)

    def take(self) -> bool:
        """The next sentence starts now: whether it runs wide (its threads fit beside
        the other sessions' ones); its threads go in this process's slot."""
        me, group = self.slot, self.group
        others = 0
        for i, threads in enumerate(self.slots):
            if threads and i != me and (group == 0 or self.groups[i] != group):
                others += threads
        wide = others + self.wide <= self.cpus
        self.groups[me] = group
        self.slots[me] = self.wide if wide else self.busy
        return wide

    def done(self) -> None:
        """The synthesis is over (or stopped): this process uses no threads."""
        self.slots[self.slot] = 0
