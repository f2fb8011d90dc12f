from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.streaming.framer import Framer


@settings(max_examples=200, deadline=None)
@given(
    frame=st.integers(min_value=1, max_value=64),
    total=st.integers(min_value=0, max_value=600),
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=20),
    min_pad=st.integers(min_value=0, max_value=150),
)
def test_any_split_gives_the_same_frames(
    frame: int, total: int, cuts: list[int], min_pad: int
) -> None:
    x = np.arange(1, total + 1, dtype=np.float32)  # nonzero, so padding is recognisable
    f = Framer(frame)
    bounds = sorted({c for c in cuts if c <= total} | {0, total})
    pieces = [f.push(x[a:b]) for a, b in itertools.pairwise(bounds)]
    assert f.pending == total % frame
    tail = f.finish(min_pad=min_pad)
    assert f.pending == 0
    frames = np.concatenate([*pieces, tail])
    assert frames.dtype == np.float32
    assert frames.ndim == 2 and frames.shape[1] == frame
    flat = frames.reshape(-1)
    # The real samples come out in order, then only zeros, at least min_pad of them, and
    # never a whole frame of zeros more than needed.
    np.testing.assert_array_equal(flat[:total], x)
    assert not flat[total:].any()
    pad = flat.size - total
    assert pad >= min_pad
    assert pad < min_pad + frame
    full_frames = sum(p.shape[0] for p in pieces)
    assert full_frames == total // frame


def test_push_keeps_remainder() -> None:
    f = Framer(4)
    assert f.push(np.ones(3, dtype=np.float32)).shape == (0, 4)
    assert f.pending == 3
    out = f.push(np.full(6, 2.0, dtype=np.float32))
    np.testing.assert_array_equal(out, [[1, 1, 1, 2], [2, 2, 2, 2]])
    assert f.pending == 1


def test_finish_pads_remainder_to_a_frame() -> None:
    f = Framer(4)
    f.push(np.ones(5, dtype=np.float32))
    np.testing.assert_array_equal(f.finish(), [[1, 0, 0, 0]])
    assert f.finish().shape == (0, 4)


def test_min_pad_adds_zero_frames_when_needed() -> None:
    f = Framer(4)
    f.push(np.ones(7, dtype=np.float32))  # 3 pending
    # 1 zero would complete the frame; 2 zeros of lookahead need one more frame.
    assert f.finish(min_pad=1).shape == (1, 4)
    f.push(np.ones(7, dtype=np.float32))
    np.testing.assert_array_equal(f.finish(min_pad=2), [[1, 1, 1, 0], [0, 0, 0, 0]])
    # Nothing pending: min_pad alone still yields the zeros after the last real sample.
    np.testing.assert_array_equal(f.finish(min_pad=5), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="min_pad"):
        f.finish(min_pad=-1)


def test_frames_do_not_alias_internal_buffer() -> None:
    f = Framer(3)
    a = f.push(np.array([1, 2, 3, 4], dtype=np.float32))
    f.push(np.array([5, 6, 7], dtype=np.float32))
    np.testing.assert_array_equal(a, [[1, 2, 3]])


def test_reset_drops_remainder() -> None:
    f = Framer(4)
    f.push(np.ones(3, dtype=np.float32))
    f.reset()
    assert f.pending == 0
    np.testing.assert_array_equal(f.push(np.full(4, 2.0, dtype=np.float32)), [[2, 2, 2, 2]])


def test_bad_frame_size() -> None:
    with pytest.raises(ValueError, match="frame_samples"):
        Framer(0)


def test_remainder_is_what_the_next_frame_starts_with() -> None:
    """A pipeline on another node continues a stream from ``remainder`` (resume)."""
    x = np.arange(25, dtype=np.float32)
    a = Framer(10)
    frames = a.push(x)
    assert frames.shape == (2, 10)
    rest = a.remainder()
    assert rest.tolist() == [20.0, 21.0, 22.0, 23.0, 24.0]
    b = Framer(10)
    assert b.push(rest).shape == (0, 10)
    more = np.arange(25, 40, dtype=np.float32)
    assert np.array_equal(b.push(more), a.push(more))
