"""One worker per F5 device: batches pieces from many sessions into one forward pass.

It is an ``EngineWorker`` to the sessions (same ``submit`` / ``cancel`` / ``take`` /
``wake`` and the same output items, in the same order, under the same generation
rules) and reuses its deadline queue. What differs is the engine side:

- A chunk job is split into pieces (``F5Engine.speech``); a session has at most one piece
  on the device at a time, and between its pieces it goes to the back of the round
  (fairness across sessions with long texts).
- When the device is free, the worker takes the next piece of up to ``max_batch``
  sessions that use the same model, first pieces of an utterance first (they decide
  time to first audio), and runs them as one padded batch with per-item durations on
  the device thread. The event loop never waits on the device.
- Encoding (cross-fade, resample, Opus) runs on encode threads, each session's work
  chained in order, so a session's audio stays in order while its next piece is
  already on the device with the next batch. Flush/end markers run there too, without
  waiting for the device.
- Cancelled work leaves the queue at once; a piece already on the device finishes, and
  its result is discarded by generation number.
- Faults never reach the event loop: a failed batch is retried item by item (so one bad
  item, or an out-of-memory batch, does not fail its neighbours); each failed item goes
  back to its session as ``EngineFailed`` carrying the unspoken text in ``retry``, so
  the session can go on with its fallback engine. A circuit breaker per model stops
  sending work to a model that keeps failing (its sessions fail over at once) and lets
  one probe through after a cooldown. With ``engine_isolation=process`` the model runs
  in the generation host (``remote.py``): its crash or hang fails the whole batch, alike.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CollectorRegistry

from server.engines.base import Audio, EngineError
from server.engines.f5.active import Active as _Active
from server.engines.f5.breaker import CircuitBreaker
from server.engines.f5.engine import F5Engine, GenRequest, failure_code
from server.engines.f5.metrics import F5Metrics
from server.engines.f5.policy import CrossFader
from server.engines.jobs import accepted_chars
from server.engines.worker import (
    ChunkDone,
    EngineFailed,
    EngineWorker,
    Job,
    Output,
    SegmentStart,
    UtteranceDone,
)
from server.streaming.normalize import speakable
from server.text import Part

if TYPE_CHECKING:
    from server.config import Settings
    from server.engines.base import Engine

log = structlog.get_logger("voxwire.f5")

_SLICE_S = 0.1  # encode in slices, so a long piece's first frames leave early
# The longest piece of a batch is at most this many times the shortest (see fits()).
MAX_PAD_RATIO = 1.5
# Opus encoding of a GPU's output for many streams outruns one core.
ENCODE_THREADS = max(1, min(4, (os.cpu_count() or 2) - 1))


class BatchedEngineWorker(EngineWorker):
    # A chunk arrives piece by piece from batches: with resume on, the session journals
    # its frames whole at the chunk's end instead (server/state/sessions.py).
    chunk_pcm = False

    def __init__(
        self,
        engine: F5Engine,
        max_batch: int = 0,
        on_queue_depth: Callable[[int], None] | None = None,
        breaker_failures: int = 3,
        breaker_cooldown_s: float = 30.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        # The base class's single thread is the device thread.
        super().__init__(engine, threads=1, on_queue_depth=on_queue_depth)
        self.f5 = engine
        self._max_batch = max_batch
        # Encoding threads: sessions encode in parallel, each session's work in order.
        self._post = ThreadPoolExecutor(ENCODE_THREADS, thread_name_prefix="f5-encode")
        self._post_tail: dict[str, asyncio.Task[None]] = {}  # a session's last encode task
        self._active: dict[str, _Active] = {}
        self._device_busy = False
        self.breakers: dict[str, CircuitBreaker] = {}  # by model (the metrics read them)
        self._breaker_args = (breaker_failures, breaker_cooldown_s)
        self._m = F5Metrics(registry)
        self.batches: list[int] = []  # sizes of the last batches (bounded; for benchmarks)

    # -- loop side --------------------------------------------------------------

    async def stop(self) -> None:
        await super().stop()
        self._post.shutdown(wait=False, cancel_futures=True)

    def cancel(self, session_id: str) -> int:
        n = super().cancel(session_id)
        if session_id not in self._busy:
            # A piece in work keeps its entry until its result comes back (and is dropped).
            self._active.pop(session_id, None)
        return n

    def take(self, session_id: str) -> list[Job]:
        jobs = super().take(session_id)
        act = self._active.get(session_id)
        if act is not None and session_id not in self._busy:
            del self._active[session_id]
            if jobs and jobs[0] is act.job:
                jobs[0] = act.rest()  # a chunk half spoken: only its unspoken part
        return jobs

    def saturated(self) -> bool:
        """Never: F5 cuts its own first piece short (its plan) and batches first pieces
        together, so a chunk cut shorter here would not come sooner."""
        return False

    @property
    def max_batch(self) -> int:
        """The configured bound, or for 0: 8 on CUDA, 1 on the CPU (where a padded batch
        measured slower than its items one by one: attention there is compute-bound,
        and masking forces torch's unfused kernel)."""
        if self._max_batch > 0:
            return self._max_batch
        return 8 if self.f5.device.startswith("cuda") else 1

    def breaker(self, key: str) -> CircuitBreaker:
        b = self.breakers.get(key)
        if b is None:
            b = self.breakers[key] = CircuitBreaker(*self._breaker_args)
        return b

    def _key(self, job: Job) -> str | None:
        act = self._active.get(job.stream.session_id)
        if act is not None and act.job is job:
            return act.key
        try:
            return self.f5.model_key(job.voice)
        except EngineError:
            return None

    def _blocked(self, job: Job) -> bool:
        """Work that must not reach the device: its model's circuit is open (or a
        probe is already out), or it has no model at all."""
        if job.kind != "chunk":
            return False
        key = self._key(job)
        if key is None:
            return True
        b = self.breakers.get(key)
        return b is not None and not b.would_allow()

    def _stale(self, job: Job) -> bool:
        if job.generation == job.stream.generation:
            return False
        act = self._active.get(job.stream.session_id)
        if act is not None and act.job is job:
            del self._active[job.stream.session_id]
        return True

    async def _dispatch(self) -> None:
        while True:
            try:
                progressed = self._dispatch_once()
            except Exception as exc:  # a bug here must not stop every F5 session for good
                log.exception("f5_dispatch_failed", error=repr(exc))
                progressed = False
            if not progressed:
                self._wake.clear()
                await self._wake.wait()

    def _dispatch_once(self) -> bool:
        progressed = self._dispatch_deviceless()
        if self._device_busy:
            return progressed
        lead = self._queue.pick(self._busy, 1, lambda j: j.kind == "chunk" and not self._blocked(j))
        if not lead:
            return progressed
        job = lead[0]
        if self._stale(job):
            return True
        key = self._key(job)
        assert key is not None  # blocked jobs were taken above
        probe = self.breaker(key).state == "half_open"
        self.breaker(key).allow()  # takes the probe slot when half-open
        plans: dict[int, list[Part] | EngineError] = {}
        jobs = [job] if probe else self._gather(job, key, plans)
        acts = self._activate(jobs, key, plans)
        if not acts:
            if probe:
                self.breaker(key).release()
            return True
        self._device_busy = True
        self._spawn(self._run_batch(key, acts))
        return True

    def _dispatch_deviceless(self) -> bool:
        """Markers and work that cannot run need no device: handle them at once."""
        progressed = False
        for job in self._queue.pick(
            self._busy, 1 << 30, lambda j: j.kind != "chunk" or self._blocked(j)
        ):
            progressed = True
            if self._stale(job):
                continue
            if job.kind != "chunk":
                self._spawn(self._post_run(job, partial(self._run_marker, job)), job)
                continue
            key = self._key(job)
            if key is None:
                try:
                    self.f5.model_key(job.voice)
                    reason = "no model"
                except EngineError as exc:
                    reason = exc.message
                self._fail(job, "engine_error", reason)
            else:
                b = self.breaker(key)
                self._fail(
                    job,
                    "engine_unavailable",
                    f"f5 model {key!r} is failing ({b.last_error}); not sending it work "
                    f"for {b.retry_in_s():.0f} s",
                )
        return progressed

    def _gather(self, job: Job, key: str, plans: dict[int, list[Part] | EngineError]) -> list[Job]:
        """``job`` and the next pieces of up to ``max_batch`` - 1 other sessions."""
        limit = self.max_batch
        how = self.f5.opts.sampling(job.options)
        if limit <= 1 or _seeded(job):
            return [job]  # a stream's own seed: its noise must not depend on a batch
        busy = set(self._busy)
        busy.add(job.stream.session_id)
        lo = hi = self._frames(job, plans) or 0

        def fits(j: Job) -> bool:
            # Same model, and a length close to the others': every item is padded to
            # the longest, and attention costs the square of the padded length.
            nonlocal lo, hi
            if j.kind != "chunk" or self._key(j) != key:
                return False
            if _seeded(j) or self.f5.opts.sampling(j.options) != how:
                return False  # a batch has one set of sampling steps, guidance and seed
            n = self._frames(j, plans)
            if n is None or not lo:
                return True  # nothing to generate, or an error: handled below
            if max(hi, n) > MAX_PAD_RATIO * min(lo, n):
                return False
            lo, hi = min(lo, n), max(hi, n)
            return True

        return [job, *self._queue.pick(busy, limit - 1, fits)]

    def _activate(
        self, jobs: list[Job], key: str, plans: dict[int, list[Part] | EngineError]
    ) -> list[_Active]:
        """The chunks of ``jobs`` that go to the device; the others are answered."""
        acts: list[_Active] = []
        for j in jobs:
            if self._stale(j):
                continue
            act = self._active.get(j.stream.session_id)
            if act is None or act.job is not j:
                plan = plans.get(id(j))
                if plan is None:
                    plan = self._plan(j)
                if isinstance(plan, EngineError):
                    self._fail(j, plan.code, plan.message)
                    continue
                pieces = plan
                if not pieces:  # whitespace only: nothing to say
                    done: list[Output] = [ChunkDone(j.index, accepted_chars(j), None, 0.0, 0.0)]
                    self._spawn(self._post_run(j, partial(list, done)), j)
                    continue
                fader = CrossFader(self.f5.opts.stream_policy(j.options))
                act = _Active(j, key, pieces, fader, t0=self._started(j))
                self._active[j.stream.session_id] = act
            acts.append(act)
            self._busy.add(j.stream.session_id)
        return acts

    def _plan(self, job: Job) -> list[Part] | EngineError:
        try:
            # The text made safe to speak first, as for every engine (no emoji or control
            # characters into F5's tokenizer; server/streaming/normalize.py), then with
            # numbers, dates and units written out (server/text/).
            return self.f5.speech(speakable(job.text), job.voice, job.speed, job.first)
        except EngineError as exc:
            return exc

    def _frames(self, job: Job, plans: dict[int, list[Part] | EngineError]) -> int | None:
        """Total frames (reference + output) of ``job``'s next piece; None if it has none."""
        act = self._active.get(job.stream.session_id)
        if act is not None and act.job is job:
            piece = act.pieces[act.next]
        else:
            plan = plans[id(job)] = self._plan(job)
            if isinstance(plan, EngineError) or not plan:
                return None
            piece = plan[0]
        return self.f5.durations([GenRequest(job.voice, piece.text, job.speed)])[0]

    def _spawn(self, coro: Coroutine[Any, Any, None], job: Job | None = None) -> None:
        """Run ``coro`` as a task; ``job``'s session is busy until it ends."""
        if job is not None:
            self._busy.add(job.stream.session_id)
        task = asyncio.create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def _fail(self, job: Job, code: str, message: str) -> None:
        act = self._active.get(job.stream.session_id)
        if act is not None and act.job is not job:
            act = None
        self._spawn(self._post_run(job, lambda: self._run_failure(job, act, code, message)), job)

    async def _run_batch(self, key: str, acts: list[_Active]) -> None:
        loop = asyncio.get_running_loop()
        how = self.f5.opts.sampling(acts[0].job.options)  # _gather batched equal ones
        reqs = [GenRequest(a.job.voice, a.pieces[a.next].text, a.job.speed, how) for a in acts]
        t0 = time.perf_counter()
        results: list[Audio | Exception]
        try:
            results = await loop.run_in_executor(self._executor, self.f5.generate_each, key, reqs)
        except Exception as exc:  # the executor itself failed (shut down): fail every item
            results = [exc] * len(reqs)
        finally:
            self._device_busy = False
            self._wake.set()
        dt = time.perf_counter() - t0
        self._m.batch_size.observe(len(reqs))
        self.batches = [*self.batches[-999:], len(reqs)]
        b = self.breaker(key)
        errors = [r for r in results if isinstance(r, Exception)]
        if errors and len(errors) == len(results):
            b.failure(f"{type(errors[0]).__name__}: {errors[0]}")
        else:
            b.success()
        self._m.breaker_open.labels(key).set(1 if b.state != "closed" else 0)
        log.debug("f5_batch", model=key, size=len(reqs), seconds=round(dt, 3), failed=len(errors))
        for act, res in zip(acts, results, strict=True):
            job = act.job
            sid = job.stream.session_id
            if self._stale(job):
                self._release(sid)
                self._m.pieces.labels("discarded").inc()
                continue
            act.engine_s += dt
            if isinstance(res, Exception):
                self._m.pieces.labels("failed").inc()
                log.warning("f5_piece_failed", session_id=sid, model=key, error=repr(res))
                code = failure_code(res)
                msg = str(res) or repr(res)
                self._spawn(
                    self._post_run(job, partial(self._run_failure, job, act, code, msg)), job
                )
            else:
                self._m.pieces.labels("ok").inc()
                first, last = not act.started, act.next + 1 >= len(act.pieces)
                act.started = True
                act.next += 1
                if last:
                    del self._active[sid]
                else:
                    job.first = False  # its first piece is out: no longer ahead of the line
                    self._queue.push_front(job)
                # The session's next piece may join the next batch while this one is
                # encoded: a session's encode work is chained, so its audio stays in order.
                self._release(sid)
                fn = partial(self._run_piece, act, res, first, last, loop)
                self._spawn(self._post_run(job, fn, release=False))

    async def _post_run(
        self, job: Job, fn: Callable[[], list[Output]], release: bool = True
    ) -> None:
        """Run ``fn`` on an encode thread after the session's earlier encode work, then
        hand its items to the session (after the frames it already sent on the way);
        ``release``: the session was busy until now."""
        loop = asyncio.get_running_loop()
        sid = job.stream.session_id
        me = asyncio.current_task()
        prev = self._post_tail.get(sid)
        if me is not None:
            self._post_tail[sid] = me
        if prev is not None and not prev.done():
            # Tasks start in the order they were created, so this chains a session's
            # encode work in submission order: its pipeline has one user at a time.
            await asyncio.wait({prev})
        try:
            items = await loop.run_in_executor(self._post, fn)
        except Exception as exc:  # never let one job take the worker down
            log.exception("f5_post_failed", session_id=sid, error=repr(exc))
            items = [EngineFailed("engine_error", str(exc))]
        finally:
            if self._post_tail.get(sid) is me:
                del self._post_tail[sid]
            if release:
                self._release(sid)
            self._wake.set()
        act = self._active.get(sid)
        if act is not None and act.job is job and any(isinstance(i, EngineFailed) for i in items):
            del self._active[sid]
        if items:
            job.stream.deliver(job.generation, items)

    # -- encode thread ----------------------------------------------------------

    @staticmethod
    def _own_pipeline(job: Job) -> None:
        owner = job.stream
        if owner.pipeline_generation != job.generation:
            # First job after a barge-in: start from clean resampler/encoder state.
            owner.pipeline.reset()
            owner.pipeline_generation = job.generation

    def _run_marker(self, job: Job) -> list[Output]:
        self._own_pipeline(job)
        tail: list[Output] = list(job.stream.pipeline.finish())
        tail.append(UtteranceDone(job.kind))
        return tail

    def _run_piece(
        self,
        act: _Active,
        audio: Audio,
        first: bool,
        last: bool,
        loop: asyncio.AbstractEventLoop,
    ) -> list[Output]:
        """Cross-fade and encode one piece; ``first``/``last``: of its chunk."""
        job = act.job
        owner = job.stream
        if owner.generation != job.generation:
            return []  # cancelled: its pipeline belongs to the next generation now
        self._own_pipeline(job)
        pipe = owner.pipeline

        def send(items: list[Output]) -> None:
            loop.call_soon_threadsafe(owner.deliver, job.generation, items)

        pending: list[Output] = []
        if first:
            act.first_s = time.perf_counter() - act.t0
            # F5 takes its time to first audio (a second on a CPU, a batch's step on a
            # GPU): the deadlines of later chunks lead their listeners' audio by it.
            self._queue.observe_lead(act.first_s)
            pending.append(SegmentStart(job.index, job.text))
        act.audio_n += len(audio)
        out = act.fader.push(audio)
        slice_n = int(self.f5.sample_rate * _SLICE_S)
        for start in range(0, len(out), slice_n):
            frames = pipe.push(out[start : start + slice_n])
            if frames:
                pending.extend(frames)
                send(pending)
                pending = []
            if owner.generation != job.generation:
                return []
        if last:
            self.meter.chunk(act.key, act.engine_s, act.audio_n / float(self.f5.sample_rate))
            pending.extend(pipe.push(act.fader.end()))
            pending.extend(pipe.end_chunk())
            pending.append(
                ChunkDone(
                    job.index,
                    accepted_chars(job),
                    act.first_s,
                    act.engine_s,
                    act.audio_n / float(self.f5.sample_rate),
                    pipe.carry_out(),
                )
            )
        return pending

    def _run_failure(self, job: Job, act: _Active | None, code: str, message: str) -> list[Output]:
        if job.stream.generation != job.generation:
            return []  # cancelled meanwhile: nothing to hand on
        self._own_pipeline(job)
        items: list[Output] = []
        retry = job
        if act is not None and act.started:
            # Part of the chunk was spoken: close it cleanly, account for it, hand on the rest.
            pipe = job.stream.pipeline
            items.extend(pipe.push(act.fader.end()))
            items.extend(pipe.end_chunk())
            spoken = " ".join(p.source for p in act.pieces[: act.next])
            items.append(
                ChunkDone(
                    job.index,
                    len(spoken),
                    act.first_s,
                    act.engine_s,
                    act.audio_n / float(self.f5.sample_rate),
                    pipe.carry_out(),
                )
            )
            retry = act.rest()
        items.append(self._failed(code, message, retry=[retry]))
        return items


def _seeded(job: Job) -> bool:
    return job.options is not None and job.options.seed is not None


def make_worker(
    engine: Engine,
    settings: Settings,
    registry: CollectorRegistry,
    on_queue_depth: Callable[[int], None],
) -> BatchedEngineWorker:
    """The app's worker for the ``f5`` engine."""
    if not isinstance(engine, F5Engine):
        raise TypeError(f"the f5 worker needs an F5Engine, got {type(engine).__name__}")
    return BatchedEngineWorker(
        engine,
        max_batch=settings.f5_max_batch,
        on_queue_depth=on_queue_depth,
        breaker_failures=settings.f5_breaker_failures,
        breaker_cooldown_s=settings.f5_breaker_cooldown_s,
        registry=registry,
    )
