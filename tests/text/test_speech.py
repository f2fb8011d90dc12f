"""Verbalized text heard: the bundled Piper voice speaks what ``for_piper`` makes of sentences
with money, dates, units, phone numbers and decades, and the recognizer (pocketsphinx, which
ships its English model) hears the words that espeak-ng alone gets wrong ("dollar twelve
point five zero", "three slash four", "K M slash H", "G B"; docs/normalization.md)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from server.engines.base import EngineOptions
from server.engines.piper import PiperEngine
from server.text import for_piper, verbalize
from tests.support import transcribe

# (what the client wrote, what the spoken form must say, words the recognizer must hear:
# measured, the ones it hears reliably; it hears none of them from the raw text)
CASES = [
    ("It costs £3.20 now.", "three pounds and twenty pence", "three pounds and twenty pence"),
    ("It costs $12.50 today.", "twelve dollars and fifty cents", "and fifty cents"),
    ("Drive at 50 km/h please.", "fifty kilometers per hour", "fifty kilometers"),
    ("The temperature is 20 °C.", "twenty degrees Celsius", "degrees celsius"),
    ("Call me at 555-123-4567.", "five five five, one two three", "one two three four five six"),
    ("We met in the 1990s.", "nineteen nineties", "nineteen nineties"),
    ("Add 3/4 of a cup.", "three quarters", "three quarters"),
    ("The file is 8 GB.", "eight gigabytes", "eight gigabytes"),
    ("The meeting is on 3/4/2025.", "March fourth, twenty twenty-five", "twenty twenty five"),
]


@functools.cache
def _piper() -> PiperEngine:
    engine = PiperEngine()
    engine.load()
    return engine


# Piper's noise off: the voice says a sentence the same way every time, so what the
# recognizer hears does not change from run to run (with the voice's own noise it once
# heard "the policy gigabytes" for "the file is eight gigabytes").
QUIET = EngineOptions(noise_scale=0.0, noise_w=0.0)


def _heard(text: str) -> str:
    engine = _piper()
    voice = engine.info().default_voice  # the bundled US English voice
    audio = np.concatenate(list(engine.synthesize(text, voice, 1.0, QUIET)))
    return transcribe(audio, engine.sample_rate)


@pytest.mark.parametrize(("text", "spoken", "heard"), CASES, ids=[c[0] for c in CASES])
def test_piper_speaks_the_words(text: str, spoken: str, heard: str) -> None:
    said = for_piper(text, "en_US").text
    assert spoken in said
    assert heard in _heard(said), said


def test_f5s_form_is_heard_too() -> None:
    """The whole English form (F5's) read by Piper: times and ordinals as words as well."""
    said = verbalize("Dr. Smith arrives at 3:30 pm on the 21st.", "en").text
    assert said == "Doctor Smith arrives at three thirty PM on the twenty-first."
    hyp = _heard(said)
    assert "three thirty" in hyp and "twenty first" in hyp, hyp
