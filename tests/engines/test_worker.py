"""The engine worker's scheduling, without sockets: a real engine (Piper replayed
by the zero-cost engine), real audio pipelines, and owners that record output."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from server.engines.base import Audio, EngineError, EngineInfo, EngineOptions, VoiceInfo
from server.engines.piper import DEFAULT_VOICE, PiperEngine
from server.engines.process import ProcessEngine, ProcessOptions
from server.engines.replay import ReplayEngine
from server.engines.widths import group_of
from server.engines.worker import (
    ChunkDone,
    EngineFailed,
    EngineWorker,
    Job,
    Output,
    SegmentStart,
    UtteranceDone,
)
from server.streaming.encoder import make_encoder
from server.streaming.pipeline import AudioPipeline


@pytest.fixture(scope="module")
def replay() -> Iterator[ReplayEngine]:
    engine = ReplayEngine(PiperEngine())
    engine.load()
    yield engine


class Owner:
    def __init__(self, name: str, rate: int, log: list[tuple[str, int]]) -> None:
        self.session_id = name
        self.generation = 0
        self.pipeline_generation = 0
        self.runs_out = 0.0
        self.pipeline = AudioPipeline(rate, make_encoder("pcm_s16le", 16000, 20, None))
        self.items: list[Output] = []
        self.accepting = True
        self.log = log
        self.done = asyncio.Event()

    def can_take_work(self) -> bool:
        return self.accepting

    def wants_chunk_pcm(self) -> bool:
        return False

    def deliver(self, generation: int, items: list[Output]) -> None:
        if generation != self.generation:
            return
        for it in items:
            if isinstance(it, SegmentStart):
                self.log.append((self.session_id, it.index))
            if isinstance(it, UtteranceDone):
                self.done.set()
        self.items.extend(items)

    def frames(self) -> list[bytes]:
        return [i for i in self.items if isinstance(i, bytes)]


def chunk(owner: Owner, i: int, text: str = "Some words to say here.", first: bool = False) -> Job:
    return Job(
        owner, owner.generation, "chunk", text=text, voice=DEFAULT_VOICE, first=first, index=i
    )


async def test_round_robin_and_first_chunks_first(replay: ReplayEngine) -> None:
    log: list[tuple[str, int]] = []
    a, b, c = (Owner(n, replay.sample_rate, log) for n in "abc")
    worker = EngineWorker(replay, threads=1)
    # queue everything before the dispatcher runs, so the order is the scheduler's
    for i in range(4):
        worker.submit(chunk(a, i, first=i == 0))
    for i in range(4):
        worker.submit(chunk(b, i, first=False))
    worker.submit(chunk(c, 0, first=True))
    for o in (a, b, c):
        worker.submit(Job(o, 0, "flush"))
    assert worker.queue_depth == 12
    worker.start()
    await asyncio.wait_for(asyncio.gather(a.done.wait(), b.done.wait(), c.done.wait()), 30)
    await worker.stop()
    # first chunks of utterances first (a0, c0), then sessions alternate
    assert log[:2] == [("a", 0), ("c", 0)]
    rest = [s for s, _ in log[2:]]
    assert rest[:6] == ["b", "a", "b", "a", "b", "a"]
    for o in (a, b, c):
        assert [i for s, i in log if s == o.session_id] == sorted(
            i for s, i in log if s == o.session_id
        )
        assert o.frames() and isinstance(o.items[-1], UtteranceDone)
    assert worker.queue_depth == 0


async def test_cancel_removes_queued_work_and_drops_late_output(replay: ReplayEngine) -> None:
    log: list[tuple[str, int]] = []
    a = Owner("a", replay.sample_rate, log)
    worker = EngineWorker(replay, threads=1)
    for i in range(5):
        worker.submit(chunk(a, i))
    assert worker.cancel("a") == 5
    assert worker.queue_depth == 0
    a.generation += 1  # what the session does on barge-in
    worker.submit(chunk(a, 9, text="Fresh words."))
    worker.submit(Job(a, a.generation, "flush"))
    worker.start()
    await asyncio.wait_for(a.done.wait(), 30)
    await worker.stop()
    assert log == [("a", 9)]


async def test_backpressured_session_is_skipped(replay: ReplayEngine) -> None:
    log: list[tuple[str, int]] = []
    slow, fast = Owner("slow", replay.sample_rate, log), Owner("fast", replay.sample_rate, log)
    slow.accepting = False
    worker = EngineWorker(replay, threads=1)
    worker.start()
    worker.submit(chunk(slow, 0, first=True))
    for i in range(3):
        worker.submit(chunk(fast, i, first=i == 0))
    worker.submit(Job(fast, 0, "flush"))
    await asyncio.wait_for(fast.done.wait(), 30)
    assert [s for s, _ in log] == ["fast"] * 3
    assert worker.queue_depth == 1  # slow's job waits
    slow.accepting = True
    worker.submit(Job(slow, 0, "flush"))
    worker.wake()
    await asyncio.wait_for(slow.done.wait(), 30)
    await worker.stop()
    assert log[-1] == ("slow", 0)


class FailingEngine(PiperEngine):
    """Piper that fails on one word: engine faults reach the session as events."""

    def synthesize(
        self, text: str, voice: str, speed: float, options: EngineOptions | None = None
    ) -> Iterator[Audio]:
        if "explode" in text:
            raise RuntimeError("model fell over")
        if "refuse" in text:
            raise EngineError("engine_refused", "cannot say that")
        yield from super().synthesize(text, voice, speed, options)


async def test_engine_faults_become_events_and_the_worker_goes_on() -> None:
    engine = FailingEngine()
    engine.load()
    log: list[tuple[str, int]] = []
    a = Owner("a", engine.sample_rate, log)
    worker = EngineWorker(engine, threads=1)
    worker.start()
    worker.submit(chunk(a, 0, text="Please explode."))
    worker.submit(chunk(a, 1, text="Please refuse."))
    worker.submit(chunk(a, 2, text="Then carry on."))
    worker.submit(Job(a, 0, "flush"))
    await asyncio.wait_for(a.done.wait(), 30)
    await worker.stop()
    failures = [i for i in a.items if isinstance(i, EngineFailed)]
    assert [(f.code, f.message) for f in failures] == [
        ("engine_error", "model fell over"),
        ("engine_refused", "cannot say that"),
    ]
    done = [i for i in a.items if isinstance(i, ChunkDone)]
    assert [d.index for d in done] == [2] and done[0].audio_s > 0.5


class FixedSpeech:
    """One take of real speech (from the replay engine) for every text, as long as the
    text would take to say: the same text always gives the same audio."""

    name = "fixed"

    def __init__(self, source: ReplayEngine) -> None:
        self._source = source
        self.sample_rate = source.sample_rate
        self._audio = np.concatenate(list(source.synthesize("x" * 3000, DEFAULT_VOICE, 1.0)))

    def load(self) -> None:
        pass

    def info(self) -> EngineInfo:
        return self._source.info()

    def voices(self) -> list[VoiceInfo]:
        return self._source.voices()

    def plan(self, text: str, voice: str, speed: float, first: bool) -> list[str] | None:
        return None

    def synthesize(self, text: str, voice: str, speed: float) -> Iterator[Audio]:
        yield self._audio[: int(len(text) / 15 * self.sample_rate)]


class TracingOwner(Owner):
    """An owner that also notes, in a log shared by all owners, when each chunk ends."""

    def __init__(self, name: str, rate: int, log: list[tuple[str, int]]) -> None:
        super().__init__(name, rate, log)
        self.sounding = asyncio.Event()  # its first frames have come

    def deliver(self, generation: int, items: list[Output]) -> None:
        super().deliver(generation, items)
        for it in items:
            if isinstance(it, ChunkDone) and generation == self.generation:
                self.log.append((self.session_id + ":done", it.index))
        if self.frames():
            self.sounding.set()


async def test_first_chunk_pauses_a_long_chunk_which_resumes_intact(replay: ReplayEngine) -> None:
    engine = FixedSpeech(replay)
    long_text = "a long paragraph " * 170  # about 190 s of speech: a long job on the thread
    # Reference: the long chunk encoded alone, never paused.
    ref = TracingOwner("ref", engine.sample_rate, [])
    alone = EngineWorker(engine, threads=1)
    alone.start()
    alone.submit(chunk(ref, 0, text=long_text))
    alone.submit(Job(ref, 0, "flush"))
    await asyncio.wait_for(ref.done.wait(), 60)
    await alone.stop()

    log: list[tuple[str, int]] = []
    a, b = (TracingOwner(n, engine.sample_rate, log) for n in "ab")
    worker = EngineWorker(engine, threads=1)
    worker.start()
    worker.submit(chunk(a, 0, text=long_text))
    worker.submit(Job(a, 0, "flush"))
    await asyncio.wait_for(a.sounding.wait(), 30)  # the long chunk is on the only thread
    worker.submit(chunk(b, 0, text="Hello there, these are first words.", first=True))
    worker.submit(Job(b, 0, "flush"))
    await asyncio.wait_for(asyncio.gather(a.done.wait(), b.done.wait()), 60)
    await worker.stop()
    # b's first chunk did not wait for the whole of a's long one ...
    assert log.index(("b:done", 0)) < log.index(("a:done", 0)), log
    # ... and a's chunk, paused and resumed, came out exactly as when it ran alone.
    assert b"".join(a.frames()) == b"".join(ref.frames())
    assert [d.audio_s for d in a.items if isinstance(d, ChunkDone)] == [
        d.audio_s for d in ref.items if isinstance(d, ChunkDone)
    ]


class SliceRecorder(AudioPipeline):
    """A real pipeline that records how much engine audio each push brought."""

    def __init__(self, rate: int) -> None:
        super().__init__(rate, make_encoder("pcm_s16le", 16000, 20, None))
        self.pushes: list[int] = []

    def push(self, samples: Any) -> list[bytes]:
        self.pushes.append(len(samples))
        return super().push(samples)


async def test_a_chunk_leaves_in_small_slices_until_its_listener_has_audio(
    replay: ReplayEngine,
) -> None:
    engine = FixedSpeech(replay)
    rate = engine.sample_rate
    owner = Owner("a", rate, [])
    owner.pipeline = recorder = SliceRecorder(rate)
    worker = EngineWorker(engine, threads=1)
    worker.start()
    worker.submit(chunk(owner, 0, text="x" * 45, first=True))  # about 3 s of speech
    worker.submit(Job(owner, 0, "flush"))
    await asyncio.wait_for(owner.done.wait(), 30)
    await worker.stop()
    small, large = int(rate * 0.1), int(rate * 0.4)
    # 0.1 s slices until 0.5 s is out (the first frames leave at once), then 0.4 s ones:
    # a quarter of the hand-offs for the rest, whose listener has audio in hand.
    assert recorder.pushes[:5] == [small] * 5
    assert recorder.pushes[5:-1] == [large] * (len(recorder.pushes) - 6)
    assert 0 < recorder.pushes[-1] <= large
    total_s = sum(recorder.pushes) / rate  # (the text's audio bound trims the 3 s)
    assert total_s > 2.0
    assert abs(len(owner.frames()) - total_s / 0.02) <= 1  # every 20 ms frame came out


class Runaway(FixedSpeech):
    """Real speech, but 46 s of it for any text (what Piper made of 80 family emoji),
    in 2 s pieces; it records the text it was given."""

    name = "runaway"

    def __init__(self, source: ReplayEngine) -> None:
        super().__init__(source)
        self.texts: list[str] = []
        self.closed = 0

    def synthesize(self, text: str, voice: str, speed: float) -> Iterator[Audio]:
        self.texts.append(text)
        piece = self._audio[: 2 * self.sample_rate]
        try:
            for _ in range(23):
                yield piece
        finally:
            self.closed += 1


async def test_the_engine_speaks_the_normalised_text_and_runaway_audio_is_cut(
    replay: ReplayEngine,
) -> None:
    from server.streaming.normalize import audio_budget_s, speakable

    engine = Runaway(replay)
    cuts: list[int] = []
    log: list[tuple[str, int]] = []
    a = Owner("a", engine.sample_rate, log)
    worker = EngineWorker(engine, threads=1, on_output_cut=lambda: cuts.append(1))
    worker.start()
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"
    text = "Hi " + family * 80 + " there."
    silent = family * 3  # nothing to say: the engine is not called
    worker.submit(chunk(a, 0, text=text))
    worker.submit(chunk(a, 1, text=silent))
    worker.submit(Job(a, 0, "flush"))
    await asyncio.wait_for(a.done.wait(), 30)
    await worker.stop()
    assert engine.texts == [speakable(text)] == ["Hi there."]
    done = [i for i in a.items if isinstance(i, ChunkDone)]
    assert [d.index for d in done] == [0, 1]
    assert done[0].chars == len(text)  # the journal counts what the client sent
    budget = audio_budget_s(text, 1.0)
    assert done[0].audio_s <= budget + 0.01 and budget < 5
    assert len(a.frames()) * 0.02 <= budget + 0.1
    assert done[1].audio_s == 0
    assert cuts == [1] and engine.closed == 1  # the engine was stopped, not drained


class CountingProcesses(ProcessEngine):
    """The real process engine, counting the read-aheads it started."""

    def __init__(self) -> None:
        super().__init__("piper", ProcessOptions(size=2, warm_text=""))
        self.started: list[str] = []
        self.started_at: list[float] = []
        self.pieces_at: list[float] = []  # when the worker got each piece it asked for
        self.groups: list[int] = []  # each request's group (server/engines/widths.py)

    def try_synthesize(self, text: str, *args: Any, **kw: Any) -> Any:
        self.groups.append(kw.get("group", args[4] if len(args) > 4 else 0))
        ahead = super().try_synthesize(text, *args, **kw)
        if ahead is not None:
            self.started.append(text)
            self.started_at.append(time.perf_counter())
        return ahead

    def synthesize(self, *args: Any, **kw: Any) -> Iterator[Audio]:
        self.groups.append(kw.get("group", 0))
        for piece in super().synthesize(*args, **kw):
            self.pieces_at.append(time.perf_counter())
            yield piece


@pytest.fixture(scope="module")
def processes() -> Iterator[CountingProcesses]:
    engine = CountingProcesses()
    engine.load()
    yield engine
    engine.close()


async def test_a_lone_sessions_next_chunk_is_read_ahead(processes: CountingProcesses) -> None:
    """One session, three chunks queued: the second and third are started on the idle
    process while the one before is encoded, and every chunk's audio still comes, in
    order and whole."""
    texts = ["First sentence of three.", "The second one is here.", "And the third ends it."]
    processes.started.clear()
    processes.groups.clear()
    alone = EngineWorker(processes, threads=1)
    alone.start()
    a = Owner("a", processes.sample_rate, [])
    try:
        for i, t in enumerate(texts):
            alone.submit(chunk(a, i, t, first=i == 0))
        alone.submit(Job(a, 0, "end"))
        await asyncio.wait_for(a.done.wait(), 60)
    finally:
        await alone.stop()
    assert processes.started == texts[1:]
    # Each request names the session, so its chunk and its read-ahead don't narrow
    # each other (server/engines/widths.py).
    assert processes.groups == [group_of("a")] * 3 and group_of("a") != group_of("b")
    done = [i for i in a.items if isinstance(i, ChunkDone)]
    assert [d.index for d in done] == [0, 1, 2] and all(d.audio_s > 0.8 for d in done)

    # Nothing lost or doubled: as much audio as the engine gives the three directly
    # (Piper samples its durations, hence the tolerance).
    direct = sum(len(x) for t in texts for x in processes.synthesize(t, DEFAULT_VOICE, 1.0))
    assert sum(d.audio_s for d in done) == pytest.approx(direct / processes.sample_rate, rel=0.25)


async def test_the_next_chunk_synthesizes_beside_the_rest_of_a_long_one(
    processes: CountingProcesses,
) -> None:
    """A chunk of several sentences: the next chunk starts on the other process once the
    first sentence's audio is in, not after the last."""
    processes.started.clear()
    processes.started_at.clear()
    processes.pieces_at.clear()
    worker = EngineWorker(processes, threads=1)
    worker.start()
    a = Owner("a", processes.sample_rate, [])
    long = "The first sentence is here. A second one follows it. Then a third. And a fourth."
    try:
        worker.submit(chunk(a, 0, long, first=True))
        worker.submit(chunk(a, 1, "The next chunk comes after them."))
        worker.submit(Job(a, 0, "end"))
        await asyncio.wait_for(a.done.wait(), 60)
    finally:
        await worker.stop()
    assert processes.started == ["The next chunk comes after them."]
    assert len(processes.pieces_at) >= 3  # the long chunk came sentence by sentence
    assert processes.pieces_at[0] < processes.started_at[0] < processes.pieces_at[-1]
    done = [i for i in a.items if isinstance(i, ChunkDone)]
    assert [d.index for d in done] == [0, 1] and all(d.audio_s > 1.0 for d in done)


async def test_a_cancelled_sessions_read_ahead_is_dropped(processes: CountingProcesses) -> None:
    """Barge-in while the next chunk is being read ahead: it is cancelled in its process,
    which is free again at once (not after synthesizing forty sentences)."""
    worker = EngineWorker(processes, threads=1)  # not started: the queue holds the job
    a = Owner("a", processes.sample_rate, [])
    job = chunk(a, 1, "One sentence here. " * 40)
    worker.submit(job)
    worker._read_ahead("a")
    assert job.ahead is not None
    assert worker.cancel("a") == 1 and job.ahead is None
    deadline = time.monotonic() + 10
    while len(processes._idle) < processes.options.size:
        assert time.monotonic() < deadline, "the read-ahead still holds its process"
        await asyncio.sleep(0.05)
    await worker.stop()


async def test_no_read_ahead_while_another_session_waits(processes: CountingProcesses) -> None:
    """Two sessions with work queued: each chunk waits its turn (no read-ahead takes a
    process another session's chunk needs)."""
    processes.started.clear()
    worker = EngineWorker(processes, threads=1)
    worker.start()
    log: list[tuple[str, int]] = []
    a, b = Owner("a", processes.sample_rate, log), Owner("b", processes.sample_rate, log)
    try:
        for i in range(2):
            worker.submit(chunk(a, i, "Session a speaks this one.", first=i == 0))
            worker.submit(chunk(b, i, "Session b speaks this one.", first=i == 0))
        worker.submit(Job(a, 0, "end"))
        worker.submit(Job(b, 0, "end"))
        await asyncio.wait_for(asyncio.gather(a.done.wait(), b.done.wait()), 60)
    finally:
        await worker.stop()
    # Only once the other session had nothing queued could a chunk be read ahead.
    assert len(processes.started) <= 1
    assert sorted(log) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
