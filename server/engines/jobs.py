"""What engine workers take and give: jobs, their output, and the deadline queue.

A job is one text chunk (or a flush/end marker) of one stream. The worker runs
it on its threads and hands the output to the stream's ``deliver`` on the event
loop: frames, the segment it starts, the chunk's engine audio (resume), timings,
the marker's completion, or a failure.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from server.engines.base import Audio, EngineOptions, Timed
from server.engines.widths import group_of
from server.streaming.pipeline import AudioPipeline


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
class WordTime:
    """A word of a chunk and when it is heard."""

    start: int  # character span [start, end) in the job's chunk text (Job.text)
    end: int
    t0: float  # seconds from the chunk's first output sample (after speed and resampling)
    t1: float


@dataclass(slots=True)
class ChunkTimings:
    """When the words of a chunk are spoken (a job with ``timings``): one or more per
    chunk (one per engine sentence), each after the chunk's SegmentStart."""

    index: int  # the segment index (as the chunk's SegmentStart.index)
    # Where the chunk's first sample lies after the start of the frame that SegmentStart
    # precedes: the framer's samples carried over from the previous chunk, in seconds.
    offset_s: float
    words: list[WordTime]
    estimated: bool = False  # spread by phoneme count, not the model's own durations


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


Output = bytes | SegmentStart | ChunkPcm | ChunkTimings | ChunkDone | UtteranceDone | EngineFailed


class Stream:
    """The worker's handle on one stream of audio (a conversation, an HTTP request).

    The conversation that owns it sets ``generation`` (on the event loop) to drop
    older work, and swaps ``pipeline`` only while none of its jobs runs (engine
    fallback). Worker threads read ``generation`` and ``pipeline``, write only
    ``pipeline_generation``, and hand output to ``deliver`` on the event loop.
    """

    __slots__ = (
        "can_take_work",
        "chunk_pcm",
        "deliver",
        "generation",
        "id",
        "pipeline",
        "pipeline_generation",
        "runs_out",
    )

    def __init__(
        self,
        stream_id: str,
        pipeline: AudioPipeline,
        deliver: Callable[[int, list[Output]], None],
        can_take_work: Callable[[], bool] = lambda: True,
        chunk_pcm: Callable[[], bool] = lambda: False,
    ) -> None:
        self.id = stream_id
        self.generation = 0
        self.pipeline = pipeline
        self.pipeline_generation = 0  # written only by the thread running this stream's job
        self.deliver = deliver  # called on the event loop with output of a job of a generation
        self.can_take_work = can_take_work  # False while its unsent audio is over its bound
        # Whether a chunk's engine audio is wanted whole before its frames (resume journaling)
        self.chunk_pcm = chunk_pcm
        # When the listener's audio runs out (perf_counter seconds), were it played in real
        # time from when it was made; 0.0 while this utterance has none. The queue's
        # deadline for the stream's next chunk (DeadlineQueue.deadline). Written on the loop.
        self.runs_out = 0.0

    def played(self, seconds: float) -> None:
        """``seconds`` more audio was made for the listener (on the event loop)."""
        self.runs_out = max(self.runs_out, time.perf_counter()) + seconds

    @property
    def session_id(self) -> str:
        return self.id

    def wants_chunk_pcm(self) -> bool:
        return self.chunk_pcm()


class JobOwner(Protocol):
    """What a worker uses of a job's stream: ``Stream``, or a test's stand-in."""

    @property
    def session_id(self) -> str: ...

    generation: int
    pipeline: AudioPipeline
    pipeline_generation: int
    runs_out: float

    def can_take_work(self) -> bool: ...

    def wants_chunk_pcm(self) -> bool: ...

    def deliver(self, generation: int, items: list[Output]) -> None: ...


@dataclass(slots=True)
class Job:
    stream: JobOwner
    generation: int
    kind: str  # "chunk" or "flush" or "end"
    text: str = ""
    voice: str = ""
    speed: float = 1.0
    # Characters of the client's text this chunk accounts for (the journal's count):
    # its text plus the whitespace before it that the chunker dropped. None: len(text).
    raw_chars: int | None = None
    # The opening chunk of an utterance: it goes first. EngineWorker clears it once the
    # job's first _URGENT_S of audio is out, so the rest of it may be paused for others.
    first: bool = False
    index: int = 0
    # Resume: finish a chunk from its journaled engine audio instead of the engine,
    # dropping the first ``skip_frames`` frames (another node already sent them).
    audio: Audio | None = None
    skip_frames: int = 0
    # Word timings wanted (ChunkTimings), from an engine that can tell (TimedEngine)
    timings: bool = False
    # The stream's engine options (start.engine_options), None when it set none
    options: EngineOptions | None = None
    # The language the text is read in: the stream's, else its voice's (None: unknown)
    language: str | None = None
    queued_at: float = field(default_factory=time.perf_counter)
    # EngineWorker preemption: the loop sets yield_requested to have the running job
    # pause at its next slice; where it stopped is kept in paused (for that worker only).
    yield_requested: bool = False
    paused: Paused | None = None
    # Read-ahead: the engine's pieces for this chunk, started while the session's
    # previous chunk was being encoded (EngineWorker._read_ahead); closed if dropped.
    ahead: Iterator[Audio | Timed] | None = None


def drop_ahead(job: Job) -> None:
    """A queued job leaves without running: its read-ahead is cancelled."""
    ahead, job.ahead = job.ahead, None
    close = getattr(ahead, "close", None)
    if close is not None:
        close()


def engine_kwargs(job: Job, takes_group: bool) -> dict[str, Any]:
    """What an engine call for ``job`` passes besides text, voice and speed: the
    stream's options if it set any (only an engine that takes them gets them: stream
    set-up refused them else), and its session's ``group`` where the engine takes one
    (server/engines/widths.py)."""
    kw: dict[str, Any] = {} if job.options is None else {"options": job.options}
    if takes_group:
        kw["group"] = group_of(job.stream.session_id)
    return kw


def accepted_chars(job: Job) -> int:
    return len(job.text) if job.raw_chars is None else job.raw_chars


@dataclass(slots=True)
class Paused:
    """Where a paused chunk job stopped: the engine's iterator and the piece in hand."""

    worker: object
    pieces: Iterator[Audio | Timed]
    pending: list[Output]
    piece: Audio | None = None
    offset: int = 0
    pushed_n: int = 0  # engine samples through the pipeline so far
    active_s: float = 0.0  # time spent running, pauses excluded
    first_s: float | None = None
    audio_n: int = 0
    offset_s: float = 0.0  # the framer's carry before the chunk (ChunkTimings.offset_s)


# Until a worker has timed its own chunks: how long a chunk takes to its first audio.
_LEAD_S = 0.3


class DeadlineQueue:
    """Per-session job queues, served earliest deadline first. A job's deadline is when
    its listener would notice it waiting: a first chunk of an utterance (or a flush/end
    marker) at once, from when it was queued; a later chunk when the audio its session
    already has runs out (``Stream.runs_out``), less the time a chunk takes to its first
    audio (``lead_s``). So a session about to fall silent goes ahead of one with seconds
    of audio in hand, and a new utterance's first chunk goes ahead of both unless one
    would underrun first. Equal deadlines (later chunks of sessions with no audio yet)
    are served round-robin. Busy or backpressured sessions are skipped. Shared by
    EngineWorker and the batched F5 worker."""

    def __init__(self, on_depth: Callable[[int], None] | None = None) -> None:
        self._queues: OrderedDict[str, deque[Job]] = OrderedDict()
        self._depth = 0
        self._on_depth = on_depth or (lambda _n: None)
        self.lead_s = _LEAD_S

    @property
    def depth(self) -> int:
        return self._depth

    def observe_lead(self, first_s: float) -> None:
        """A chunk took ``first_s`` to its first audio: a moving average of these is
        ``lead_s`` (a worker thread writes it; a float store is atomic under the GIL)."""
        self.lead_s += 0.2 * (first_s - self.lead_s)

    def deadline(self, job: Job, now: float) -> float:
        """When the job's listener would notice it waiting (the class's docstring)."""
        if job.kind != "chunk" or job.first:
            return job.queued_at
        runs_out = job.stream.runs_out
        if runs_out <= 0.0:  # nothing of this utterance made yet here (a resumed session)
            return now + self.lead_s
        return runs_out - self.lead_s

    def _set_depth(self, n: int) -> None:
        self._depth = n
        self._on_depth(n)

    def push(self, job: Job) -> None:
        q = self._queues.get(job.stream.session_id)
        if q is None:
            q = self._queues[job.stream.session_id] = deque()
        q.append(job)
        self._set_depth(self._depth + 1)

    def push_front(self, job: Job, next_in_round: bool = False) -> None:
        """Put a job back as its session's next one; the session goes to the back of the round
        (``next_in_round``: to its front, first among sessions without a first chunk)."""
        sid = job.stream.session_id
        q = self._queues.get(sid)
        if q is None:
            q = self._queues[sid] = deque()
        q.appendleft(job)
        self._queues.move_to_end(sid, last=not next_in_round)
        self._set_depth(self._depth + 1)

    def head(self, session_id: str) -> Job | None:
        """The session's next job, left in the queue."""
        q = self._queues.get(session_id)
        return q[0] if q else None

    def only(self, session_id: str) -> bool:
        """Whether every queued job is this session's."""
        q = self._queues.get(session_id)
        return q is not None and len(q) == self._depth

    def first_waiting(self, busy: Container[str]) -> str | None:
        """A session that could run now and whose next job is a first chunk, if any."""
        for sid, q in self._queues.items():
            if q and q[0].first and sid not in busy and q[0].stream.can_take_work():
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
        """The next job of up to ``limit`` sessions, earliest deadline first (ties in
        round-robin order); ``accept`` may refuse a session's next job (it then waits)."""
        now = time.perf_counter()
        ready: list[tuple[float, int, str]] = []
        for order, (sid, q) in enumerate(self._queues.items()):
            if sid in busy or not q or not q[0].stream.can_take_work():
                continue
            if accept is not None and not accept(q[0]):
                continue
            ready.append((self.deadline(q[0], now), order, sid))
        chosen = [min(ready)] if limit == 1 and ready else heapq.nsmallest(limit, ready)
        jobs = []
        for _, _, sid in chosen:
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


def skip_sent(job: Job, frames: list[bytes]) -> list[bytes]:
    """Drop the frames of a resumed chunk that another node already sent."""
    if not job.skip_frames or not frames:
        return frames
    n = min(job.skip_frames, len(frames))
    job.skip_frames -= n
    return frames[n:]
