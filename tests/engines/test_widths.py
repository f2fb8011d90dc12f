"""Each sentence's width (server/engines/widths.py), across "processes" sharing one
real multiprocessing array: every CPU while the others leave room, one beside them."""

from __future__ import annotations

import multiprocessing

from server.engines.widths import Widths, group_of


def _pool(n: int, wide: int = 2, busy: int = 1, cpus: int = 2) -> list[Widths]:
    ctx = multiprocessing.get_context("spawn")
    slots = ctx.Array("i", n, lock=False)
    groups = ctx.Array("i", n, lock=False)
    return [Widths(slots, groups, i, wide, busy, cpus) for i in range(n)]


def test_a_sentence_alone_runs_wide_and_one_beside_it_narrow() -> None:
    a, b, c = _pool(3)
    assert a.take() is True and list(a.slots) == [2, 0, 0]
    assert b.take() is False and list(a.slots) == [2, 1, 0]  # 2 + 2 would not fit on 2
    assert c.take() is False
    # a's next sentence sees the others: it narrows
    assert a.take() is False and list(a.slots) == [1, 1, 1]


def test_a_chunk_goes_wide_again_once_the_other_ends() -> None:
    a, b = _pool(2)
    a.take()
    assert b.take() is False
    a.done()  # a's request is over
    assert list(b.slots) == [0, 1]
    assert b.take() is True and list(b.slots) == [0, 2]  # b's next sentence: alone


def test_more_cpus_let_several_run_wide() -> None:
    ws = _pool(6, wide=4, busy=1, cpus=16)
    assert [w.take() for w in ws] == [True, True, True, True, False, False]
    assert sum(ws[0].slots) == 18  # a little over, for at most a sentence


def test_equal_widths_never_narrow_below_the_setting() -> None:
    a, b = _pool(2, wide=1, busy=1, cpus=1)
    assert a.take() is True and b.take() is False
    assert list(a.slots) == [1, 1]


def test_a_sessions_own_syntheses_do_not_narrow_each_other() -> None:
    """A lone paragraph's chunk and its read-ahead both run wide: were one narrow, it
    would run on one core at the end while the other idles."""
    a, b, c = _pool(3)
    a.group = b.group = group_of("session-1")
    c.group = group_of("session-2")
    assert a.group != c.group and a.group > 0
    assert a.take() is True
    assert b.take() is True and list(a.slots) == [2, 2, 0]  # its own: still wide
    assert c.take() is False and list(a.groups) == [a.group, a.group, c.group]
    # another session's sentence now runs: a's next one narrows
    assert a.take() is False
    c.done()
    assert a.take() is True  # only its own beside it again


def test_requests_without_a_group_count_every_other() -> None:
    a, b = _pool(2)
    b.group = group_of("session-1")
    assert b.take() is True
    assert a.take() is False  # a.group == 0: b's threads count
    b.done()
    a.done()
    a.group = b.group
    b.take()
    assert a.take() is True
