"""Word timings from phoneme alignments (server/engines/timing.py), without an engine:
phonemes as espeak-ng gives them for Piper, with made-up sample counts."""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.engines.base import WordSpan
from server.engines.timing import (
    CLAUSE,
    NONE,
    SENTENCE,
    ChunkTimer,
    align,
    phonetic_words,
    remap,
    text_words,
)
from server.streaming.normalize import speakable
from tests.hostile_texts import HOSTILE

RATE = 22050
N = 1000  # samples per phoneme in the made-up alignments


def words_of(text: str) -> list[str]:
    return [text[w.start : w.end] for w in text_words(text)]


def aligned(phonemes: str, n: int = N) -> list[tuple[str, int]]:
    """Piper's alignment for a sentence: its start and end markers and every phoneme."""
    return [("^", n), *((p, n) for p in phonemes), ("$", n)]


def pairs(text: str, sentences: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """Which phonetic words each text word got: the plan, read through ChunkTimer."""
    timer = ChunkTimer(text, [list(s) for s in sentences], RATE)
    spans: list[WordSpan] = []
    bounds: list[tuple[float, float]] = []  # each phonetic word's time, from the chunk start
    base = 0.0
    for s in sentences:
        pw = phonetic_words(aligned(s))
        bounds += [(base + w.s0 / RATE, base + w.s1 / RATE) for w in pw]
        n = len(aligned(s)) * N
        spans += [
            WordSpan(w.start, w.end, w.t0 + base, w.t1 + base)
            for w in timer.piece(list(s), aligned(s), n)[0]
        ]
        base += n / RATE
    sounds = [w.sounds for s in sentences for w in phonetic_words(aligned(s))]
    out = []
    for w in spans:
        inside = tuple(
            sounds[i] for i, (a, b) in enumerate(bounds) if a >= w.t0 - 1e-9 and b <= w.t1 + 1e-9
        )
        out.append((text[w.start : w.end], inside))
    return out


# ---------------------------------------------------------------- text words


def test_text_words_drop_surrounding_punctuation_and_keep_its_kind() -> None:
    text = '"Hello," she said (quietly) — then: "Go!" Really... e.g. $3.50 & 50%.'
    tw = text_words(text)
    assert [text[w.start : w.end] for w in tw] == [
        "Hello", "she", "said", "quietly", "then", "Go", "Really", "e.g", "$3.50", "&", "50%",
    ]  # fmt: skip
    assert [w.punct for w in tw] == [
        CLAUSE, NONE, NONE, CLAUSE, CLAUSE, SENTENCE, NONE, SENTENCE, NONE, NONE, SENTENCE,
    ]  # fmt: skip
    assert [w.joined for w in tw][7] is True  # after the ellipsis: espeak runs it on


@pytest.mark.parametrize("text", ["", "   ", "...", "?!", "— – -", "\U0001f600\U0001f600"])
def test_text_without_words(text: str) -> None:
    assert text_words(text) == []


def test_numbers_weigh_what_they_are_read_as() -> None:
    w = {text: text_words(text)[0].weight for text in ["7", "12", "25", "150", "2024", "3.50"]}
    assert w["7"] < w["12"] < w["25"] < w["150"] < w["2024"]
    assert w["3.50"] > w["25"]


# ---------------------------------------------------------------- phonetic words


def test_phonetic_words_from_an_alignment() -> None:
    # "Well, the quick fox." : a comma's pause, stress marks, the end marker
    pw = phonetic_words(aligned("wˈɛl, ðə kwˈɪk fˈɑːks."))
    assert [w.sounds for w in pw] == ["wɛl", "ðə", "kwɪk", "fɑks"]
    assert [w.punct for w in pw] == [CLAUSE, NONE, NONE, SENTENCE]
    # "wˈɛl" starts after "^"; it ends with its last sound, before the comma
    assert (pw[0].s0, pw[0].s1) == (1 * N, 5 * N)
    # after the comma's pause the separator is pause too: "ðə" starts at its "ð"
    assert pw[1].s0 == 7 * N
    # between words, a word starts at the separator before it (where "ðə" ends)
    assert pw[2].s0 == pw[1].s1 == 9 * N
    assert pw[3].s0 == pw[2].s1


def test_phonetic_words_without_samples() -> None:
    pw = phonetic_words([(p, 0) for p in "həlˈoʊ wˈɜːld"])
    assert [(w.sounds, w.s0, w.s1) for w in pw] == [("həloʊ", 0, 0), ("wɜld", 0, 0)]


# ---------------------------------------------------------------- alignment


def test_one_phonetic_word_each() -> None:
    got = pairs("The quick brown fox.", ["ðə kwˈɪk bɹˈaʊn fˈɑːks."])
    assert got == [
        ("The", ("ðə",)), ("quick", ("kwɪk",)), ("brown", ("bɹaʊn",)), ("fox", ("fɑks",)),
    ]  # fmt: skip


def test_numbers_and_symbols_take_the_words_they_are_read_as() -> None:
    text = "I paid $3.50 for 12 apples!"
    got = pairs(text, ["aɪ pˈeɪd dˈɑːlɚ θɹˈiː pɔɪnt fˈaɪv zˈiəɹoʊ fɔːɹ twˈɛlv ˈæpəlz!"])
    assert got == [
        ("I", ("aɪ",)),
        ("paid", ("peɪd",)),
        ("$3.50", ("dɑlɚ", "θɹi", "pɔɪnt", "faɪv", "ziəɹoʊ")),
        ("for", ("fɔɹ",)),
        ("12", ("twɛlv",)),
        ("apples", ("æpəlz",)),
    ]


def test_words_espeak_runs_together_share_one() -> None:
    # "from the" is one phonetic word; "Well... okay" too
    text = "Bring these things with her from the store."
    got = pairs(text, ["bɹˈɪŋ ðiːz θˈɪŋz wɪð hɜː fɹʌmðə stˈɔːɹ."])
    assert [w for w, _ in got] == words_of(text)
    assert dict(got[:5]) == {
        "Bring": ("bɹɪŋ",), "these": ("ðiz",), "things": ("θɪŋz",), "with": ("wɪð",),
        "her": ("hɜ",),
    }  # fmt: skip
    assert got[5][1] == got[6][1] == ()  # "from" and "the" split "fɹʌmðə" between them
    got = pairs("Well... okay, fine.", ["wˈɛloʊkˈeɪ, fˈaɪn."])
    assert got[2] == ("fine", ("faɪn",))


def test_a_sentence_end_is_a_boundary() -> None:
    # espeak ends a sentence after "Dr." and after "St."; the text's words follow suit
    text = "Dr. Smith went to St. Louis."
    got = pairs(text, ["dˈɑːktɚ.", "smˈɪθ wˈɛnt tə sənt.", "lˈuːi."])
    assert got == [
        ("Dr", ("dɑktɚ",)), ("Smith", ("smɪθ",)), ("went", ("wɛnt",)), ("to", ("tə",)),
        ("St", ("sənt",)), ("Louis", ("lui",)),
    ]  # fmt: skip


def test_align_edge_cases() -> None:
    tw = text_words("one two")
    assert align([], phonetic_words(aligned("wʌn")), set()) == []
    assert align(tw, [], set()) == [0, 0]
    pw = phonetic_words(aligned("wʌn tuː θɹiː fɔːɹ"))
    assert align(tw, pw, set())[-1] == 4


# ---------------------------------------------------------------- per chunk


def test_times_are_per_piece_and_cover_the_chunk() -> None:
    text = "Hello there. How are you?"
    sentences = ["həlˈoʊ ðˈɛɹ.", "hˈaʊ ɑːɹ juː?"]
    timer = ChunkTimer(text, [list(s) for s in sentences], RATE)
    first, est1 = timer.piece(list(sentences[0]), aligned(sentences[0]), 14 * N)
    second, est2 = timer.piece(list(sentences[1]), aligned(sentences[1]), 15 * N)
    assert not est1 and not est2
    assert [text[w.start : w.end] for w in first] == ["Hello", "there"]
    assert [text[w.start : w.end] for w in second] == ["How", "are", "you"]
    # times from the start of each piece, in seconds
    assert first[0].t0 == pytest.approx(N / RATE)
    assert second[0].t0 == pytest.approx(N / RATE)
    for words, n in ((first, 14 * N), (second, 15 * N)):
        assert all(0 <= w.t0 <= w.t1 <= n / RATE for w in words)
        assert all(a.t1 <= b.t0 + 1e-9 for a, b in itertools.pairwise(words))


def test_without_alignment_times_are_estimated() -> None:
    text = "Hello big world."
    s = list("həlˈoʊ bˈɪɡ wˈɜːld.")
    timer = ChunkTimer(text, [s], RATE)
    words, estimated = timer.piece(s, None, RATE)  # one second of audio
    assert estimated
    assert [text[w.start : w.end] for w in words] == ["Hello", "big", "world"]
    assert words[0].t0 == 0 and words[-1].t1 == pytest.approx(1.0)
    assert words[0].t1 < words[1].t1 < words[2].t1


def test_a_sentence_that_was_not_planned_gives_no_words() -> None:
    timer = ChunkTimer("Hello.", [list("həlˈoʊ.")], RATE)
    assert timer.piece(list("ɡʊdbaɪ."), aligned("ɡʊdbaɪ."), 9 * N) == ([], True)
    assert timer.piece(list("həlˈoʊ."), aligned("həlˈoʊ."), 9 * N) == ([], True)


def test_a_word_across_sentences_comes_with_the_sentence_it_ends_in() -> None:
    # one text word, read as two of espeak's sentences
    text = "A.B"
    s1, s2 = "ˈeɪ.", "bˈiː"
    timer = ChunkTimer(text, [list(s1), list(s2)], RATE)
    assert timer.piece(list(s1), aligned(s1), 6 * N)[0] == []
    words, _ = timer.piece(list(s2), aligned(s2), 6 * N)
    assert [(w.start, w.end) for w in words] == [(0, 3)]
    assert words[0].t0 < 0 < words[0].t1  # it began in the piece before


def test_a_long_chunk_is_planned_quickly() -> None:
    text = ("The seventh of 12 sailors, Dr. Reyes, paid $4.25 for 3 maps. " * 7)[:400]
    words = ["ðə", "sˈɛvənθ", "ʌv", "twˈɛlv", "sˈeɪlɚz,", "dˈɑːktɚ", "ɹˈeɪz,", "pˈeɪd"]
    sentence = list(" ".join(words * 12) + ".")
    t0 = time.perf_counter()
    for _ in range(10):
        timer = ChunkTimer(text, [sentence], RATE)
        words_out, _ = timer.piece(sentence, aligned("".join(sentence)), len(sentence) * N)
    per_chunk_ms = (time.perf_counter() - t0) * 100
    assert len(words_out) == len(text_words(text))
    assert per_chunk_ms < 50, per_chunk_ms


# ---------------------------------------------------------------- hostile text


NAMED = "%$€£¥&@+=#/°"  # symbols espeak reads as words
KEPT = NAMED + ",;:!?"


def fake_phonemes(spoken: str) -> list[list[str]]:
    """Made-up espeak output: one phoneme per letter or digit, words at spaces,
    sentences at full stops; enough to drive the mapping over any text."""
    sentences: list[list[str]] = []
    for part in spoken.split(". "):
        ph: list[str] = []
        for word in part.split():
            sounds = [
                "ə" if c.isalnum() or c in NAMED else c for c in word if c in KEPT or c.isalnum()
            ]
            if sounds:
                ph += ([" "] if ph else []) + sounds
        if ph:
            sentences.append(ph)
    return sentences


def check(text: str) -> None:
    spoken = speakable(text)
    sentences = fake_phonemes(spoken)
    timer = ChunkTimer(spoken, sentences, RATE)
    words: list[WordSpan] = []
    base = 0.0
    for s in sentences:
        al = [("^", 700), *((p, 300 + 97 * i % 500) for i, p in enumerate(s)), ("$", 900)]
        n = sum(k for _, k in al)
        got, _ = timer.piece(s, al, n)
        assert all(w.t0 <= w.t1 <= n / RATE + 1e-9 for w in got)
        words += [WordSpan(w.start, w.end, w.t0 + base, w.t1 + base) for w in got]
        base += n / RATE
    expected = [(w.start, w.end) for w in text_words(spoken)] if sentences else []
    assert [(w.start, w.end) for w in words] == expected
    assert all(a.t0 <= b.t0 and a.t1 <= b.t1 for a, b in itertools.pairwise(words))
    back = remap(spoken, text, words)
    assert all(0 <= w.start < w.end <= len(text) for w in back)
    assert all(a.start < b.start for a, b in itertools.pairwise(back))


@pytest.mark.parametrize(("name", "text"), HOSTILE, ids=[n for n, _ in HOSTILE])
def test_hostile_texts_never_raise_and_stay_in_order(name: str, text: str) -> None:
    check(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "?!?!",
        "\U0001f600 \U0001f600",
        "1234567890123456789 ok",
        "x" * 300,
        "a " * 150,
        "Supercalifragilisticexpialidocious" * 6,
        "Hello, world! " * 20,
    ],
)
def test_plain_hostile_texts(text: str) -> None:
    check(text)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=250))
def test_any_text(text: str) -> None:
    check(text)


# ---------------------------------------------------------------- back to the client's text


def test_remap_to_the_text_the_client_sent() -> None:
    original = "Hi \U0001f600 there, ＡＢＣ friends!!!!!"
    spoken = speakable(original)
    assert spoken != original
    words = [WordSpan(w.start, w.end, i, i + 0.5) for i, w in enumerate(text_words(spoken))]
    back = remap(spoken, original, words)
    assert [original[w.start : w.end] for w in back] == ["Hi", "there", "ＡＢＣ", "friends"]
    assert [w.t0 for w in back] == [0, 1, 2, 3]


def test_remap_merges_what_the_normaliser_split() -> None:
    original = "Call 1234567890123456789 now"
    spoken = speakable(original)  # the digits are read in groups of four
    words = [WordSpan(w.start, w.end, i, i + 1.0) for i, w in enumerate(text_words(spoken))]
    back = remap(spoken, original, words)
    assert [original[w.start : w.end] for w in back] == ["Call", "1234567890123456789", "now"]
    assert (back[1].t0, back[1].t1) == (1, len(words) - 1)


def test_remap_of_the_same_text_is_the_identity() -> None:
    words = [WordSpan(0, 2, 0.0, 0.1)]
    assert remap("Hi", "Hi", words) == words
