"""Word timings through the engine worker with the real Piper engine, in the server's
process (``engine_isolation=thread``) and in an engine process (``process``): what a
job with ``timings`` gets, on the output timeline (resampled to 48 kHz, after the
framer's carry from the chunk before)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest

from server.engines.base import Audio, Engine, EngineOptions, Timed, WordSpan
from server.engines.piper import DEFAULT_VOICE, PiperEngine
from server.engines.process import ProcessEngine, ProcessOptions
from server.engines.timing import text_words
from server.engines.worker import (
    ChunkDone,
    ChunkPcm,
    ChunkTimings,
    EngineWorker,
    Job,
    Output,
    SegmentStart,
    UtteranceDone,
)
from server.streaming.pipeline import AudioPipeline

RATE = 48000
FRAME = RATE // 50  # 20 ms

TEXTS = [
    "Hello there, how are you today?",
    "I paid $3.50 for 12 apples. Dr. Smith agreed!",  # three of espeak's sentences
    "Fine \U0001f600 thanks, see you at 5.",  # the engine never sees the emoji
]


class RawFloat:
    """An encoder that hands 20 ms frames on as float32 bytes, so the output can be
    looked at sample by sample."""

    encoding = "raw"
    lookahead = 0
    sample_rate = RATE
    frame_samples = FRAME

    def encode(self, frame: npt.NDArray[np.float32]) -> bytes:
        return np.asarray(frame, dtype="<f4").tobytes()

    def reset(self) -> None:
        pass


class Owner:
    session_id = "a"

    def __init__(self, rate: int, chunk_pcm: bool = False) -> None:
        self.generation = 0
        self.pipeline_generation = 0
        self.runs_out = 0.0
        self.pipeline = AudioPipeline(rate, RawFloat())
        self.items: list[Output] = []
        self.chunk_pcm = chunk_pcm
        self.done = asyncio.Event()

    def can_take_work(self) -> bool:
        return True

    def wants_chunk_pcm(self) -> bool:
        return self.chunk_pcm

    def deliver(self, generation: int, items: list[Output]) -> None:
        self.items.extend(items)
        if any(isinstance(i, UtteranceDone) for i in items):
            self.done.set()


async def speak(
    engine: Engine,
    texts: list[str],
    timings: bool = True,
    chunk_pcm: bool = False,
    speed: float = 1.0,
) -> Owner:
    owner = Owner(engine.sample_rate, chunk_pcm)
    worker = EngineWorker(engine, threads=1)
    worker.start()
    for i, text in enumerate(texts):
        job = Job(owner, 0, "chunk", text=text, voice=DEFAULT_VOICE, speed=speed, index=i)
        job.timings = timings
        worker.submit(job)
    worker.submit(Job(owner, 0, "flush"))
    await asyncio.wait_for(owner.done.wait(), 60)
    await worker.stop()
    return owner


@pytest.fixture(scope="module")
def piper() -> PiperEngine:
    engine = PiperEngine()
    engine.load()
    return engine


@pytest.fixture(scope="module", params=["thread", "process"])
def engine(request: pytest.FixtureRequest, piper: PiperEngine) -> Iterator[Engine]:
    if request.param == "thread":
        yield piper
        return
    e = ProcessEngine("piper", ProcessOptions(size=1, warm_text=""))
    e.load()
    yield e
    e.close()


def check_chunks(owner: Owner, texts: list[str]) -> None:
    """Each chunk's timings: after its SegmentStart and before its ChunkDone, the words
    of its text in order, times rising, the last one ending with the audio; and on the
    output timeline the words are where the sound is."""
    out = np.frombuffer(b"".join(i for i in owner.items if isinstance(i, bytes)), dtype="<f4")
    frames = 0
    start = -1  # the output sample where the current chunk's first frame begins
    words: list[tuple[int, int, float, float]] = []
    carry = 0.0
    for it in owner.items:
        if isinstance(it, bytes):
            frames += 1
        elif isinstance(it, SegmentStart):
            start, words = frames * FRAME, []
        elif isinstance(it, ChunkTimings):
            assert start >= 0 and not it.estimated
            assert it.offset_s == pytest.approx(carry)
            words += [(w.start, w.end, w.t0 + it.offset_s, w.t1 + it.offset_s) for w in it.words]
        elif isinstance(it, ChunkDone):
            text = texts[it.index]
            assert [(a, b) for a, b, _, _ in words] == [(w.start, w.end) for w in text_words(text)]
            t0s, t1s = [w[2] for w in words], [w[3] for w in words]
            assert t0s == sorted(t0s) and t1s == sorted(t1s)
            assert all(a < b for _, _, a, b in words)
            assert carry <= t0s[0] and t1s[-1] <= carry + it.audio_s
            assert t1s[-1] > carry + it.audio_s - 0.4  # only the final pause is left
            for _, _, a, b in words:  # each word is heard where it is said to be
                seg = out[start + int(a * RATE) : start + int(b * RATE)]
                assert np.sqrt(np.mean(seg**2)) > 0.01
            carry = len(it.carry) / 4 / RATE
            start = -1
    assert start == -1


async def test_words_of_each_chunk_in_order_on_the_output_timeline(engine: Engine) -> None:
    owner = await speak(engine, TEXTS)
    check_chunks(owner, TEXTS)
    timings = [i for i in owner.items if isinstance(i, ChunkTimings)]
    # one per sentence espeak made: "I paid ... apples." "Dr." "Smith agreed!"
    assert [t.index for t in timings] == [0, 1, 1, 1, 2]
    # the words of a sentence come before the frames that carry them
    first = owner.items.index(timings[0])
    assert isinstance(owner.items[first - 1], SegmentStart)
    assert not any(isinstance(i, bytes) for i in owner.items[:first])


async def test_faster_speech_has_its_words_sooner(piper: PiperEngine) -> None:
    text = ["The quick brown fox jumps over the lazy dog."]
    slow = await speak(piper, text)
    fast = await speak(piper, text, speed=2.0)
    check_chunks(fast, text)

    def last_end(owner: Owner) -> float:
        return max(w.t1 for t in owner.items if isinstance(t, ChunkTimings) for w in t.words)

    assert last_end(fast) < 0.7 * last_end(slow)


async def test_no_timings_unless_the_job_asks(piper: PiperEngine) -> None:
    owner = await speak(piper, TEXTS[:1], timings=False)
    assert not any(isinstance(i, ChunkTimings) for i in owner.items)
    assert any(isinstance(i, bytes) for i in owner.items)


async def test_a_journaled_chunk_has_its_timings_before_its_pcm(piper: PiperEngine) -> None:
    owner = await speak(piper, TEXTS[1:2], chunk_pcm=True)
    kinds = [type(i).__name__ for i in owner.items if not isinstance(i, bytes)]
    assert kinds[: kinds.index("ChunkPcm") + 1] == [
        "SegmentStart", "ChunkTimings", "ChunkTimings", "ChunkTimings", "ChunkPcm",
    ]  # fmt: skip
    assert isinstance(owner.items[4], ChunkPcm)
    check_chunks(owner, TEXTS[1:2])


class Runaway(PiperEngine):
    """Piper that, after its real sentences, goes on with 40 s of the last one and
    words it says are in it (a runaway the worker cuts at the chunk's audio bound)."""

    def synthesize_timed(
        self, text: str, voice: str, speed: float, options: EngineOptions | None = None
    ) -> Iterator[Audio | Timed]:
        last: Audio = np.zeros(0, np.float32)
        for piece in super().synthesize_timed(text, voice, speed, options):
            last = piece.audio if isinstance(piece, Timed) else piece
            yield piece
        for _ in range(40):
            yield Timed(np.resize(last, self.sample_rate), [WordSpan(0, 5, 0.2, 0.4)])


async def test_words_past_a_cut_are_dropped() -> None:
    engine = Runaway()
    engine.load()
    owner = await speak(engine, ["Hello there."])
    done = next(i for i in owner.items if isinstance(i, ChunkDone))
    words = [w for t in owner.items if isinstance(t, ChunkTimings) for w in t.words]
    assert done.audio_s < 10  # cut
    assert len(words) > 2  # the real ones, then some of the runaway's
    assert all(w.t0 < done.audio_s and w.t1 <= done.audio_s + 1e-9 for w in words)
