"""Word timings on the stream's timeline (sans-I/O).

The worker times a chunk's words from the chunk's first sample (``ChunkTimings``);
where that sample lies in the stream is known only when the sender reaches the
chunk's ``segment``: its first frame's number, times the frame length, plus the
samples carried into that frame from the chunk before (``offset_s``).
"""

from __future__ import annotations

from server import protocol as p
from server.engines.jobs import ChunkTimings

_KEEP = 8  # segments remembered: timings of a segment come soon after it


class SegmentClock:
    def __init__(self) -> None:
        self._segments: dict[int, tuple[float, str]] = {}

    def reached(self, index: int, start_s: float, text: str) -> None:
        """The sender reached segment ``index``: its first frame starts at ``start_s``."""
        self._segments[index] = (start_s, text)
        for old in [k for k in self._segments if k <= index - _KEEP]:
            del self._segments[old]

    def clear(self) -> None:
        self._segments.clear()

    def words(self, t: ChunkTimings) -> p.Words | None:
        """The ``words`` event of these timings; None if their segment was not sent."""
        seg = self._segments.get(t.index)
        if seg is None or not t.words:
            return None
        start_s, text = seg
        base = start_s + t.offset_s
        return p.Words(
            segment=t.index,
            words=[
                p.WordTiming(
                    text=text[w.start : w.end],
                    char=w.start,
                    start=round(base + w.t0, 3),
                    end=round(base + w.t1, 3),
                )
                for w in t.words
                if 0 <= w.start < w.end <= len(text)
            ],
            estimated=t.estimated,
        )
