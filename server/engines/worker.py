"""The engine worker: a deadline-ordered job queue in front of an engine's threads.

Streams submit jobs (one text chunk each, or an utterance-end marker). A
dispatcher coroutine hands them to a small thread pool, so synthesis, resampling
and encoding never run on the event loop. Scheduling rules:

- each stream has at most one job in flight, so its audio stays in order;
- earliest deadline first (``DeadlineQueue``): a first chunk of an utterance is due
  when it is queued (it decides time to first audio), a later chunk when its
  session's audio would run out less the engine's time to first audio; so a
  session about to fall silent goes ahead of one with seconds in hand;
- a session whose unsent audio is above its bound is skipped until it drains
  (backpressure reaches the engine, not only the socket);
- cancelled work is removed from the queue, and work already running stops at
  its next piece; its late output is discarded by generation number;
- a first chunk that finds every thread busy asks one running job to pause at
  its next slice (~1 ms of encoding): a later chunk, or a first chunk whose first
  ``_URGENT_S`` of audio is out. The paused job goes back to the front of its
  session's queue and resumes where it stopped, so first audio does not wait for
  someone else's long sentence to be encoded;
- read-ahead: once a chunk has its first engine audio, the session's next chunk is
  started on an idle engine process while this one's later sentences are made and
  encoded, so a long answer's chunks synthesize side by side on the cores and its
  encoding overlaps its synthesis instead of adding to it. Only when no other
  session has work queued (theirs comes first) and the engine can start work
  without waiting (``try_synthesize``: the process engines).

(A plain ``asyncio.Queue`` is FIFO across sessions: one chatty session would delay
everyone's first audio.)
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import structlog

from server.engines.base import Audio, Engine, EngineError, Timed, WordSpan, to_pcm16
from server.engines.handoff import Handoff
from server.engines.jobs import (
    ChunkDone,
    ChunkPcm,
    ChunkTimings,
    DeadlineQueue,
    EngineFailed,
    Job,
    JobOwner,
    Output,
    Paused,
    SegmentStart,
    Stream,
    UtteranceDone,
    WordTime,
    accepted_chars,
    drop_ahead,
    engine_kwargs,
    skip_sent,
)
from server.engines.meter import NullMeter, QueueClock, WorkerMeter
from server.engines.timing import remap
from server.engines.wordmap import remap_said
from server.streaming.normalize import audio_budget_s, speakable
from server.text import Verbalized

__all__ = [  # the job types are imported from here by the engines and the core
    "ChunkDone",
    "ChunkPcm",
    "ChunkTimings",
    "DeadlineQueue",
    "EngineFailed",
    "EngineWorker",
    "Job",
    "JobOwner",
    "Output",
    "Paused",
    "SegmentStart",
    "Stream",
    "UtteranceDone",
    "WordTime",
]

log = structlog.get_logger("voxwire.worker")

# Engine output is encoded in slices of this many seconds, so the first frames of a
# long sentence leave before the rest of it is encoded; once a chunk's first _URGENT_S
# are out its listener has audio in hand, and larger slices cost fewer hand-offs.
_SLICE_S = 0.1
_LATER_SLICE_S = 0.4
# A first chunk is not paused for another until this much of its audio is out: by
# then its listener has enough buffered to wait a few milliseconds.
_URGENT_S = 0.5


class EngineWorker:
    # Hands a chunk's engine audio over whole (ChunkPcm) when its stream asks: resume
    # then streams each slice as soon as it is journaled (server/state/sessions.py).
    chunk_pcm = True

    def __init__(
        self,
        engine: Engine,
        threads: int = 1,
        on_queue_depth: Callable[[int], None] | None = None,
        on_output_cut: Callable[[], None] | None = None,
        verbalize: Callable[[str, str | None], Verbalized] | None = None,
    ) -> None:
        self.engine = engine
        self._takes_group = getattr(engine, "takes_group", False)  # (widths.py)
        self.on_output_cut = on_output_cut or (lambda: None)
        # What the engine should be given of a chunk's text in a language (server/text/:
        # Piper's for_piper), or None: the text as it is.
        self.verbalize = verbalize
        self.threads = threads
        self._queue = DeadlineQueue(on_queue_depth)
        self._busy: set[str] = set()
        self._running = 0
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix=f"engine-{engine.name}")
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running_jobs: list[Job] = []  # EngineWorker's own jobs on its threads
        # The metrics (the app sets its EngineMeter), and time in queue for them.
        self.meter: WorkerMeter = NullMeter()
        self._queue_clock = QueueClock()
        self._handoff: Handoff | None = None

    # -- loop side --------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._handoff = Handoff(self._loop)
        self._task = asyncio.create_task(self._dispatch(), name=f"worker-{self.engine.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for t in list(self._inflight):
            t.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def handoff(self, loop: asyncio.AbstractEventLoop) -> Handoff:
        """The threads' way to the loop with output (server/engines/handoff.py)."""
        h = self._handoff
        if h is None:  # a worker used without start() (tests drive _run_blocking)
            h = self._handoff = Handoff(loop)
        return h

    @property
    def queue_depth(self) -> int:
        return self._queue.depth

    def saturated(self) -> bool:
        """Whether a new first chunk would wait (ChunkPolicy.hurry_words): live jobs fill
        every thread. A cancelled one stops at its next slice: a barge-in's next
        utterance is not hurried by the one it replaced."""
        live = sum(1 for j in self._running_jobs if j.generation == j.stream.generation)
        return live + self._queue.depth >= self.threads

    def submit(self, job: Job) -> None:
        job.queued_at = time.perf_counter()  # (a job moved here from another worker waits anew)
        self._queue.push(job)
        self._wake.set()
        if job.first and self._running >= self.threads:
            self._request_yield(job.stream.session_id)

    def urgent_done(self) -> None:
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
            if j.kind == "chunk" and not j.first and j.stream.session_id != session_id:
                j.yield_requested = True
                return

    def cancel(self, session_id: str) -> int:
        """Drop a session's queued jobs; returns how many were removed."""
        jobs = self._queue.take(session_id)
        for job in jobs:
            drop_ahead(job)
        return len(jobs)

    def take(self, session_id: str) -> list[Job]:
        """Remove and return a session's queued jobs (to run them elsewhere)."""
        jobs = self._queue.take(session_id)
        for job in jobs:
            drop_ahead(job)  # started on this worker's engine
        return jobs

    def _read_ahead(self, session_id: str) -> None:
        """The session's running chunk has all its engine audio: start its next chunk
        on an idle engine process, if nothing else waits (the module's docstring)."""
        start = getattr(self.engine, "try_synthesize", None)
        job = self._queue.head(session_id)
        if (
            start is None
            or job is None
            or job.kind != "chunk"
            or job.ahead is not None
            or job.audio is not None
            or job.generation != job.stream.generation
            or not job.stream.can_take_work()  # a client that does not read: no more
            or not self._queue.only(session_id)
        ):
            return
        spoken = self._spoken(job)[2]
        if spoken:
            timed = job.timings and hasattr(self.engine, "synthesize_timed")
            kw = engine_kwargs(job, self._takes_group)
            job.ahead = start(spoken, job.voice, job.speed, timed, **kw)

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
            if job.generation != job.stream.generation:
                drop_ahead(job)
                continue  # cancelled while queued
            self._started(job)
            self._busy.add(job.stream.session_id)
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
            log.exception("job_failed", session_id=job.stream.session_id, error=repr(exc))
            chars = accepted_chars(job) if job.kind == "chunk" else 0
            job.stream.deliver(
                job.generation, [self._failed("engine_error", str(exc), chars=chars)]
            )
        finally:
            self._running_jobs = [j for j in self._running_jobs if j is not job]
            self._release(job.stream.session_id)
            self._running -= 1
            if paused and job.generation == job.stream.generation:
                # Its listener is playing what it got so far: it resumes as soon as the
                # first chunk that paused it is under way, before other later chunks.
                self._queue.push_front(job, next_in_round=True)
            self._wake.set()

    def _started(self, job: Job) -> float:
        """A job leaves the queue for the engine (now, which it returns): its time in
        queue, the first time only (a paused job that resumes was counted already)."""
        if job.kind == "chunk" and job.paused is None:
            self.meter.queue_wait(self._queue_clock.waited(job), job.first)
        return time.perf_counter()

    def _failed(
        self, code: str, message: str, retry: list[Job] | None = None, chars: int = 0
    ) -> EngineFailed:
        """A job's failure for its stream, counted."""
        self.meter.failure(code)
        return EngineFailed(code, message, retry=retry, chars=chars)

    def _release(self, session_id: str) -> None:
        """The session's job is off the engine: it may take work again."""
        self._busy.discard(session_id)
        self._queue_clock.released(session_id)

    # -- worker thread side -----------------------------------------------------

    def _run_blocking(self, job: Job, loop: asyncio.AbstractEventLoop) -> bool:
        """Run a job; True when it paused on request (``job.paused`` says where)."""
        run = _Run(self, job, loop)
        stream = job.stream
        if stream.pipeline_generation != job.generation:
            # First job after a barge-in: start from clean resampler/encoder state.
            stream.pipeline.reset()
            stream.pipeline_generation = job.generation
        if job.kind != "chunk":
            tail: list[Output] = list(stream.pipeline.finish())
            tail.append(UtteranceDone(job.kind))
            run.send(tail)
            return False
        try:
            return run.chunk()
        except EngineError as exc:
            run.send([self._failed(exc.code, exc.message, chars=accepted_chars(job))])
            return False

    def synthesize(self, job: Job) -> Iterator[Audio | Timed]:
        """The engine's audio for a chunk: from its text made safe to speak
        (server/streaming/normalize.py: what espeak-ng crashes on, emoji, symbol runs),
        with what the engine reads wrongly written out (``verbalize``: server/text/), and
        no longer than that text can take; what runs past the bound is cut. With
        ``job.timings``, pieces may come ``Timed``, their words as spans of ``job.text``."""
        safe, said, spoken = self._spoken(job)
        ahead, job.ahead = job.ahead, None
        if not spoken:
            return
        rate = self.engine.sample_rate
        # The bound is the client's text's (digits already weigh as numbers read out), so
        # writing them out as words never loosens it.
        budget = int(audio_budget_s(safe, job.speed) * rate)
        pieces = ahead if ahead is not None else self._engine_pieces(job, spoken)

        def back(words: list[WordSpan]) -> list[WordSpan]:
            """Spans of what the engine said as spans of the client's text."""
            if said is not None:
                return remap_said(said, job.text, words)
            return remap(spoken, job.text, words)

        n = 0
        try:
            for item in pieces:
                piece = item.audio if isinstance(item, Timed) else item
                if n + len(piece) > budget:
                    yield _cut(item, budget - n, rate, back)
                    log.warning(
                        "engine_output_cut",
                        engine=self.engine.name,
                        chars=len(safe),
                        budget_s=round(budget / rate, 2),
                    )
                    self.on_output_cut()
                    return
                n += len(piece)
                yield _cut(item, len(piece), rate, back)
        finally:
            close = getattr(pieces, "close", None)  # a generator, or a plain iterator
            if close is not None:
                close()  # the engine stops (a process engine gets Cancel)

    def _spoken(self, job: Job) -> tuple[str, Verbalized | None, str]:
        """A chunk's text made safe to speak, what ``verbalize`` wrote out of it, and
        what the engine is given."""
        safe = speakable(job.text)
        said = self.verbalize(safe, job.language) if self.verbalize is not None else None
        return safe, said, said.text if said is not None else safe

    def _engine_pieces(self, job: Job, spoken: str) -> Iterator[Audio | Timed]:
        extra = engine_kwargs(job, self._takes_group)
        timed = getattr(self.engine, "synthesize_timed", None) if job.timings else None
        if timed is not None:
            pieces: Iterator[Audio | Timed] = timed(spoken, job.voice, job.speed, **extra)
            return pieces
        return self.engine.synthesize(spoken, job.voice, job.speed, **extra)


def _cut(
    item: Audio | Timed, n: int, rate: int, back: Callable[[list[WordSpan]], list[WordSpan]]
) -> Audio | Timed:
    """A piece's first ``n`` samples; a timed piece keeps the words heard in them, as
    spans of the client's text (``back`` maps what the engine said onto it)."""
    if not isinstance(item, Timed):
        return item[:n] if n < len(item) else item
    end_s = n / rate
    try:
        words = [
            WordSpan(w.start, w.end, w.t0, min(w.t1, end_s))
            for w in back(item.words)
            if w.t0 < end_s
        ]
    except Exception as exc:  # no timings for this piece rather than no audio
        log.warning("word_timing_failed", error=f"{type(exc).__name__}: {exc}")
        words = []
    return Timed(item.audio[:n], words, item.estimated)


class _Run:
    """One chunk job on a worker thread: engine pieces → pipeline slices → deliver.

    Stops at the next slice when its stream's generation moves on (barge-in), and
    pauses (keeping where it was in ``job.paused``) when asked to yield its thread.
    """

    __slots__ = ("job", "later_n", "loop", "slice_n", "t0", "urgent_n", "worker")

    def __init__(self, worker: EngineWorker, job: Job, loop: asyncio.AbstractEventLoop) -> None:
        self.worker = worker
        self.job = job
        self.loop = loop
        self.t0 = time.perf_counter()
        rate = worker.engine.sample_rate
        self.slice_n = max(1, int(rate * _SLICE_S))
        self.later_n = max(1, int(rate * _LATER_SLICE_S))
        self.urgent_n = int(rate * _URGENT_S)

    def send(self, items: list[Output]) -> None:
        if items and self.worker.handoff(self.loop).put(
            self.job.stream.deliver, self.job.generation, items
        ):
            # Let the event loop thread have the GIL and the core now, so these frames
            # leave at once, not after the GIL's 5 ms switch interval on a busy core.
            os.sched_yield()

    def live(self) -> bool:
        return self.job.stream.generation == self.job.generation

    def _may_read_ahead(self) -> None:
        """The chunk's first audio is in (the next chunk may synthesize beside the rest),
        or all of it (the next may have been queued since): the loop may read ahead."""
        self.loop.call_soon_threadsafe(self.worker._read_ahead, self.job.stream.session_id)

    def chunk(self) -> bool:
        job = self.job
        r = job.paused
        job.paused = None
        timed = False  # whether this run times the engine's lead (DeadlineQueue.lead_s)
        if r is None or r.worker is not self.worker:
            timed = job.ahead is None and job.audio is None
            r = self._begin()
            if r is None:
                return False  # cancelled while the engine ran
        if not self._pump(r) or not self.live():
            return False
        r.active_s += time.perf_counter() - self.t0
        if job.yield_requested:
            # A first chunk of another stream is waiting for this thread.
            job.yield_requested = False
            job.paused = r
            return True
        pipe = job.stream.pipeline
        r.pending.extend(skip_sent(job, pipe.end_chunk()))
        rate = float(self.worker.engine.sample_rate)
        done = ChunkDone(
            job.index,
            accepted_chars(job),
            r.first_s,
            r.active_s,
            r.audio_n / rate,
            pipe.carry_out(),
        )
        r.pending.append(done)
        if job.audio is None:  # (a resumed chunk's journaled audio was not synthesized here)
            self.worker.meter.chunk(job.voice, r.active_s, done.audio_s)
        if timed and r.first_s is not None:
            self.worker._queue.observe_lead(r.first_s)
        self.send(r.pending)
        return False

    def _begin(self) -> Paused | None:
        """Where a fresh chunk starts: its engine pieces, and the items that go first."""
        job = self.job
        head: list[Output] = [] if job.skip_frames else [SegmentStart(job.index, job.text)]
        if job.audio is not None:
            return Paused(self.worker, iter([job.audio]), head)
        pipe = job.stream.pipeline
        # The chunk's first sample follows what the framer holds of the previous chunk.
        offset_s = pipe.pending_samples / pipe.encoder.sample_rate
        if not job.stream.wants_chunk_pcm():
            return Paused(self.worker, self.worker.synthesize(job), head, offset_s=offset_s)
        # The whole chunk first, journaled before its first frame leaves. Piper makes a
        # sentence at once anyway; a chunk of several sentences waits for all of them.
        whole: list[Audio] = []
        n = 0
        for part in self.worker.synthesize(job):
            if not self.live():
                return None
            whole.append(self._unpack(part, n, offset_s, head))
            n += len(whole[-1])
            if len(whole) == 1:
                self._may_read_ahead()
        self._may_read_ahead()
        audio = np.concatenate(whole) if whole else np.zeros(0, np.float32)
        head.append(ChunkPcm(job.index, accepted_chars(job), to_pcm16(audio)))
        return Paused(self.worker, iter([audio]), head, offset_s=offset_s)

    def _unpack(self, item: Audio | Timed, at_n: int, offset_s: float, out: list[Output]) -> Audio:
        """A piece's audio; the words of a timed one go to ``out`` as ChunkTimings, timed
        from the chunk's first sample (the piece starts ``at_n`` engine samples in)."""
        if not isinstance(item, Timed):
            return item
        if item.words:
            at = at_n / self.worker.engine.sample_rate
            words = [WordTime(w.start, w.end, max(0.0, w.t0 + at), w.t1 + at) for w in item.words]
            out.append(ChunkTimings(self.job.index, offset_s, words, item.estimated))
        return item.audio

    def _pump(self, r: Paused) -> bool:
        """Engine pieces through the pipeline until the chunk ends or a yield is asked;
        False when the stream's generation moved on."""
        job = self.job
        while not job.yield_requested:
            if r.piece is None:
                item = next(r.pieces, None)
                if item is None:
                    if job.audio is None:
                        self._may_read_ahead()
                    return True
                if not self.live():
                    return False
                piece = self._unpack(item, r.audio_n, r.offset_s, r.pending)
                if r.first_s is None:
                    r.first_s = r.active_s + time.perf_counter() - self.t0
                    if job.audio is None:
                        self._may_read_ahead()
                r.audio_n += len(piece)
                r.piece, r.offset = piece, 0
            if not self._slices(r):
                return False
        return True

    def _slices(self, r: Paused) -> bool:
        """The piece in hand, slice by slice; False when the generation moved on."""
        job = self.job
        pipe = job.stream.pipeline
        assert r.piece is not None
        while r.offset < len(r.piece):
            n = self.slice_n if r.pushed_n < self.urgent_n else self.later_n
            part = r.piece[r.offset : r.offset + n]
            r.offset += n
            frames = skip_sent(job, pipe.push(part))
            r.pushed_n += len(part)
            if job.first and r.pushed_n >= self.urgent_n:
                job.first = False  # its listener has audio: it may now be paused
                self.loop.call_soon_threadsafe(self.worker.urgent_done)
            if frames:
                r.pending.extend(frames)
                self.send(r.pending)
                r.pending = []
            if not self.live():
                return False
            if job.yield_requested:
                break
        if r.offset >= len(r.piece):
            r.piece = None
        return True
