"""Resume journaling as a sink: output is released only once durable, a chunk's first
half second slice by slice, then in batches; whole chunks for a worker without
ChunkPcm (the memory store, no sockets)."""

from __future__ import annotations

import asyncio

from server.engines.jobs import ChunkDone, ChunkPcm, Output, SegmentStart, UtteranceDone
from server.journal import Journal
from server.journal_sink import JournalSink
from server.state.sessions import MemorySessionStore

FRAME = b"f" * 10


async def _sink(whole_chunks: bool = False) -> tuple[MemorySessionStore, JournalSink, Journal]:
    store = MemorySessionStore(ttl_s=10)
    await store.create("s", "a", b"{}", replay_frames=1000)
    journal = Journal(store, "s", "a", 0, lambda: None, lambda why: None)
    return store, JournalSink(journal, lambda: 0.02, lambda: whole_chunks), journal


class Released:
    def __init__(self) -> None:
        self.items: list[Output] = []
        self.batches = 0

    def __call__(self, generation: int, items: list[Output]) -> None:
        self.items.extend(items)
        self.batches += 1


async def test_a_chunk_is_released_slice_by_slice_then_in_batches_after_it_is_stored() -> None:
    store, sink, journal = await _sink()
    out = Released()
    sink.text("Hello there. ")
    # the worker sends a chunk's segment and audio with its first frame
    head: list[Output] = [SegmentStart(0, "Hello there."), ChunkPcm(0, 13, b"\0\0" * 100)]
    sink.deliver(0, [*head, FRAME], out)
    for _ in range(24):  # the first 0.5 s: one commit (and release) per delivery
        sink.deliver(0, [FRAME], out)
    assert out.items == []  # nothing before it is durable
    await asyncio.sleep(0.05)
    assert out.items.count(FRAME) == 25 and out.batches == 25
    for _ in range(10):  # later slices wait for up to 0.4 s of frames or 50 ms
        sink.deliver(0, [FRAME], out)
    await asyncio.sleep(0.01)
    assert out.items.count(FRAME) == 25
    await asyncio.sleep(0.1)
    assert out.items.count(FRAME) == 35 and out.batches == 26
    sink.deliver(0, [FRAME, ChunkDone(0, 13, 0.0, 0.0, 0.7, b"carry")], out)
    await journal.close(delete=False, timeout=5)
    snap = await store.takeover("s", "b")
    assert snap is not None
    assert (snap.frames, snap.done_chars, snap.segments, snap.carry) == (36, 13, 1, b"carry")
    frames = await store.frames_from("s", 0)
    assert frames[0].message.startswith('{"type":"segment"') and frames[1].message == ""


async def test_a_worker_without_chunk_audio_journals_whole_chunks() -> None:
    store, sink, journal = await _sink(whole_chunks=True)
    out = Released()
    sink.deliver(0, [SegmentStart(0, "One.")], out)
    sink.deliver(0, [FRAME, FRAME], out)
    await asyncio.sleep(0.1)
    assert out.items == []  # held until the chunk ends
    sink.deliver(0, [FRAME, ChunkDone(0, 4, 0.0, 0.0, 0.06)], out)
    sink.deliver(0, [UtteranceDone("end")], out)
    await journal.close(delete=False, timeout=5)
    assert out.items.count(FRAME) == 3
    snap = await store.takeover("s", "b")
    assert snap is not None and snap.finished and snap.frames == 3


async def test_dropped_output_is_never_stored_and_a_broken_journal_releases_at_once() -> None:
    store, sink, journal = await _sink()
    out = Released()
    sink.deliver(0, [ChunkPcm(0, 4, b""), *[FRAME] * 30], out)
    sink.deliver(0, [FRAME], out)  # held for a batch
    sink.drop()  # barge-in
    await asyncio.sleep(0.1)
    assert out.items.count(FRAME) == 30
    journal.broken = True
    sink.deliver(1, [FRAME], out)
    assert out.items.count(FRAME) == 31 and not sink.journaling and not sink.resumable
    await journal.close(delete=False, timeout=5)
    snap = await store.takeover("s", "b")
    assert snap is not None and snap.frames == 30
