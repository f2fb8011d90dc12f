"""F5 speaks numbers, dates, units and abbreviations as words (server/text/, issue 17), in its
voice's language, while what the client sees stays what it wrote: the segment's text, the
chunk's character count, a failed chunk's rest, and word spans mapped back through the
spoken form. The tiny random-weight model runs on the CPU (conftest.py)."""

from __future__ import annotations

import asyncio
import re
from itertools import pairwise

import msgspec
import pytest

from server.config import load_settings
from server.engines.base import Audio, WordSpan
from server.engines.f5.active import Active
from server.engines.f5.batch_worker import BatchedEngineWorker
from server.engines.f5.engine import F5Engine, GenRequest
from server.engines.f5.options import F5Options
from server.engines.f5.policy import CrossFader, StreamPolicy
from server.engines.timing import text_words
from server.engines.wordmap import remap_said
from server.engines.worker import ChunkDone, Job, SegmentStart
from server.text import Part
from tests.engines.f5.test_batch_worker import Owner

TEXT = (
    "It costs $12.50 on 3/4/2025 at 3:30 pm, and 1,234,567 people came in 1999. "
    "Dr. Smith drove 50 km/h for 21 km, e.g. to St. Louis, with 25% battery left."
)


def test_the_plan_cuts_the_spoken_form_into_spans_of_the_client_text(f5_engine: F5Engine) -> None:
    parts = f5_engine.speech(TEXT, "alice", 1.0, first=True)
    assert len(parts) >= 3  # a short first piece, longer ones after it
    spoken = " ".join(p.text for p in parts)
    assert "twelve dollars and fifty cents on March fourth, twenty twenty-five" in spoken
    assert "three thirty PM" in spoken and "nineteen ninety-nine" in spoken
    assert "Doctor Smith drove fifty kilometers per hour" in spoken
    assert "Saint Louis" in spoken and "twenty-five percent" in spoken
    assert not re.search(r"[0-9$%]", spoken)
    # ``plan`` (what the core cuts a chunk with) gives consecutive spans of what was written
    plan = f5_engine.plan(TEXT, "alice", 1.0, first=True)
    assert plan == [p.source for p in parts]
    at = 0
    for piece in plan:
        at = TEXT.index(piece, at) + len(piece)
    assert " ".join(plan) == TEXT.strip()


def test_the_voice_language_picks_the_words(f5_engine: F5Engine) -> None:
    assert f5_engine.say("Es kostet 12,50 € am 3. März.", "hans").text == (
        "Es kostet zwölf Euro und fünfzig Cent am dritten März."
    )
    assert f5_engine.say("It costs $5.", "alice").text == "It costs five dollars."


def test_the_setting_turns_it_off(f5_engine: F5Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    opts = F5Options.from_settings(load_settings({"VOXWIRE_TEXT_NORMALIZATION": "false"}))
    assert opts.text_normalization is False
    assert F5Options.from_settings(load_settings({})).text_normalization is True
    off = msgspec.structs.replace(f5_engine.opts, text_normalization=False)
    monkeypatch.setattr(f5_engine, "opts", off)
    assert f5_engine.say(TEXT, "alice").text == TEXT
    assert f5_engine.plan(TEXT, "alice", 1.0, True) == [
        p.text for p in f5_engine.speech(TEXT, "alice", 1.0, True)
    ]


async def test_f5_says_words_and_the_client_sees_its_text(
    f5_engine: F5Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    said: list[str] = []
    generate = f5_engine.generate

    def spy(key: str, reqs: list[GenRequest]) -> list[Audio]:
        said.extend(r.text for r in reqs)
        return generate(key, reqs)

    monkeypatch.setattr(f5_engine, "generate", spy)
    a = Owner("a")
    worker = BatchedEngineWorker(f5_engine, max_batch=1)
    text = "It costs $12.50 on 3/4 at 15:45."
    worker.submit(a.job(0, text, first=True))
    worker.submit(Job(a, 0, "flush"))
    worker.start()
    await asyncio.wait_for(a.done.wait(), 120)
    await worker.stop()
    assert " ".join(said) == (
        "It costs twelve dollars and fifty cents on March fourth at fifteen forty-five."
    )
    (seg,) = a.of(SegmentStart)
    assert isinstance(seg, SegmentStart) and seg.text == text  # what the client wrote
    (done,) = a.of(ChunkDone)
    assert isinstance(done, ChunkDone) and done.chars == len(text) and done.audio_s > 1.0


def test_a_failed_chunk_hands_on_its_rest_as_written() -> None:
    """After a failure the fallback engine gets the unspoken part as the client wrote it
    (it normalises it its own way), and the spoken part is counted in its characters."""
    owner = Owner("a")
    job = owner.job(3, "I paid $12.50 and 3/4 of it.")
    parts = [Part("I paid twelve dollars and fifty cents", "I paid $12.50"),
             Part("and three quarters of it.", "and 3/4 of it.")]  # fmt: skip
    act = Active(job, "default", parts, CrossFader(StreamPolicy()), next=1, started=True)
    rest = act.rest()  # the worker hands it on in EngineFailed.retry
    assert rest.text == "and 3/4 of it." and rest.index == -1


def test_estimated_word_spans_point_at_the_client_words(f5_engine: F5Engine) -> None:
    """Word spans of what F5 said (estimated: its audio spread over its words by length, as
    a duration rule would) map back to the words the client wrote."""
    text = "Pay $12.50 on 3/4/2025 at 15:45, Dr. Smith."
    said = f5_engine.say(text, "alice")
    words = text_words(said.text)
    total = sum(w.end - w.start for w in words)
    spans, t = [], 0.0
    for w in words:
        dt = 3.0 * (w.end - w.start) / total
        spans.append(WordSpan(w.start, w.end, t, t + dt))
        t += dt
    back = remap_said(said, text, spans)
    assert [text[w.start : w.end] for w in back] == [
        "Pay", "$12.50", "on", "3/4/2025", "at", "15:45", "Dr.", "Smith",
    ]  # fmt: skip
    money = back[1]
    assert money.t0 == spans[1].t0 and money.t1 == spans[5].t1  # "twelve" ... "cents"
    assert all(a.t1 <= b.t0 + 1e-9 for a, b in pairwise(back))
