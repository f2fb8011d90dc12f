"""Per-character timings from word timings (sans-I/O): ElevenLabs' ``alignment``.

Each word's time is shared evenly by its characters (a word runs on to the next
whitespace, so trailing punctuation goes with it); whitespace between two words
spans the pause between them. Times are absolute here (seconds on the stream's
output timeline); ``Aligner`` makes them relative to the end of the alignment
sent before, the way ElevenLabs clients add them up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from server import protocol as p


@dataclass(slots=True)
class CharTimes:
    chars: list[str] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)  # seconds
    durations: list[float] = field(default_factory=list)

    def add(self, ch: str, start: float, duration: float) -> None:
        self.chars.append(ch)
        self.starts.append(start)
        self.durations.append(max(0.0, duration))


def word_end(text: str, end: int) -> int:
    """The word's end moved on over the non-space characters that follow it."""
    while end < len(text) and not text[end].isspace():
        end += 1
    return end


def char_times(text: str, words: list[p.WordTiming], cursor: int) -> tuple[CharTimes, int]:
    """The characters of ``text`` from ``cursor`` to the end of the last word (with its
    punctuation), timed; and the new cursor."""
    out = CharTimes()
    at = cursor
    prev_end: float | None = None
    for w in words:
        start = min(max(w.char, at), len(text))
        end = word_end(text, min(max(start, w.char + len(w.text)), len(text)))
        if end <= at:
            continue  # a word already covered
        gap_t = w.start if prev_end is None else prev_end
        for ch in text[at:start]:  # the space (or text the engine did not say) before it
            out.add(ch, gap_t, w.start - gap_t)
        n = end - start
        step = (w.end - w.start) / n if n else 0.0
        for k, ch in enumerate(text[start:end]):
            out.add(ch, w.start + k * step, step)
        at = end
        prev_end = w.end
    return out, at


class Aligner:
    """One stream's alignments, in ElevenLabs' way: characters in order across
    segments, times relative to where the previous alignment ended."""

    def __init__(self) -> None:
        self.text = ""
        self.segment = -1
        self.cursor = 0
        self.clock = 0.0  # absolute time the alignments sent so far add up to
        self.started = False  # a segment has been aligned: the next one needs a space
        self.fresh = False  # no alignment of the current segment yet
        self.spaced = False  # the last alignment ended with a space

    def segment_started(self, index: int, text: str) -> None:
        self.segment, self.text, self.cursor, self.fresh = index, text, 0, True

    def words(self, w: p.Words) -> dict[str, list[object]] | None:
        """The ``alignment`` object for these words, or None if they add nothing."""
        if w.segment != self.segment or not w.words:
            return None
        times, self.cursor = char_times(self.text, w.words, self.cursor)
        if not times.chars:
            return None
        if self.started and self.fresh and not self.spaced and not times.chars[0].isspace():
            # The first characters of a new segment: keep words of two segments apart.
            times.chars.insert(0, " ")
            times.starts.insert(0, times.starts[0])
            times.durations.insert(0, 0.0)
        if self.cursor >= len(self.text.rstrip()) and not times.chars[-1].isspace():
            # The segment's last word: a space after it tells a client the word is whole
            # (ElevenLabs clients join characters into words at spaces).
            times.add(" ", times.starts[-1] + times.durations[-1], 0.0)
        self.spaced = times.chars[-1].isspace()
        self.started, self.fresh = True, False
        base = self.clock
        starts: list[object] = [max(0, round((s - base) * 1000)) for s in times.starts]
        durs: list[object] = [max(0, round(d * 1000)) for d in times.durations]
        last_start = max(0, round((times.starts[-1] - base) * 1000))
        self.clock = base + (last_start + max(0, round(times.durations[-1] * 1000))) / 1000.0
        chars: list[object] = list(times.chars)
        return {"chars": chars, "charStartTimesMs": starts, "charDurationsMs": durs}
