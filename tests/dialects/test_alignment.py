"""Per-character timings from word timings (the ElevenLabs alignment)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server import protocol as p
from server.dialects.alignment import Aligner, char_times


def w(text: str, char: int, start: float, end: float) -> p.WordTiming:
    return p.WordTiming(text=text, char=char, start=start, end=end)


def test_words_share_their_time_and_spaces_span_the_pauses() -> None:
    text = "Hello, big world."
    times, cursor = char_times(
        text, [w("Hello", 0, 0.0, 0.5), w("big", 7, 0.7, 0.9), w("world", 11, 1.0, 1.5)], 0
    )
    assert "".join(times.chars) == text and cursor == len(text)
    assert times.starts[0] == 0.0 and times.durations[0] == pytest.approx(0.5 / 6)  # "Hello,"
    assert times.starts[6] == pytest.approx(0.5) and times.durations[6] == pytest.approx(0.2)
    assert times.starts[-1] == pytest.approx(1.0 + 5 * 0.5 / 6)  # the "." after world


def test_the_aligner_makes_times_relative_and_separates_segments() -> None:
    al = Aligner()
    al.segment_started(0, "One two.")
    a = al.words(p.Words(segment=0, words=[w("One", 0, 0.0, 0.4), w("two", 4, 0.5, 0.9)]))
    # the segment's last word is followed by a space: clients join characters at spaces
    assert a is not None and "".join(a["chars"]) == "One two. "  # type: ignore[arg-type]
    al.segment_started(1, "Three.")
    b = al.words(p.Words(segment=1, words=[w("Three", 0, 1.2, 1.6)]))
    assert b is not None and "".join(b["chars"]) == "Three. "  # type: ignore[arg-type]
    # times restart at the end of the previous alignment: 0.9 s, so "Three" is at 300 ms
    assert b["charStartTimesMs"][0] == 300
    # a segment that does not end with its last word: a space keeps the words apart
    al.segment_started(2, "Four five.")
    c = al.words(p.Words(segment=2, words=[w("Four", 0, 2.0, 2.2)]))
    assert c is not None and "".join(c["chars"]) == "Four"  # type: ignore[arg-type]
    al.segment_started(3, "Six.")
    d = al.words(p.Words(segment=3, words=[w("Six", 0, 3.0, 3.2)]))
    assert d is not None and "".join(d["chars"]) == " Six. "  # type: ignore[arg-type]
    assert al.words(p.Words(segment=7, words=[w("x", 0, 0, 1)])) is None  # not this segment


@given(
    st.text(max_size=80),
    st.lists(st.tuples(st.integers(0, 90), st.integers(0, 20), st.floats(0, 10)), max_size=12),
)
def test_any_words_give_monotone_chars_of_the_text(
    text: str, raw: list[tuple[int, int, float]]
) -> None:
    words = []
    t = 0.0
    for char, n, dt in sorted(raw):
        words.append(w(text[char : char + n], char, t, t + dt))
        t += dt
    times, cursor = char_times(text, words, 0)
    assert "".join(times.chars) == text[: len(times.chars)]
    assert cursor == len(times.chars) <= len(text)
    assert all(d >= 0 for d in times.durations)
