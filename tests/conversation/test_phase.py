"""The lifecycle's transitions: every pair of states, allowed or refused."""

from __future__ import annotations

import itertools

import pytest

from server.conversation.phase import Phase, TransitionError, check, started, takes_text

ALLOWED = {
    (Phase.AWAITING_START, Phase.STREAMING),
    (Phase.AWAITING_START, Phase.CLOSED),
    (Phase.STREAMING, Phase.ENDING),
    (Phase.STREAMING, Phase.CLOSING),
    (Phase.STREAMING, Phase.CLOSED),
    (Phase.ENDING, Phase.CLOSING),
    (Phase.ENDING, Phase.CLOSED),
    (Phase.CLOSING, Phase.CLOSING),  # a drain's close may be replaced by 'done'
    (Phase.CLOSING, Phase.CLOSED),
}


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(Phase, Phase)))
def test_transition(src: Phase, dst: Phase) -> None:
    if (src, dst) in ALLOWED:
        assert check(src, dst) is dst
    else:
        with pytest.raises(TransitionError, match=f"from {src.name} to {dst.name}"):
            check(src, dst)


def test_only_streaming_takes_text_and_only_awaiting_start_is_not_started() -> None:
    assert [ph for ph in Phase if takes_text(ph)] == [Phase.STREAMING]
    assert [ph for ph in Phase if not started(ph)] == [Phase.AWAITING_START]
