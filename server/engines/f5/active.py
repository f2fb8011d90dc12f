"""A chunk job the batched F5 worker is speaking piece by piece (server/engines/f5/
batch_worker.py)."""

from __future__ import annotations

from dataclasses import dataclass

from server.engines.f5.policy import CrossFader
from server.engines.jobs import Job
from server.text import Part


@dataclass(slots=True, eq=False)
class Active:
    """A chunk job being spoken piece by piece."""

    job: Job
    key: str
    pieces: list[Part]  # what F5 says, and the span of the chunk's text it says
    fader: CrossFader
    next: int = 0  # index of the piece in work or to do next
    started: bool = False  # SegmentStart sent
    t0: float = 0.0
    first_s: float | None = None
    engine_s: float = 0.0
    audio_n: int = 0

    def rest(self) -> Job:
        """The unspoken part as a job of its own. A chunk whose segment was already
        announced gets index -1: the session gives it a new segment index."""
        job = self.job
        if not self.started:
            return job
        return Job(
            job.stream,
            job.generation,
            "chunk",
            text=" ".join(p.source for p in self.pieces[self.next :]),  # as written
            voice=job.voice,
            speed=job.speed,
            options=job.options,
            language=job.language,
            first=False,
            index=-1,
        )
