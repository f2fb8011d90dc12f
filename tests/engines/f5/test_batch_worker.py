"""The batched F5 worker without sockets: the tiny model, real audio pipelines, and
owners that record what they are given (as the session's ``deliver`` does)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from server.engines.f5.batch_worker import BatchedEngineWorker
from server.engines.f5.engine import F5Engine
from server.engines.worker import (
    ChunkDone,
    EngineFailed,
    Job,
    Output,
    SegmentStart,
    UtteranceDone,
)
from server.streaming.encoder import make_encoder
from server.streaming.pipeline import AudioPipeline
from tests.engines.f5.conftest import F5Files, make_engine

LONG = (
    "This sentence is long enough to be spoken in several pieces by the engine, "
    "because the first piece of an utterance is kept short for fast first audio, "
    "and the pieces after it grow."
)


class Owner:
    def __init__(self, name: str, voice: str = "alice", log: list[str] | None = None) -> None:
        self.session_id = name
        self.log = log if log is not None else []  # session ids in SegmentStart order
        self.voice = voice
        self.generation = 0
        self.pipeline_generation = 0
        self.runs_out = 0.0
        self.pipeline = AudioPipeline(24000, make_encoder("pcm_s16le", 24000, 20, None))
        self.items: list[Output] = []
        self.late: list[Output] = []  # output of a generation already cancelled
        self.done = asyncio.Event()
        self.failed = asyncio.Event()
        self.audio = asyncio.Event()  # a frame has come

    def can_take_work(self) -> bool:
        return True

    def wants_chunk_pcm(self) -> bool:
        return False

    def deliver(self, generation: int, items: list[Output]) -> None:
        if generation != self.generation:
            self.late.extend(items)
            return
        for it in items:
            if isinstance(it, SegmentStart):
                self.log.append(self.session_id)
            if isinstance(it, UtteranceDone):
                self.done.set()
            if isinstance(it, EngineFailed):
                self.failed.set()
            if isinstance(it, bytes):
                self.audio.set()
        self.items.extend(items)

    def job(self, index: int, text: str, first: bool = False) -> Job:
        return Job(
            self, self.generation, "chunk", text=text, voice=self.voice, first=first, index=index
        )

    def of(self, kind: type) -> list[Output]:
        return [i for i in self.items if isinstance(i, kind)]


async def test_first_pieces_go_first_and_share_a_batch(f5_engine: F5Engine) -> None:
    starts: list[str] = []
    a, b, c = Owner("a", log=starts), Owner("b", "f5_basic_en", starts), Owner("c", log=starts)
    worker = BatchedEngineWorker(f5_engine, max_batch=2)
    # c's chunk is queued first but is not the start of an utterance; a and b's are.
    worker.submit(c.job(3, "A later chunk of an utterance, already under way."))
    worker.submit(a.job(0, LONG, first=True))
    worker.submit(b.job(0, "Hello from the second voice.", first=True))
    for o in (a, b, c):
        worker.submit(Job(o, 0, "flush"))
    worker.start()
    await asyncio.wait_for(asyncio.gather(a.done.wait(), b.done.wait(), c.done.wait()), 120)
    await worker.stop()
    # The two first chunks went ahead of c's, together, as one batch of two.
    assert worker.batches[0] == 2
    assert sorted(starts[:2]) == ["a", "b"] and starts[2] == "c"
    # a's long chunk took several pieces, sharing later batches with the others.
    assert len(f5_engine.plan(LONG, "alice", 1.0, True)) >= 3
    assert sum(worker.batches) >= 5 and max(worker.batches) == 2
    for o in (a, b, c):
        kinds = [type(i).__name__ for i in o.items if not isinstance(i, bytes)]
        assert kinds == ["SegmentStart", "ChunkDone", "UtteranceDone"], kinds
        first_seg = next(k for k, i in enumerate(o.items) if isinstance(i, SegmentStart))
        assert first_seg == 0  # the segment is announced before its first frame
        (done,) = o.of(ChunkDone)
        assert isinstance(done, ChunkDone) and done.audio_s > 0.5
    assert worker.queue_depth == 0


async def test_cancel_removes_queued_work_and_late_results_are_dropped(
    f5_engine: F5Engine,
) -> None:
    a = Owner("a")
    worker = BatchedEngineWorker(f5_engine, max_batch=4)
    for i in range(6):
        worker.submit(a.job(i, LONG, first=i == 0))
    worker.start()
    await asyncio.wait_for(a.audio.wait(), 60)
    # Barge-in, as the session does it: new generation, then cancel.
    a.generation += 1
    removed = worker.cancel("a")
    assert removed >= 4 and worker.queue_depth == 0
    worker.submit(a.job(9, "Fresh words after the barge in."))
    worker.submit(Job(a, a.generation, "flush"))
    await asyncio.wait_for(a.done.wait(), 120)
    await worker.stop()
    # Only the piece being encoded at the cancel may still have sent frames (the session
    # drops them by generation); nothing of the queued chunks ran.
    late_frames = sum(1 for i in a.late if isinstance(i, bytes))
    assert late_frames * 0.02 <= 2.5
    assert [i.index for i in a.late if isinstance(i, SegmentStart | ChunkDone)] in ([], [0])
    segs = [i.index for i in a.items if isinstance(i, SegmentStart)]
    assert segs[-1] == 9 and segs.count(0) == 1 and 1 not in segs


async def test_a_failing_model_fails_over_and_its_breaker_opens(
    f5_files: F5Files, tmp_path: Path
) -> None:
    broken = tmp_path / "de" / "model.safetensors"
    broken.parent.mkdir()
    broken.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    shutil.copy(f5_files.checkpoint.parent / "vocab.txt", broken.parent)
    registry = tmp_path / "models.toml"
    registry.write_text(
        f'[[model]]\nkey = "de"\ncheckpoint = "{broken}"\nconfig = "{f5_files.config}"\n'
        'languages = ["de"]\n'
    )
    engine = make_engine(f5_files, f5_registry=registry)
    worker = BatchedEngineWorker(engine, max_batch=4, breaker_failures=2, breaker_cooldown_s=60)
    worker.start()
    hans, alice = Owner("hans", "hans"), Owner("alice")
    failures: list[EngineFailed] = []
    for n in range(3):
        hans.failed.clear()
        job = hans.job(n, f"Sentence number {n} for the German model.", first=True)
        worker.submit(job)
        worker.submit(alice.job(n, f"English sentence {n} goes on fine.", first=True))
        await asyncio.wait_for(hans.failed.wait(), 60)
        (f,) = [i for i in hans.items if isinstance(i, EngineFailed)][n:]
        assert isinstance(f, EngineFailed)
        failures.append(f)
        # The unspoken text comes back for the fallback engine, as the same chunk.
        assert f.retry is not None and [r.text for r in f.retry] == [job.text]
        assert f.retry[0].index == n and f.retry[0].first
    assert [f.code for f in failures] == ["engine_error", "engine_error", "engine_unavailable"]
    assert "model.safetensors" in failures[0].message or "header" in failures[0].message.lower()
    assert "not sending it work" in failures[2].message
    assert worker.breaker("de").state == "open"
    assert worker.breaker("default").state == "closed"
    worker.submit(Job(alice, 0, "flush"))
    await asyncio.wait_for(alice.done.wait(), 120)
    await worker.stop()
    assert len(alice.of(ChunkDone)) == 3 and not alice.of(EngineFailed)


async def test_f5_is_given_the_normalised_text(f5_engine: F5Engine) -> None:
    """Emoji and control characters never reach F5's tokenizer; a chunk of nothing but
    them is spoken as nothing, without a forward pass."""
    a = Owner("a")
    worker = BatchedEngineWorker(f5_engine, max_batch=1)
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    worker.submit(a.job(0, family * 30, first=True))
    worker.submit(a.job(1, "Hello " + family * 30 + " there."))
    worker.submit(Job(a, 0, "flush"))
    worker.start()
    await asyncio.wait_for(a.done.wait(), 120)
    await worker.stop()
    done = {d.index: d for d in a.of(ChunkDone) if isinstance(d, ChunkDone)}
    assert done[0].audio_s == 0 and done[0].chars == len(family * 30)
    assert 0.2 < done[1].audio_s < 5.0  # "Hello there.", not ninety emoji
    assert worker.batches == [1]  # one forward pass: the emoji-only chunk had none
