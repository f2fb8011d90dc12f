"""Pipecat 1.14's own TTS services against a real voxwire, pointed at it by URL only.

Each test builds a real Pipecat pipeline without a transport (the TTS service and a
sink that records the frames reaching the end of it), runs it with Pipecat's
WorkerRunner, and feeds it what an LLM and a user would: a reply streamed as tokens,
an ``InterruptionFrame`` (barge-in) in the middle of a long reply, a ``TTSSpeakFrame``.
What the pipeline plays is decoded (raw s16le at the service's rate) and transcribed
by pocketsphinx. A tap on the service's socket records what the server sent, before
Pipecat drops what it no longer wants, so an interruption is checked on the wire too.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from loguru import logger  # pipecat's logger
from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    InterruptionWorkerFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.cartesia.tts import CartesiaTTSService
from pipecat.services.deepgram.tts import DeepgramTTSService
from pipecat.services.elevenlabs.tts import ElevenLabsTTSService
from pipecat.services.tts_service import TTSService
from pipecat.workers.runner import WorkerRunner

from tests.support import ServerProcess, decode_pcm, transcribe, word_recall

VOICE = "en_US-joe-medium"
RATE = 24000
BYTES_PER_S = RATE * 2  # s16le mono
REPLY = (
    "Our meeting with the bank has moved to Thursday afternoon. "
    "Please bring the signed papers with you."
)
NEXT = "Open the window because the kitchen is getting very hot."
LONG = " ".join(
    [
        "The train to the city leaves at noon from the second platform.",
        "My brother bought a new red bicycle for his long ride to work.",
    ]
    * 6
)  # about 40 s of speech
SERVICES = ["elevenlabs", "deepgram", "cartesia"]
# the services that take word timings from the server (Deepgram's has none to take)
WORD_TIMED = ["elevenlabs", "cartesia"]
GRACE_S = 1.0  # what may still be in flight when the interruption is sent


def _to_stderr(msg: str) -> None:
    sys.stderr.write(msg)  # the current sys.stderr: pytest's capture while a test runs


@pytest.fixture(autouse=True, scope="module")
def quiet_pipecat() -> Iterator[None]:
    """Pipecat logs every frame at DEBUG; keep its warnings (shown when a test fails)."""
    logger.remove()
    sink = logger.add(_to_stderr, level="WARNING")
    yield
    logger.remove(sink)
    logger.add(sys.stderr)


def make_tts(kind: str, port: int) -> TTSService:
    """The vendor's Pipecat service, pointed at voxwire the way its docs allow (ws://)."""
    base = f"ws://127.0.0.1:{port}"
    if kind == "elevenlabs":  # {url}/v1/text-to-speech/{voice}/multi-stream-input
        return ElevenLabsTTSService(
            api_key="unused",
            url=base,
            sample_rate=RATE,
            settings=ElevenLabsTTSService.Settings(voice=VOICE),
        )
    if kind == "deepgram":  # {base_url}/v1/speak?model=...
        return DeepgramTTSService(
            api_key="unused",
            base_url=base,
            sample_rate=RATE,
            settings=DeepgramTTSService.Settings(voice=VOICE),
        )
    assert kind == "cartesia"  # the full URL
    return CartesiaTTSService(
        api_key="unused",
        url=f"{base}/tts/websocket",
        sample_rate=RATE,
        settings=CartesiaTTSService.Settings(voice=VOICE),
    )


def llm_tokens(text: str) -> list[str]:
    """``text`` cut the way an LLM streams it: pieces of up to five letters, each word's
    leading space on its first piece (" meet", "ing")."""
    return re.findall(r"\s?\S{1,5}", text)


# ------------------------------------------------------------------ the pipeline


@dataclass
class Seen:
    at: float  # time.monotonic() when the frame reached the sink
    frame: Frame

    @property
    def context(self) -> str | None:
        """The TTS context (one per reply) of an audio, text or start/stop frame."""
        ctx = getattr(self.frame, "context_id", None)
        return ctx if isinstance(ctx, str) else None


class Sink(FrameProcessor):
    """The end of the pipeline, where a transport would play the audio."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Seen] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM and not isinstance(frame, StartFrame):
            self.seen.append(Seen(time.monotonic(), frame))
        await self.push_frame(frame, direction)


class _Tapped:
    """The service's socket, recording every message the server sends on it."""

    def __init__(self, ws: Any, log: list[tuple[float, str | bytes]]) -> None:
        self._ws = ws
        self._log = log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        async for msg in self._ws:
            self._log.append((time.monotonic(), msg))
            yield msg


@dataclass
class WireAudio:
    at: float
    context: str | None  # None: Deepgram's binary frames name no reply
    seconds: float


@dataclass
class Bot:
    """One Pipecat pipeline (TTS service → sink) running against the server."""

    kind: str
    tts: TTSService
    sink: Sink = field(default_factory=Sink)
    wire: list[tuple[float, str | bytes]] = field(default_factory=list)
    errors: list[ErrorFrame] = field(default_factory=list)

    def __post_init__(self) -> None:
        get = self.tts._get_websocket  # type: ignore[attr-defined]
        self.tts._get_websocket = lambda: _Tapped(get(), self.wire)  # type: ignore[attr-defined]

    # --- feeding it
    async def reply(self, text: str, pace_s: float = 0.005, end: bool = True) -> None:
        """An LLM's reply, token by token, as Pipecat's LLM services push it; ``end``:
        with its end (an interrupted LLM sends none)."""
        await self.worker.queue_frame(LLMFullResponseStartFrame())
        for tok in llm_tokens(text):
            await self.worker.queue_frame(LLMTextFrame(tok))
            await asyncio.sleep(pace_s)
        if end:
            await self.worker.queue_frame(LLMFullResponseEndFrame())

    async def speak(self, text: str) -> None:
        await self.worker.queue_frame(TTSSpeakFrame(text))

    async def interrupt(self) -> None:
        """A barge-in the way Pipecat's user-turn processors ask for one: an
        InterruptionWorkerFrame upstream, which the worker answers by putting an
        InterruptionFrame straight into the pipeline, ahead of anything queued."""
        await self.worker.queue_frame(InterruptionWorkerFrame(), FrameDirection.UPSTREAM)

    # --- what came out
    def frames(self, kind: type[Frame], since: float = 0.0) -> list[Seen]:
        return [s for s in self.sink.seen if isinstance(s.frame, kind) and s.at >= since]

    async def until(self, what: str, ok: Any, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while (got := ok()) is None or got is False or got == []:
            if time.monotonic() > deadline:
                kinds = [type(s.frame).__name__ for s in self.sink.seen[-12:]]
                raise AssertionError(f"no {what} in {timeout} s; last frames {kinds}")
            if self.errors:
                raise AssertionError(f"pipeline errors: {[e.error for e in self.errors]}")
            await asyncio.sleep(0.02)
        return got

    async def first_audio(self, since: float) -> str:
        """The context id of the first audio played after ``since``."""
        got: list[Seen] = await self.until(
            "audio", lambda: self.frames(TTSAudioRawFrame, since), timeout=15
        )
        ctx = got[0].context
        assert ctx is not None
        return ctx

    async def stopped(self, since: float) -> str:
        """Waits for the end of the reply that started after ``since``: its context id."""
        got: list[Seen] = await self.until(
            "TTSStoppedFrame", lambda: self.frames(TTSStoppedFrame, since)
        )
        ctx = got[0].context
        assert ctx is not None
        return ctx

    def audio(self, ctx: str) -> bytes:
        return b"".join(
            s.frame.audio
            for s in self.sink.seen
            if isinstance(s.frame, TTSAudioRawFrame) and s.context == ctx
        )

    def words(self, ctx: str) -> list[TTSTextFrame]:
        return [
            s.frame
            for s in self.sink.seen
            if isinstance(s.frame, TTSTextFrame) and s.frame.context_id == ctx
        ]

    def wire_audio(self) -> list[WireAudio]:
        """The audio messages the server sent, whatever Pipecat made of them."""
        out = []
        for at, msg in self.wire:
            if isinstance(msg, bytes):
                out.append(WireAudio(at, None, len(msg) / BYTES_PER_S))
                continue
            m = json.loads(msg)
            data = m.get("audio") if self.kind == "elevenlabs" else m.get("data")
            if data:
                ctx = m.get("contextId") if self.kind == "elevenlabs" else m.get("context_id")
                out.append(WireAudio(at, ctx, len(base64.b64decode(data)) / BYTES_PER_S))
        return out

    # --- running it
    async def __aenter__(self) -> Bot:
        self.worker = PipelineWorker(
            Pipeline([self.tts, self.sink]),
            params=PipelineParams(audio_out_sample_rate=RATE),
            cancel_on_idle_timeout=False,
            idle_timeout_secs=None,
            enable_rtvi=False,
        )
        started = asyncio.Event()

        async def on_started(worker: PipelineWorker, frame: Frame) -> None:
            started.set()

        async def on_error(worker: PipelineWorker, frame: ErrorFrame) -> None:
            self.errors.append(frame)

        self.worker.add_event_handler("on_pipeline_started", on_started)
        self.worker.add_event_handler("on_pipeline_error", on_error)
        self.runner = WorkerRunner(handle_sigint=False)
        await self.runner.add_workers(self.worker)
        self.running = asyncio.create_task(self.runner.run())
        await asyncio.wait_for(started.wait(), 20)
        assert not self.errors, [e.error for e in self.errors]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.worker.queue_frame(EndFrame())
        try:
            await asyncio.wait_for(asyncio.shield(self.running), 15)
        except TimeoutError:
            await self.runner.cancel()
            await asyncio.wait_for(self.running, 10)
            raise


def heard(pcm: bytes, text: str) -> float:
    return word_recall(text, transcribe(decode_pcm([pcm]), RATE))


def words_of(text: str) -> list[str]:
    return text.split()


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("kind", SERVICES)
async def test_an_llm_reply_is_spoken(server: ServerProcess, kind: str) -> None:
    """Two sentences streamed as LLM tokens: Pipecat aggregates them into sentences,
    sends them, ends the reply (ElevenLabs: flush + close_context; Deepgram: Flush;
    Cartesia: continue=false) and plays all of it once the server says it is done."""
    async with Bot(kind, make_tts(kind, server.port)) as bot:
        t0 = time.monotonic()
        await bot.reply(REPLY)
        ctx = await bot.stopped(t0)
        pcm = bot.audio(ctx)
        assert not bot.errors, [e.error for e in bot.errors]
    secs = len(pcm) / BYTES_PER_S
    assert 3.0 < secs < 12.0, secs  # 17 words
    assert heard(pcm, REPLY) >= 0.5
    assert not bot.errors, [e.error for e in bot.errors]


@pytest.mark.parametrize("kind", WORD_TIMED)
async def test_word_timestamps_reach_the_pipeline(server: ServerProcess, kind: str) -> None:
    """WORD TIMINGS (ElevenLabs ``alignment``, Cartesia ``timestamps``): Pipecat turns
    them into one TTSTextFrame per word, stamped with when it is spoken. Without them
    it would push the unspoken text as one frame at the end of the reply."""
    async with Bot(kind, make_tts(kind, server.port)) as bot:
        t0 = time.monotonic()
        await bot.reply(REPLY)
        ctx = await bot.stopped(t0)
        words = bot.words(ctx)
        secs = len(bot.audio(ctx)) / BYTES_PER_S
    assert [w.text for w in words] == words_of(REPLY)
    pts = [w.pts or 0 for w in words]  # ns, on Pipecat's clock
    assert all(p > 0 for p in pts), pts
    assert pts == sorted(pts), pts
    # real timings: distinct, spread over the audio, none past its end
    # (ElevenLabs: Pipecat gives the reply's last word the time of the one before it,
    # as no space follows it in the alignment)
    assert len(set(pts)) >= len(words) - 1, pts
    span = (pts[-1] - pts[0]) / 1e9
    assert 0.5 * secs < span <= secs, (span, secs)


@pytest.mark.parametrize(
    ("kind", "when"),
    [
        ("elevenlabs", "mid-reply"),
        ("elevenlabs", "after-the-reply-ended"),
        ("deepgram", "mid-reply"),
        ("deepgram", "after-the-reply-ended"),
        ("cartesia", "mid-reply"),
        ("cartesia", "after-the-reply-ended"),
    ],
)
async def test_an_interruption_stops_the_audio_and_the_next_reply_is_clean(
    server: ServerProcess, kind: str, when: str
) -> None:
    """A user barges in on a long reply: Pipecat pushes an InterruptionFrame and the
    service tells the server (ElevenLabs: close_context; Deepgram: Clear; Cartesia:
    cancel). The server stops sending that reply's audio; a TTSSpeakFrame after it is
    spoken alone — no leftover of the old reply glued onto it, not cut short by the
    old reply's end (Deepgram's audio and Flushed name no reply).

    ``mid-reply``: the LLM is still streaming the reply (the usual barge-in), so no end
    of reply was sent (ElevenLabs: a close_context without a flush; Deepgram: Clear
    with no Flush; Cartesia: cancel of an open context). ``after-the-reply-ended``: all
    of it was sent and ended (a TTSSpeakFrame: ElevenLabs flush + close_context, then a
    second close_context on the interruption; Deepgram: Flush, then Clear; Cartesia:
    continue=false, then cancel)."""
    async with Bot(kind, make_tts(kind, server.port)) as bot:
        t0 = time.monotonic()
        if when == "mid-reply":  # a fast LLM with minutes of text, cut off after 1.5 s
            llm = asyncio.create_task(bot.reply(" ".join([LONG] * 10), pace_s=0.003, end=False))
        else:
            await bot.speak(LONG)
        old = await bot.first_audio(t0)
        if when == "mid-reply":
            # by now some 20 sentences are at the server, more than it speaks in the grace
            await asyncio.sleep(max(0.0, t0 + 1.5 - time.monotonic()))
            assert not llm.done()
            llm.cancel()  # the LLM stops generating when the user speaks
        t_int = time.monotonic()
        await bot.interrupt()
        await asyncio.sleep(2 * GRACE_S)  # without a stop the whole reply arrives by now
        t_next = time.monotonic()
        await bot.speak(NEXT)
        new = await bot.stopped(t_next)
        await asyncio.sleep(0.5)  # anything late of the old reply
        wire = bot.wire_audio()
        played_old = bot.frames(TTSAudioRawFrame, since=t_int + 0.2)
        pcm = bot.audio(new)
        new_words = [w.text for w in bot.words(new)]
        old_words_after = [
            s for s in bot.frames(TTSTextFrame, since=t_int + 0.2) if s.context == old
        ]
    assert new != old
    # on the wire: nothing of the old reply after the grace ...
    late = [
        a
        for a in wire
        if a.at > t_int + GRACE_S and (a.context == old or (a.context is None and a.at < t_next))
    ]
    assert not late, f"{sum(a.seconds for a in late):.1f} s of the old reply after the stop"
    # ... and at most half of the whole of it before (the server runs well ahead of
    # real time, so what it sent before the stop depends on how fast it was)
    whole_s = 40.0 if when == "after-the-reply-ended" else 400.0
    old_s = sum(a.seconds for a in wire if a.context in (old, None) and a.at < t_next)
    assert old_s < whole_s / 2, old_s
    # in the pipeline: nothing of the old reply played after the interruption
    assert all(s.context != old for s in played_old)
    assert not old_words_after
    # the next utterance, alone and whole
    secs = len(pcm) / BYTES_PER_S
    assert 2.0 < secs < 7.0, secs  # 10 words; the old reply's audio would add seconds
    assert heard(pcm, NEXT) >= 0.5
    if kind in WORD_TIMED:  # WORD TIMINGS: the next reply's words, from the server
        assert new_words == words_of(NEXT)
    assert not bot.errors, [e.error for e in bot.errors]


@pytest.mark.parametrize("kind", SERVICES)
async def test_replies_one_after_another_on_one_socket(server: ServerProcess, kind: str) -> None:
    """A conversation: a spoken greeting (TTSSpeakFrame), then an LLM reply, on the
    socket the service opened at start — each its own context, each heard."""
    async with Bot(kind, make_tts(kind, server.port)) as bot:
        t0 = time.monotonic()
        await bot.speak(NEXT)
        first = await bot.stopped(t0)
        t1 = time.monotonic()
        await bot.reply(REPLY)
        second = await bot.stopped(t1)
        pcm1, pcm2 = bot.audio(first), bot.audio(second)
    assert first != second
    assert heard(pcm1, NEXT) >= 0.5
    assert heard(pcm2, REPLY) >= 0.5
    assert not bot.errors, [e.error for e in bot.errors]
