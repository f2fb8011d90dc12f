"""Resume journaling as a sink between the engine worker and the outbox.

A conversation's output is journaled, then sent (see server/state/sessions.py):
slice by slice after the chunk's engine audio (``ChunkPcm``), or, with a worker
that cannot hand that over first, the whole chunk at its end. A chunk's first
``_URGENT_S`` of frames are journaled (and sent) slice by slice; after that up to
``_BATCH_S`` of them at once, held at most ``_HOLD_S``: by then the listener has
audio in hand, and fewer store round trips per second of audio cost nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from server import protocol as p
from server.conversation.ports import Release
from server.engines.jobs import (
    ChunkDone,
    ChunkPcm,
    EngineFailed,
    Output,
    SegmentStart,
    UtteranceDone,
)
from server.journal import Journal
from server.state.sessions import ChunkAudio, Commit, StoredFrame

_URGENT_S = 0.5
_BATCH_S = 0.4
_HOLD_S = 0.05


class JournalSink:
    def __init__(
        self,
        journal: Journal,
        frame_s: Callable[[], float],
        whole_chunks: Callable[[], bool],
        segments: int = 0,
        carry: bytes = b"",
    ) -> None:
        self.journal = journal
        self._frame_s = frame_s  # the stream's frame duration (outbox.frame_s)
        self._whole_chunks = whole_chunks  # True: the worker gives no ChunkPcm first
        self._uncommitted: list[Output] = []
        self._held_frames = 0  # frames in _uncommitted
        self._chunk_frames = 0  # frames of the current chunk journaled so far
        self._hold_timer: asyncio.TimerHandle | None = None
        self._generation = 0
        self._release: Release | None = None
        self._seg_committed = segments  # segment index after the last committed chunk
        self._carry = carry  # framer remainder after the last committed chunk

    @property
    def journaling(self) -> bool:
        return not self.journal.broken

    @property
    def resumable(self) -> bool:
        return not (self.journal.broken or self.journal.moved)

    def text(self, text: str) -> None:
        self.journal.text(text)

    def mark(self, offset: int, kind: str) -> None:
        self.journal.mark(offset, kind)

    def ack(self, frame: int) -> None:
        self.journal.ack(frame)

    def cancel(self, sent: int, chars: int, marks: int) -> None:
        self.journal.cancel(sent, chars, marks)

    def drop(self) -> None:
        self._uncommitted = []
        self._held_frames = 0
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None

    def deliver(self, generation: int, items: list[Output], release: Release) -> None:
        if self.journal.broken:
            release(generation, items)
            return
        if generation != self._generation:
            self.drop()  # a barge-in since: what was held is gone
            self._generation = generation
        self._release = release
        self._uncommitted.extend(items)
        self._held_frames += sum(1 for i in items if isinstance(i, bytes))
        edge = any(isinstance(i, ChunkDone | UtteranceDone | EngineFailed) for i in items)
        if self._whole_chunks():
            if edge:
                self._commit_held()
            return
        if any(isinstance(i, ChunkPcm) for i in items):
            self._chunk_frames = 0  # a chunk starts: its first slices go out one by one
        frame_s = self._frame_s()
        if (
            edge
            or self._chunk_frames < _URGENT_S / frame_s
            or self._held_frames >= _BATCH_S / frame_s
        ):
            self._commit_held()
        elif self._hold_timer is None:
            self._hold_timer = asyncio.get_running_loop().call_later(_HOLD_S, self._commit_held)

    def _commit_held(self) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        release, generation = self._release, self._generation
        if release is None or not self._uncommitted:
            return
        batch, self._uncommitted = self._uncommitted, []
        self._chunk_frames += self._held_frames
        self._held_frames = 0
        j = self.journal
        j.commit(self._commit_of(batch, j.frames), lambda: release(generation, batch))

    def _commit_of(self, batch: list[Output], n: int) -> Commit:
        frames: list[StoredFrame] = []
        message = ""
        c = Commit(frames=frames)
        for item in batch:
            if isinstance(item, bytes):
                frames.append(StoredFrame(n, item, message))
                n += 1
                message = ""
            elif isinstance(item, SegmentStart):
                message = p.encode_server_message(
                    p.Segment(index=item.index, text=item.text, first_frame=n)
                )
            elif isinstance(item, ChunkPcm):
                c.chunk = ChunkAudio(index=item.index, first=n, chars=item.chars, pcm=item.pcm)
            else:
                self._account(c, item)
        c.carry = self._carry
        c.segments = self._seg_committed
        return c

    def _account(self, c: Commit, item: Output) -> None:
        """What an item other than audio changes in the commit: text done, marks."""
        if isinstance(item, ChunkDone):
            c.chars += item.chars
            c.chunk_done = True
            self._carry = item.carry
            self._seg_committed = max(self._seg_committed, item.index + 1)
        elif isinstance(item, UtteranceDone):
            c.marks += 1
            c.finished = c.finished or item.marker == "end"
            self._carry = b""
        elif isinstance(item, EngineFailed) and item.retry is None:
            c.chars += item.chars  # that text is given up on
            c.chunk_done = True
