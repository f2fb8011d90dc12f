"""The engine worker: a fair asyncio job queue in front of an engine's threads.

Sessions submit jobs (one text chunk each, or an utterance-end marker). A
dispatcher coroutine hands them to a small thread pool, so synthesis, resampling
and encoding never run on the event loop. Scheduling rules:

- each session has at most one job in flight, so its audio stays in order;
- sessions are served round-robin, and a session whose next job is the first
  chunk of an utterance goes ahead (it decides time to first audio);
- a session whose unsent audio is above its bound is skipped until it drains
  (backpressure reaches the engine, not only the socket);
- cancelled work is removed from the queue, and work already running stops at
  its next piece; its late output is discarded by generation number;
- a first chunk that finds every thread busy asks one running job to pause at
  its next slice (~1 ms of encoding): a later chunk, or a first chunk whose first
  ``_URGENT_S`` of audio is out. The paused job goes back to the front of its
  session's queue and resumes where it stopped, so first audio does not wait for
  someone else's long sentence to be encoded.

A plain ``asyncio.Queue`` is FIFO across sessions, so one chatty session would
delay everyone's first audio; hence this small scheduler.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Container, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import structlog

from server.engines.base import Audio, Engine, EngineError, to_pcm16
from server.streaming.normalize import audio_budget_s, speakable
from server.streaming.pipeline import AudioPipeline

log = structlog.get_logger("voxwire.worker")

# Engine output is encoded in slices of this many seconds, so the first frames of a
# long sentence leave before the rest of it is encoded.
_SLICE_S = 0.1
# A first chunk is not paused for another until this much of its audio is out: by
# then its listener has enough buffered to wait a few milliseconds.
_URGENT_S = 0.5


@dataclass(slots=True)
class SegmentStart:
    """Marks where a chunk's audio begins in the frame stream."""

    index: int
    text: str


@dataclass(slots=True)
class ChunkPcm:
    """A chunk's whole engine audio, handed over before any of its frames (resume: the
    session journals it, so another node can finish the chunk from it)."""

    index: int
    chars: int
    pcm: bytes  # 16-bit little-endian mono at the engine's rate (half float32's size)


@dataclass(slots=True)
class ChunkDone:
    """A chunk finished on the engine; timings for metrics."""

    index: int
    chars: int
    engine_first_s: float | None
    engine_s: float
    audio_s: float
    # The framer's remainder after the chunk (float32 at the output rate): the start of
    # the next frame, journaled so a node that takes the session over continues from it.
    carry: bytes = b""


@dataclass(slots=True)
class UtteranceDone:
    """All audio of an utterance up to a flush/end marker has been delivered."""

    marker: str  # "flush" or "end"


@dataclass(slots=True)
class EngineFailed:
    code: str
    message: str
    # Set by an engine that failed over (F5): the work to run on another engine instead.
    # The session may take the rest of its queue with ``take`` and move to its fallback.
    retry: list[Job] | None = None
    chars: int = 0  # text of the failed chunk, given up on (no retry)
    moved: bool = False  # the session already moved its work elsewhere (resume journaling)


Output = bytes | SegmentStart | ChunkPcm | ChunkDone | UtteranceDone | EngineFailed


class JobOwner(Protocol):
    """What the worker needs from a session (implemented by server.session.Session)."""

    session_id: str
    generation: int
    pipeline: AudioPipeline
    pipeline_generation: int  # touched only by the worker thread running the session's job

    def can_take_work(self) -> bool: ...

    def wants_chunk_pcm(self) -> bool:
        """Whether chunks' engine audio should be handed over whole before encoding."""
        ...

    def deliver(self, generation: int, items: list[Output]) -> None:
        """Called on the event loop with output of a job of ``generation``."""
        ...


@dataclass(slots=True)
class Job:
    owner: JobOwner
    generation: int
    kind: str  # "chunk" or "flush" or "end"
    text: str = ""
    voice: str = ""
    speed: float = 1.0
    # The opening chunk of an utterance: it goes first. EngineWorker clears it once the
    # job's first _URGENT_S of audio is out, so the rest of it may be paused for others.
    first: bool = False
    index: int = 0
    # Resume: finish a chunk from its journaled engine audio instead of the engine,
    # dropping the first ``skip_frames`` frames (another node already sent them).
    audio: Audio | None = None
    skip_frames: int = 0
    queued_at: float = field(default_factory=time.perf_counter)
    # EngineWorker preemption: the loop sets yield_requested to have the running job
    # pause at its next slice; where it stopped is kept in resume (for that worker only).
    yield_requested: bool = False
    resume: Resume | None = None


@dataclass(slots=True)
class Resume:
    """Where a paused chunk job stopped: the engine's iterator and the piece in hand."""

    worker: object
    pieces: Iterator[Audio]
    pending: list[Output]
    piece: Audio | None = None
    offset: int = 0
    pushed_n: int = 0  # engine samples through the pipeline so far
    active_s: float = 0.0  # time spent running, pauses excluded
    first_s: float | None = None
    audio_n: int = 0


class FairQueue:
    """Per-session job queues: sessions are served round-robin, a session whose next job
    is the first chunk of an utterance goes ahead, and busy or backpressured sessions are
    skipped. Shared by EngineWorker and the batched F5 worker."""

    def __init__(self, on_depth: Callable[[int], None] | None = None) -> None:
        self._queues: OrderedDict[str, deque[Job]] = OrderedDict()
        self._depth = 0
        self._on_depth = on_depth or (lambda _n: None)

    @property
    def depth(self) -> int:
        return self._depth

    def _set_depth(self, n: int) -> None:
        self._depth = n
        self._on_depth(n)

    def push(self, job: Job) -> None:
        q = self._queues.get(job.owner.session_id)
        if q is None:
            q = self._queues[job.owner.session_id] = deque()
        q.append(job)
        self._set_depth(self._depth + 1)

    def push_front(self, job: Job, next_in_round: bool = False) -> None:
        """Put a job back as its session's next one; the session goes to the back of the round
        (``next_in_round``: to its front, first among sessions without a first chunk)."""
        sid = job.owner.session_id
        q = self._queues.get(sid)
        if q is None:
            q = self._queues[sid] = deque()
        q.appendleft(job)
        self._queues.move_to_end(sid, last=not next_in_round)
        self._set_depth(self._depth + 1)

    def first_waiting(self, busy: Container[str]) -> str | None:
        """A session that could run now and whose next job is a first chunk, if any."""
        for sid, q in self._queues.items():
            if q and q[0].first and sid not in busy and q[0].owner.can_take_work():
                return sid
        return None

    def take(self, session_id: str) -> list[Job]:
        """Remove and return a session's queued jobs, in order."""
        q = self._queues.pop(session_id, None)
        if not q:
            return []
        self._set_depth(self._depth - len(q))
        return list(q)

    def pick(
        self,
        busy: Container[str],
        limit: int = 1,
        accept: Callable[[Job], bool] | None = None,
    ) -> list[Job]:
        """The next job of up to ``limit`` sessions: first chunks first, then in round-robin
        order; ``accept`` may refuse a session's next job (it then waits its turn)."""
        firsts: list[str] = []
        others: list[str] = []
        for sid, q in self._queues.items():
            if sid in busy or not q or not q[0].owner.can_take_work():
                continue
            if accept is not None and not accept(q[0]):
                continue
            (firsts if q[0].first else others).append(sid)
            if len(firsts) >= limit:
                break
        jobs = []
        for sid in (firsts + others)[:limit]:
            q = self._queues[sid]
            jobs.append(q.popleft())
            # Round robin: the session goes to the back of the line.
            if q:
                self._queues.move_to_end(sid)
            else:
                del self._queues[sid]
        if jobs:
            self._set_depth(self._depth - len(jobs))
        return jobs


class EngineWorker:
    # Hands a chunk's engine audio over whole (ChunkPcm) when its owner asks: resume
    # then streams each slice as soon as it is journaled (server/state/sessions.py).
    chunk_pcm = True

    def __init__(
        self,
        engine: Engine,
        threads: int = 1,
        on_queue_depth: Callable[[int], None] | None = None,
        on_output_cut: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.on_output_cut = on_output_cut or (lambda: None)
        self.threads = threads
        self._queue = FairQueue(on_queue_depth)
        self._busy: set[str] = set()
        self._running = 0
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix=f"engine-{engine.name}")
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running_jobs: list[Job] = []  # EngineWorker's own jobs on its threads

    # -- loop side --------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._dispatch(), name=f"worker-{self.engine.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for t in list(self._inflight):
            t.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def queue_depth(self) -> int:
        return self._queue.depth

    def submit(self, job: Job) -> None:
        self._queue.push(job)
        self._wake.set()
        if job.first and self._running >= self.threads:
            self._request_yield(job.owner.session_id)

    def _urgent_done(self) -> None:
        """A running first chunk got its first audio out: if another first chunk is still
        waiting for a thread, a running job may now pause for it."""
        if self._running >= self.threads:
            sid = self._queue.first_waiting(self._busy)
            if sid is not None:
                self._request_yield(sid)

    def _request_yield(self, session_id: str) -> None:
        """Ask one running later chunk of another session to pause for a first chunk."""
        for j in self._running_jobs:
            if j.yield_requested:
                return  # a thread is already being freed
        for j in self._running_jobs:
            if j.kind == "chunk" and not j.first and j.owner.session_id != session_id:
                j.yield_requested = True
                return

    def cancel(self, session_id: str) -> int:
        """Drop a session's queued jobs; returns how many were removed."""
        return len(self._queue.take(session_id))

    def take(self, session_id: str) -> list[Job]:
        """Remove and return a session's queued jobs (to run them elsewhere)."""
        return self._queue.take(session_id)

    def wake(self) -> None:
        """A session may take work again (its unsent audio drained)."""
        self._wake.set()

    async def _dispatch(self) -> None:
        while True:
            picked = self._queue.pick(self._busy) if self._running < self.threads else []
            job = picked[0] if picked else None
            if job is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            if job.generation != job.owner.generation:
                continue  # cancelled while queued
            self._busy.add(job.owner.session_id)
            self._running += 1
            self._running_jobs.append(job)
            task = asyncio.create_task(self._run(job))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _run(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        paused = False
        try:
            paused = await loop.run_in_executor(self._executor, self._run_blocking, job, loop)
        except Exception as exc:  # never let one job take the worker down
            log.exception("job_failed", session_id=job.owner.session_id, error=repr(exc))
            chars = len(job.text) if job.kind == "chunk" else 0
            job.owner.deliver(job.generation, [EngineFailed("engine_error", str(exc), chars=chars)])
        finally:
            self._running_jobs = [j for j in self._running_jobs if j is not job]
            self._busy.discard(job.owner.session_id)
            self._running -= 1
            if paused and job.generation == job.owner.generation:
                # Its listener is playing what it got so far: it resumes as soon as the
                # first chunk that paused it is under way, before other later chunks.
                self._queue.push_front(job, next_in_round=True)
            self._wake.set()

    # -- worker thread side -----------------------------------------------------

    def _run_blocking(self, job: Job, loop: asyncio.AbstractEventLoop) -> bool:
        """Run a job; True when it paused on request (``job.resume`` says where)."""
        owner = job.owner
        pipe = owner.pipeline

        def send(items: list[Output]) -> None:
            if items:
                loop.call_soon_threadsafe(owner.deliver, job.generation, items)
                # Let the event loop thread have the GIL and the core now, so these frames
                # leave at once instead of after the GIL's switch interval (5 ms), which
                # is how long it otherwise waits on a core this thread keeps busy.
                os.sched_yield()

        def live() -> bool:
            return owner.generation == job.generation

        if owner.pipeline_generation != job.generation:
            # First job after a barge-in: start from clean resampler/encoder state.
            pipe.reset()
            owner.pipeline_generation = job.generation
        if job.kind != "chunk":
            tail: list[Output] = list(pipe.finish())
            tail.append(UtteranceDone(job.kind))
            send(tail)
            return False

        t0 = time.perf_counter()
        r = job.resume
        job.resume = None
        slice_n = max(1, int(self.engine.sample_rate * _SLICE_S))
        urgent_n = int(self.engine.sample_rate * _URGENT_S)
        try:
            if r is None or r.worker is not self:
                head: list[Output] = [] if job.skip_frames else [SegmentStart(job.index, job.text)]
                if job.audio is not None:
                    pieces: Iterator[Audio] = iter([job.audio])
                elif owner.wants_chunk_pcm():
                    # The whole chunk first, journaled before its first frame leaves.
                    # Piper makes a sentence at once anyway; a chunk of several
                    # sentences waits for all of them.
                    whole: list[Audio] = []
                    for part in self._synthesize(job):
                        if not live():
                            return False
                        whole.append(part)
                    audio = np.concatenate(whole) if whole else np.zeros(0, np.float32)
                    head.append(ChunkPcm(job.index, len(job.text), to_pcm16(audio)))
                    pieces = iter([audio])
                else:
                    pieces = self._synthesize(job)
                r = Resume(self, pieces, head)
            while True:
                if r.piece is None:
                    if job.yield_requested:
                        break  # between engine pieces: pause before synthesizing more
                    piece = next(r.pieces, None)
                    if piece is None:
                        break
                    if not live():
                        return False
                    if r.first_s is None:
                        r.first_s = r.active_s + time.perf_counter() - t0
                    r.audio_n += len(piece)
                    r.piece, r.offset = piece, 0
                while r.offset < len(r.piece):
                    start = r.offset
                    r.offset = start + slice_n
                    frames = _skip(job, pipe.push(r.piece[start : r.offset]))
                    r.pushed_n += len(r.piece[start : r.offset])
                    if job.first and r.pushed_n >= urgent_n:
                        job.first = False  # its listener has audio: it may now be paused
                        loop.call_soon_threadsafe(self._urgent_done)
                    if frames:
                        r.pending.extend(frames)
                        send(r.pending)
                        r.pending = []
                    if not live():
                        return False
                    if job.yield_requested:
                        break
                if r.offset >= len(r.piece):
                    r.piece = None
                if job.yield_requested:
                    break
        except EngineError as exc:
            send([EngineFailed(exc.code, exc.message, chars=len(job.text))])
            return False
        if not live():
            return False
        r.active_s += time.perf_counter() - t0
        if job.yield_requested:
            # A first chunk of another session is waiting for this thread.
            job.yield_requested = False
            job.resume = r
            return True
        r.pending.extend(_skip(job, pipe.end_chunk()))
        r.pending.append(
            ChunkDone(
                job.index,
                len(job.text),
                r.first_s,
                r.active_s,
                r.audio_n / float(self.engine.sample_rate),
                pipe.carry_out(),
            )
        )
        send(r.pending)
        return False

    def _synthesize(self, job: Job) -> Iterator[Audio]:
        """The engine's audio for a chunk: from its text made safe to speak
        (server/streaming/normalize.py: what espeak-ng crashes on, emoji, symbol runs),
        and no longer than that text can take; what runs past the bound is cut."""
        spoken = speakable(job.text)
        if not spoken:
            return
        budget = int(audio_budget_s(spoken, job.speed) * self.engine.sample_rate)
        pieces = self.engine.synthesize(spoken, job.voice, job.speed)
        n = 0
        try:
            for piece in pieces:
                if n + len(piece) > budget:
                    yield piece[: budget - n]
                    log.warning(
                        "engine_output_cut",
                        engine=self.engine.name,
                        chars=len(spoken),
                        budget_s=round(budget / self.engine.sample_rate, 2),
                    )
                    self.on_output_cut()
                    return
                n += len(piece)
                yield piece
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()  # a generator: the engine stops (a process engine gets Cancel)


def _skip(job: Job, frames: list[bytes]) -> list[bytes]:
    """Drop the frames of a resumed chunk that another node already sent."""
    if not job.skip_frames or not frames:
        return frames
    n = min(job.skip_frames, len(frames))
    job.skip_frames -= n
    return frames[n:]
