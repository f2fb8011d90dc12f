"""The F5 streaming policy: pieces, durations, silence trim, cross-fade (no model needed)."""

from __future__ import annotations

import re

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from server.engines.f5.policy import (
    HOP,
    SAMPLE_RATE,
    CrossFader,
    StreamPolicy,
    duration_frames,
    nbytes,
    split_pieces,
    trim_trailing_silence,
)

P = StreamPolicy()
TEXT = (
    "The weather today is sunny with a light breeze from the west. Later this afternoon "
    "clouds will gather over the hills, and rain may begin after six. Tomorrow morning "
    "should be cold and clear, with frost in the valleys."
)


def _nows(s: str) -> str:
    return re.sub(r"\s+", "", s)


def test_first_piece_is_small_then_pieces_grow_to_the_limit() -> None:
    rate, ref_s = 15.0, 5.0
    pieces = split_pieces(TEXT * 4, rate, 1.0, True, ref_s, P)
    assert _nows("".join(pieces)) == _nows(TEXT * 4)
    sizes = [nbytes(p) for p in pieces]
    # First piece: about first_piece_s of speech (whole words, so a little over is allowed).
    assert sizes[0] <= rate * P.first_piece_s * 1.5 + P.min_piece_bytes
    assert sizes[1] > sizes[0]
    max_bytes = rate * (P.total_limit_s - ref_s)
    assert all(s <= max_bytes for s in sizes)
    assert max(sizes) > max_bytes / 2  # later pieces use the room there is
    # A later chunk of the utterance starts at full size.
    later = split_pieces(TEXT, rate, 1.0, False, ref_s, P)
    assert later == [TEXT]


def test_cuts_prefer_sentence_then_clause_ends_and_never_split_words() -> None:
    pieces = split_pieces(TEXT, 15.0, 1.0, True, 5.0, P)
    words = set(TEXT.split())
    for piece in pieces:
        for w in piece.split():
            assert w in words, (w, pieces)
    assert pieces[1].endswith((".", ","))  # the second piece ends at a break


def test_short_text_is_one_piece_and_not_stretched() -> None:
    assert split_pieces("Hi.", 15.0, 1.0, True, 5.0, P) == ["Hi."]
    assert split_pieces("   ", 15.0, 1.0, True, 5.0, P) == []
    ref_frames, ref_bytes = 500, 80  # 6.25 frames per byte
    frames_per_s = SAMPLE_RATE / HOP
    hi = duration_frames(ref_frames, ref_bytes, 3, 1.0, P) - ref_frames
    # Upstream would slow "Hi." to speed 0.3 (3.3× longer); here a floor applies instead.
    assert hi == int((P.min_gen_s + P.tail_margin_s) * frames_per_s)
    assert hi < ref_frames / ref_bytes * 3 / 0.3 + P.tail_margin_s * frames_per_s


def test_duration_follows_the_reference_speaking_rate() -> None:
    ref_frames, ref_bytes = 500, 80
    frames_per_s = SAMPLE_RATE / HOP
    gen = duration_frames(ref_frames, ref_bytes, 160, 1.0, P) - ref_frames
    assert gen == int(ref_frames / ref_bytes * 160 + P.tail_margin_s * frames_per_s)
    fast = duration_frames(ref_frames, ref_bytes, 160, 2.0, P) - ref_frames
    assert fast == int(ref_frames / ref_bytes * 160 / 2 + P.tail_margin_s * frames_per_s)


def test_cjk_text_without_spaces_is_cut_at_its_own_punctuation() -> None:
    text = "对，这就是我，万人敬仰的太乙真人。" * 4
    pieces = split_pieces(text, 7.5, 1.0, True, 6.8, P)
    assert "".join(pieces) == text
    assert all(p.endswith(("，", "。")) for p in pieces[:-1]), pieces


@settings(max_examples=150, deadline=None)
@given(
    words=st.lists(
        st.tuples(
            st.text(alphabet="abcdefghij", min_size=1, max_size=12),
            st.sampled_from(["", "", ",", "."]),
        ).map("".join),
        min_size=1,
        max_size=120,
    ),
    rate=st.floats(5, 30),
    speed=st.floats(0.5, 2.0),
    first=st.booleans(),
)
def test_pieces_tile_the_text_and_respect_the_bounds(
    words: list[str], rate: float, speed: float, first: bool
) -> None:
    text = " ".join(words)
    pieces = split_pieces(text, rate, speed, first, 5.0, P)
    assert " ".join(pieces).split() == text.split()  # nothing lost, nothing cut mid-word
    max_bytes = max(P.min_piece_bytes, int(rate * speed * (P.total_limit_s - 5.0)))
    for p in pieces:
        longest_word = max(nbytes(w) for w in p.split())
        assert nbytes(p) <= max(max_bytes, longest_word) + max_bytes // 2 + P.min_piece_bytes
    if len(pieces) > 1:
        assert all(nbytes(p) >= P.min_piece_bytes for p in pieces[1:]), pieces


def test_trailing_silence_is_trimmed_keeping_a_short_pause() -> None:
    rng = np.random.default_rng(0)
    speech = (0.2 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32)
    tail = (1e-5 * rng.standard_normal(SAMPLE_RATE // 2)).astype(np.float32)
    out = trim_trailing_silence(np.concatenate((speech, tail)), P)
    assert len(speech) <= len(out) <= len(speech) + int(P.keep_silence_s * SAMPLE_RATE) + 240
    # Stationary sound has no trailing silence: nothing is cut.
    assert len(trim_trailing_silence(speech, P)) == len(speech)
    assert len(trim_trailing_silence(np.zeros(4800, dtype=np.float32), P)) == 0


def test_cross_fade_holds_only_the_fade_and_keeps_every_sample() -> None:
    fader = CrossFader(P)
    n = int(P.crossfade_s * SAMPLE_RATE)
    a = np.ones(10000, dtype=np.float32)
    b = -np.ones(8000, dtype=np.float32)
    first = fader.push(a)
    assert len(first) == len(a) - n  # no latency beyond the fade
    second = fader.push(b)
    rest = fader.end()
    out = np.concatenate((first, second, rest))
    assert len(out) == len(a) + len(b) - n  # the two pieces overlap by the fade
    join = out[len(a) - n : len(a)]
    assert join[0] > 0.9 and join[-1] < -0.9  # goes from a to b across the fade
    assert np.all(np.abs(np.diff(join)) < 0.2)  # smoothly: no click
    # A piece shorter than the fade is mixed in, not dropped.
    f2 = CrossFader(P)
    f2.push(a)
    f2.push(np.ones(10, dtype=np.float32))
    assert len(f2.end()) == n
