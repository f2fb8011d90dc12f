"""Word spans of a verbalized text back on the text the client sent (sans-I/O).

An engine that is given numbers, dates and units written out as words (server/text/:
"$12.50" said as "twelve dollars and fifty cents") times the words it said; ``remap_said``
takes those spans back through the verbalizer's exact span map to the text it verbalized,
merging the words said for one replacement, and from there to the client's text with
``timing.remap`` (which pairs words by their letters, for the safety normaliser's changes).
"""

from __future__ import annotations

from collections.abc import Sequence

from server.engines.base import WordSpan
from server.engines.timing import remap
from server.text.spans import Verbalized

__all__ = ["remap_said", "to_source"]


def to_source(said: Verbalized, words: Sequence[WordSpan]) -> list[WordSpan]:
    """Spans of ``said.text`` as spans of ``said.source``, by the exact map: the words said
    for one replacement ("twelve", "dollars", "and", "fifty", "cents") become one span of
    what it replaced ("$12.50"), from the first one's start to the last one's end."""
    out: list[WordSpan] = []
    for w in words:
        a, b = said.to_source(w.start, w.end)
        if b <= a:
            continue
        if out and a < out[-1].end:
            last = out[-1]
            out[-1] = WordSpan(last.start, max(b, last.end), min(last.t0, w.t0), max(last.t1, w.t1))
        else:
            out.append(WordSpan(a, b, w.t0, w.t1))
    return out


def remap_said(said: Verbalized, original: str, words: Sequence[WordSpan]) -> list[WordSpan]:
    """Spans of what the engine said (``said.text``) as spans of ``original``, the client's
    text that ``said.source`` was made from (the same text, or its safety-normalised form:
    server/streaming/normalize.py)."""
    return remap(said.source, original, to_source(said, words))
