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
  its next piece; its late output is discarded by generation number.

A plain ``asyncio.Queue`` is FIFO across sessions, so one chatty session would
delay everyone's first audio; hence this small scheduler.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from server.engines.base import Engine, EngineError
from server.streaming.pipeline import AudioPipeline

log = structlog.get_logger("voxwire.worker")

# Engine output is encoded in slices of this many seconds, so the first frames of a
# long sentence leave before the rest of it is encoded.
_SLICE_S = 0.1


@dataclass(slots=True)
class SegmentStart:
    """Marks where a chunk's audio begins in the frame stream."""

    index: int
    text: str


@dataclass(slots=True)
class ChunkDone:
    """A chunk finished on the engine; timings for metrics."""

    index: int
    chars: int
    engine_first_s: float | None
    engine_s: float
    audio_s: float


@dataclass(slots=True)
class UtteranceDone:
    """All audio of an utterance up to a flush/end marker has been delivered."""

    marker: str  # "flush" or "end"


@dataclass(slots=True)
class EngineFailed:
    code: str
    message: str


Output = bytes | SegmentStart | ChunkDone | UtteranceDone | EngineFailed


class JobOwner(Protocol):
    """What the worker needs from a session (implemented by server.session.Session)."""

    session_id: str
    generation: int
    pipeline: AudioPipeline
    pipeline_generation: int  # touched only by the worker thread running the session's job

    def can_take_work(self) -> bool: ...

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
    first: bool = False
    index: int = 0
    queued_at: float = field(default_factory=time.perf_counter)


class EngineWorker:
    def __init__(
        self,
        engine: Engine,
        threads: int = 1,
        on_queue_depth: Callable[[int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.threads = threads
        self._queues: OrderedDict[str, deque[Job]] = OrderedDict()
        self._busy: set[str] = set()
        self._running = 0
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix=f"engine-{engine.name}")
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._depth = 0
        self._on_depth = on_queue_depth or (lambda _n: None)
        self._loop: asyncio.AbstractEventLoop | None = None

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
        return self._depth

    def submit(self, job: Job) -> None:
        q = self._queues.get(job.owner.session_id)
        if q is None:
            q = self._queues[job.owner.session_id] = deque()
        q.append(job)
        self._set_depth(self._depth + 1)
        self._wake.set()

    def cancel(self, session_id: str) -> int:
        """Drop a session's queued jobs; returns how many were removed."""
        q = self._queues.pop(session_id, None)
        n = len(q) if q else 0
        if n:
            self._set_depth(self._depth - n)
        return n

    def wake(self) -> None:
        """A session may take work again (its unsent audio drained)."""
        self._wake.set()

    def _set_depth(self, n: int) -> None:
        self._depth = n
        self._on_depth(n)

    def _pick(self) -> Job | None:
        chosen: str | None = None
        for sid, q in self._queues.items():
            if sid in self._busy or not q or not q[0].owner.can_take_work():
                continue
            if q[0].first:
                chosen = sid
                break
            if chosen is None:
                chosen = sid
        if chosen is None:
            return None
        q = self._queues[chosen]
        job = q.popleft()
        # Round robin: the session goes to the back of the line.
        if q:
            self._queues.move_to_end(chosen)
        else:
            del self._queues[chosen]
        self._set_depth(self._depth - 1)
        return job

    async def _dispatch(self) -> None:
        while True:
            job = self._pick() if self._running < self.threads else None
            if job is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            if job.generation != job.owner.generation:
                continue  # cancelled while queued
            self._busy.add(job.owner.session_id)
            self._running += 1
            task = asyncio.create_task(self._run(job))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _run(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._run_blocking, job, loop)
        except Exception as exc:  # never let one job take the worker down
            log.exception("job_failed", session_id=job.owner.session_id, error=repr(exc))
            job.owner.deliver(job.generation, [EngineFailed("engine_error", str(exc))])
        finally:
            self._busy.discard(job.owner.session_id)
            self._running -= 1
            self._wake.set()

    # -- worker thread side -----------------------------------------------------

    def _run_blocking(self, job: Job, loop: asyncio.AbstractEventLoop) -> None:
        owner = job.owner
        pipe = owner.pipeline

        def send(items: list[Output]) -> None:
            if items:
                loop.call_soon_threadsafe(owner.deliver, job.generation, items)

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
            return

        t0 = time.perf_counter()
        first_s: float | None = None
        audio_n = 0
        pending: list[Output] = [SegmentStart(job.index, job.text)]
        slice_n = max(1, int(self.engine.sample_rate * _SLICE_S))
        try:
            for piece in self.engine.synthesize(job.text, job.voice, job.speed):
                if not live():
                    return
                if first_s is None:
                    first_s = time.perf_counter() - t0
                audio_n += len(piece)
                for start in range(0, len(piece), slice_n):
                    frames = pipe.push(piece[start : start + slice_n])
                    if frames:
                        pending.extend(frames)
                        send(pending)
                        pending = []
                    if not live():
                        return
        except EngineError as exc:
            send([EngineFailed(exc.code, exc.message)])
            return
        if not live():
            return
        pending.extend(pipe.end_chunk())
        pending.append(
            ChunkDone(
                job.index,
                len(job.text),
                first_s,
                time.perf_counter() - t0,
                audio_n / float(self.engine.sample_rate),
            )
        )
        send(pending)
