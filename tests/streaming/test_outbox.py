from __future__ import annotations

import pytest

from server.streaming.outbox import Outbox


def test_order_is_kept_and_only_audio_counts() -> None:
    box = Outbox(0.02)
    box.put_message("ready")
    box.put_message("seg", droppable=True)
    for i in range(50):
        box.put_frame(bytes([i]))
    box.put_message("flushed")
    assert box.frames_queued == 50 and box.audio_s == pytest.approx(1.0)
    assert box.pop() == (False, "ready")
    assert box.pop() == (False, "seg")
    assert box.pop() == (True, b"\x00")
    assert box.audio_s == pytest.approx(0.98)
    assert len(box) == 50


def test_barge_in_drops_audio_and_announcements_but_keeps_other_messages() -> None:
    box = Outbox(0.04)
    box.put_frame(b"a")
    box.put_message("seg", droppable=True)
    box.put_frame(b"b")
    box.put_message("error")
    assert box.drop_audio() == 2
    assert box.audio_s == 0 and len(box) == 1
    assert box.pop() == (False, "error")
    with pytest.raises(IndexError):
        box.pop()


def test_a_burst_of_frames_stops_at_the_next_message_and_at_its_bound() -> None:
    box = Outbox(0.02)
    for i in range(5):
        box.put_frame(bytes([i]))
    box.put_message("flushed")
    box.put_frame(b"z")
    assert box.pop_frames(3) == [b"\x00", b"\x01", b"\x02"]
    assert box.frames_queued == 3
    assert box.pop_frames(16) == [b"\x03", b"\x04"]  # not past the message
    assert box.pop_frames(16) == []
    assert box.pop() == (False, "flushed")
    assert box.pop_frames(16) == [b"z"] and box.frames_queued == 0 and not box
