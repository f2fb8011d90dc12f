"""F5 reference preparation on real speech (Piper's voice): resampling, clipping at a
pause with the transcript cut to match, mismatch rejection, loudness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soxr

from server.engines.f5.policy import SAMPLE_RATE
from server.engines.f5.voices import (
    MAX_REF_S,
    TARGET_RMS,
    VoiceError,
    load_voice,
    prepare_reference,
    scan_voices_dir,
)
from tests.engines.f5.conftest import ALICE_TEXT, piper_speech, write_voice
from tests.support import rms

SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
]


@pytest.fixture(scope="module")
def sentences() -> tuple[list[np.ndarray], int]:
    out = []
    rate = 0
    for s in SENTENCES:
        audio, rate = piper_speech(s)
        out.append(audio)
    return out, rate


def test_reference_is_resampled_and_its_transcript_ends_a_sentence(
    sentences: tuple[list[np.ndarray], int],
) -> None:
    clips, rate = sentences
    audio, text, _, clipped = prepare_reference(clips[0], rate, SENTENCES[0], "one")
    assert text == SENTENCES[0] + " "
    assert clipped is None
    expected = len(clips[0]) / rate
    # Edge silence goes, 50 ms of pause is added after the speech.
    assert expected - 0.4 < len(audio) / SAMPLE_RATE < expected + 0.1
    _, text2, _, _ = prepare_reference(
        clips[0], rate, "  The birch canoe slid on the smooth planks ", "x"
    )
    assert text2 == "The birch canoe slid on the smooth planks. "


def test_a_long_reference_is_clipped_at_a_pause_and_the_transcript_cut_to_match(
    sentences: tuple[list[np.ndarray], int],
) -> None:
    clips, rate = sentences
    pause = np.zeros(int(0.5 * rate), dtype=np.float32)
    audio = np.concatenate([x for c in clips for x in (c, pause)])
    total = len(audio) / rate
    assert total > MAX_REF_S + 2  # the precondition of this test
    out, text, _, clipped = prepare_reference(audio, rate, " ".join(SENTENCES), "long")
    assert clipped is not None and clipped > MAX_REF_S
    seconds = len(out) / SAMPLE_RATE
    assert 3.0 < seconds <= MAX_REF_S + 0.1
    # The transcript is cut at the sentence where the audio was cut.
    kept = 0
    t = 0.0
    for c in clips:
        t += len(c) / rate + 0.5
        if t - 0.25 > seconds:
            break
        kept += 1
    assert text == " ".join(SENTENCES[:kept]) + " ", (text, kept, seconds)


def test_a_transcript_that_does_not_match_the_audio_is_refused(
    sentences: tuple[list[np.ndarray], int],
) -> None:
    clips, rate = sentences
    audio = np.concatenate(clips[:2])
    with pytest.raises(VoiceError, match="does not match"):
        prepare_reference(audio, rate, "Hi.", "short.wav")
    with pytest.raises(VoiceError, match="does not match"):
        prepare_reference(clips[0], rate, " ".join(SENTENCES * 4), "long-text.wav")
    with pytest.raises(VoiceError, match="transcript is empty"):
        prepare_reference(clips[0], rate, "  ", "empty.wav")


def test_a_long_reference_without_pauses_or_breaks_is_refused(
    sentences: tuple[list[np.ndarray], int],
) -> None:
    rng = np.random.default_rng(1)
    noise = (0.1 * rng.standard_normal(SAMPLE_RATE * 16)).astype(np.float32)
    with pytest.raises(VoiceError, match="no pause"):
        prepare_reference(noise, SAMPLE_RATE, "word " * 40, "noise.wav")
    clips, rate = sentences
    pause = np.zeros(int(0.5 * rate), dtype=np.float32)
    audio = np.concatenate([x for c in clips for x in (c, pause)])
    # The same speech, but a transcript with no punctuation to cut at.
    words = " ".join(SENTENCES).replace(".", "")
    with pytest.raises(VoiceError, match="no sentence or clause break"):
        prepare_reference(audio, rate, words, "unpunctuated.wav")


def test_quiet_references_are_normalised_and_output_scaled_back(
    sentences: tuple[list[np.ndarray], int],
) -> None:
    clips, rate = sentences
    quiet = clips[1] * 0.05
    audio, _, gain, _ = prepare_reference(quiet, rate, SENTENCES[1], "quiet")
    assert abs(rms(audio) - TARGET_RMS) < 0.01
    reference = soxr.resample(quiet, rate, SAMPLE_RATE)
    # Scaling the output by the gain gives back the reference's own loudness.
    assert gain * TARGET_RMS == pytest.approx(rms(reference), rel=0.15)
    louder = np.clip(clips[1] * 3.0, -1.0, 1.0)
    loud, _, gain_loud, _ = prepare_reference(louder, rate, SENTENCES[1], "loud")
    assert gain_loud == 1.0 and rms(loud) > TARGET_RMS


def test_a_voices_directory_with_language_folders(tmp_path: Path) -> None:
    audio, rate = piper_speech(ALICE_TEXT)
    write_voice(tmp_path, "alice", audio, rate, ALICE_TEXT)
    write_voice(tmp_path / "fr", "marie", audio, rate, ALICE_TEXT)
    voices = {v.id: v for v in scan_voices_dir(tmp_path, "en")}
    assert {k: v.language for k, v in voices.items()} == {"alice": "en", "marie": "fr"}
    assert voices["alice"].bytes_per_s == pytest.approx(
        len((ALICE_TEXT + " ").encode()) / voices["alice"].seconds
    )
    (tmp_path / "bob.wav").write_bytes((tmp_path / "alice.wav").read_bytes())
    with pytest.raises(VoiceError, match=r"no transcript; put the words .*bob\.txt"):
        scan_voices_dir(tmp_path, "en")
    (tmp_path / "bob.txt").write_text(ALICE_TEXT)
    (tmp_path / "bob.wav").write_bytes(b"RIFF not really")
    with pytest.raises(VoiceError, match="cannot read audio"):
        load_voice(tmp_path / "bob.wav", "en")
