"""The per-session outbound queue, bounded in seconds of audio (sans-I/O).

Frames and control messages share one ordered queue, so a ``segment`` always
precedes its first frame and a ``cancelled`` follows the last frame sent before
it. Only audio counts toward the bound: the session compares ``audio_s`` with its
limit to decide whether to take more engine work. Messages put as droppable
(segment announcements) go with the audio on barge-in; the others always stay.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class _Message:
    __slots__ = ("droppable", "value")

    def __init__(self, value: Any, droppable: bool) -> None:
        self.value = value
        self.droppable = droppable


class Outbox:
    __slots__ = ("_items", "frame_s", "frames_queued")

    def __init__(self, frame_s: float) -> None:
        self._items: deque[bytes | _Message] = deque()
        self.frame_s = frame_s
        self.frames_queued = 0

    def put_frame(self, frame: bytes) -> None:
        self._items.append(frame)
        self.frames_queued += 1

    def put_message(self, value: Any, droppable: bool = False) -> None:
        self._items.append(_Message(value, droppable))

    def pop(self) -> tuple[bool, Any]:
        """(True, frame bytes) or (False, message value); raises IndexError when empty."""
        item = self._items.popleft()
        if isinstance(item, bytes):
            self.frames_queued -= 1
            return True, item
        return False, item.value

    def pop_frames(self, most: int) -> list[bytes]:
        """Up to ``most`` frames from the front, in order (none when a message is next)."""
        items = self._items
        out: list[bytes] = []
        while len(out) < most and items and isinstance(items[0], bytes):
            out.append(items.popleft())  # type: ignore[arg-type]
        self.frames_queued -= len(out)
        return out

    def drop_audio(self) -> int:
        """Barge-in: drop queued frames and droppable messages; returns frames dropped."""
        dropped = self.frames_queued
        self._items = deque(i for i in self._items if isinstance(i, _Message) and not i.droppable)
        self.frames_queued = 0
        return dropped

    def frame_next(self) -> bool:
        """Whether the next item is a frame (a sender may put several in one message)."""
        return bool(self._items) and isinstance(self._items[0], bytes)

    @property
    def audio_s(self) -> float:
        return self.frames_queued * self.frame_s

    def __len__(self) -> int:
        return len(self._items)
