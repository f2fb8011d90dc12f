"""Stand-ins for the core's ports in its unit tests: an engine that says what it was
asked, a worker that records jobs instead of running them, and a sink that records
what it is given. The real ones are tested in tests/engines and through the server."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from server.config import Settings
from server.conversation.ports import Release
from server.engines.base import Audio, EngineInfo, VoiceInfo
from server.engines.jobs import Job, Output


class FakeEngine:
    def __init__(self, name: str, rate: int = 16000, plan: list[str] | None = None) -> None:
        self.name = name
        self.sample_rate = rate
        self._plan = plan

    def load(self) -> None:
        pass

    def info(self) -> EngineInfo:
        return EngineInfo(
            name=self.name,
            sample_rate=self.sample_rate,
            languages=["en"],
            default_voice=f"{self.name}-default",
            loaded=True,
            streaming=False,
        )

    def voices(self) -> list[VoiceInfo]:
        ids = [f"{self.name}-default", Settings().voice, "other"]
        return [
            VoiceInfo(
                id=v,
                name=v,
                engine=self.name,
                language="en",
                sample_rate=self.sample_rate,
                builtin=True,
            )
            for v in ids
        ]

    def plan(self, text: str, voice: str, speed: float, first: bool) -> list[str] | None:
        return self._plan

    def synthesize(self, text: str, voice: str, speed: float) -> Iterator[Audio]:
        yield np.zeros(self.sample_rate // 10, np.float32)


class RecordingWorker:
    def __init__(self, engine: FakeEngine, chunk_pcm: bool = True) -> None:
        self.engine = engine
        self.chunk_pcm = chunk_pcm
        self.queued: list[Job] = []
        self.cancelled = 0
        self.wakes = 0
        self.busy = False  # what saturated() says

    def saturated(self) -> bool:
        return self.busy

    def submit(self, job: Job) -> None:
        self.queued.append(job)

    def cancel(self, session_id: str) -> int:
        n = len(self.queued)
        self.queued = []
        self.cancelled += 1
        return n

    def take(self, session_id: str) -> list[Job]:
        jobs, self.queued = self.queued, []
        return jobs

    def wake(self) -> None:
        self.wakes += 1

    def pop(self) -> Job:
        """The next job, as the worker would start it."""
        return self.queued.pop(0)


class RecordingSink:
    """A journal stand-in: records calls; holds output until ``flush``."""

    def __init__(self) -> None:
        self.journaling = True
        self.resumable = True
        self.calls: list[tuple[str, object]] = []
        self.held: list[tuple[int, list[Output], Release]] = []

    def text(self, text: str) -> None:
        self.calls.append(("text", text))

    def mark(self, offset: int, kind: str) -> None:
        self.calls.append(("mark", (offset, kind)))

    def ack(self, frame: int) -> None:
        self.calls.append(("ack", frame))

    def cancel(self, sent: int, chars: int, marks: int) -> None:
        self.calls.append(("cancel", (sent, chars, marks)))

    def deliver(self, generation: int, items: list[Output], release: Release) -> None:
        self.held.append((generation, items, release))

    def drop(self) -> None:
        self.calls.append(("drop", None))
        self.held = []

    def flush(self) -> None:
        held, self.held = self.held, []
        for generation, items, release in held:
            release(generation, items)
