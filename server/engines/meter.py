"""What an engine worker reports for the metrics, and how long its jobs waited.

The worker knows nothing of Prometheus: it calls a ``WorkerMeter`` (the app's is
``server.metrics.EngineMeter``; tests and tools get ``NullMeter``). Calls come per job
or per chunk, from the event loop and from worker threads, never per frame.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Protocol

from server.engines.jobs import Job

# Sessions whose last job's end is remembered (the oldest are forgotten first; a session
# that ended leaves one entry behind, so this bounds them).
_SESSIONS_KEPT = 4096


class WorkerMeter(Protocol):
    def queue_wait(self, seconds: float, first: bool) -> None:
        """A chunk job got a thread (or a device batch) after waiting ``seconds``;
        ``first``: it opens an utterance."""

    def chunk(self, model: str, engine_s: float, audio_s: float) -> None:
        """A chunk was synthesized to its end: ``engine_s`` of work for ``audio_s`` of
        audio, on ``model`` (the engine's model; for Piper, the voice)."""

    def failure(self, code: str) -> None:
        """A chunk (or what was left of it) failed with ``code``."""


class NullMeter:
    def queue_wait(self, seconds: float, first: bool) -> None:
        pass

    def chunk(self, model: str, engine_s: float, audio_s: float) -> None:
        pass

    def failure(self, code: str) -> None:
        pass


class QueueClock:
    """Time in queue: from a job's submit, or from the end of its session's previous job
    if that came later, to the moment it starts. A session's later chunks are queued
    while its earlier ones run; that wait is its own order, not a busy engine, so it is
    left out. Used on the event loop only."""

    def __init__(self) -> None:
        self._free_since: OrderedDict[str, float] = OrderedDict()

    def released(self, session_id: str) -> None:
        """The session has no job running on this worker any more."""
        self._free_since[session_id] = time.perf_counter()
        self._free_since.move_to_end(session_id)
        if len(self._free_since) > _SESSIONS_KEPT:
            self._free_since.popitem(last=False)

    def waited(self, job: Job) -> float:
        """Seconds ``job``, starting now for the first time, waited for the engine."""
        since = max(job.queued_at, self._free_since.pop(job.stream.session_id, 0.0))
        return max(0.0, time.perf_counter() - since)
