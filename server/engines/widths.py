"""How many onnxruntime threads each sentence of a Piper synthesis runs on.

A lone sentence is fastest on every core (``wide``: its first audio is what a caller
waits for), but syntheses that share every core make less speech per CPU second than
syntheses side by side on a core each (``busy``; BENCHMARKS.md, issue 15). So before
each sentence an engine process looks at the threads the others use: the sentence
runs wide if its threads fit beside theirs on the usable CPUs, else on ``busy``
threads. Deciding per sentence, not per chunk, keeps a wrong guess short: a long chunk
that started beside another goes wide once that one ends, and one that started alone
narrows when another starts.

The engine processes share one array of ints, a slot each: what its current sentence
uses (0 between requests). A process writes only its own slot and reads the others
without a lock (a slightly stale sum costs one sentence's width); the supervisor zeroes
a dead process's slot.
"""

from __future__ import annotations

from collections.abc import MutableSequence


class Widths:
    """One engine process's view of the shared slots."""

    __slots__ = ("busy", "cpus", "slot", "slots", "wide")

    def __init__(
        self, slots: MutableSequence[int], slot: int, wide: int, busy: int, cpus: int
    ) -> None:
        self.slots = slots
        self.slot = slot
        self.wide = wide
        self.busy = busy
        self.cpus = cpus

    def take(self) -> bool:
        """The next sentence starts now: whether it runs wide (its threads fit beside
        the other processes'); its threads go in this process's slot."""
        others = sum(self.slots) - self.slots[self.slot]
        wide = others + self.wide <= self.cpus
        self.slots[self.slot] = self.wide if wide else self.busy
        return wide

    def done(self) -> None:
        """The synthesis is over (or stopped): this process uses no threads."""
        self.slots[self.slot] = 0
