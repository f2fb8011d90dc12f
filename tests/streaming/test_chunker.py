"""Tests for the incremental sentence chunker (pure, no I/O)."""

from __future__ import annotations

import itertools
import re

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.streaming.chunker import (
    ABBREVIATIONS,
    NUMERIC_ABBREVIATIONS,
    ChunkPolicy,
    SentenceChunker,
)

# merging disabled: then the chunk list must not depend on how the text was split at all
NO_MERGE = ChunkPolicy(min_chars=0)
SMALL = ChunkPolicy(first_min_words=2, first_max_chars=10, min_chars=8, max_chars=20)
TINY = ChunkPolicy(first_max_chars=10, max_chars=20)


def by_char(text: str, policy: ChunkPolicy | None = None) -> list[str]:
    """All chunks when ``text`` arrives one character at a time, then a flush."""
    chunker = SentenceChunker(policy)
    chunks: list[str] = []
    for char in text:
        chunks += chunker.push(char)
    return chunks + chunker.flush()


def whole(text: str, policy: ChunkPolicy | None = None) -> tuple[list[str], list[str]]:
    """(chunks from one push of ``text``, chunks from the flush after it)."""
    chunker = SentenceChunker(policy)
    pushed = chunker.push(text)
    return pushed, chunker.flush()


def in_pieces(
    pieces: list[str], policy: ChunkPolicy | None = None, hurry: bool = False
) -> list[str]:
    chunker = SentenceChunker(policy)
    chunker.hurry = hurry  # as while the engine is saturated
    chunks: list[str] = []
    for piece in pieces:
        chunks += chunker.push(piece)
    return chunks + chunker.flush()


def no_ws(text: str) -> str:
    return re.sub(r"\s+", "", text)


# -- properties ------------------------------------------------------------------------------

PUNCTUATION_HEAVY = st.lists(
    st.sampled_from(
        [
            *"aAbZz19 .\n\t,;:!?…—–-\"'”’)(」「。！？；，*/@",
            *[" ", " ", ". ", "\n\n", "Mr.", "e.g.", "U.S.", "3.1", "etc.", "...", "你好", " A"],
        ]
    ),
    max_size=60,
).map("".join)
ANY_TEXT = st.one_of(PUNCTUATION_HEAVY, st.text(max_size=150))
POLICIES = st.sampled_from([ChunkPolicy(), NO_MERGE, SMALL, TINY])


@st.composite
def split_text(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A text and an arbitrary split of it into pieces (empty pieces included)."""
    text = draw(ANY_TEXT)
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=25)))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in itertools.pairwise(bounds)]


def check_chunks(chunks: list[str], policy: ChunkPolicy) -> None:
    for chunk in chunks:
        assert chunk, "empty chunk"
        assert chunk == chunk.strip(), f"unstripped chunk {chunk!r}"
        assert len(chunk) <= policy.max_chars, f"chunk over max_chars: {chunk!r}"


@settings(max_examples=300, deadline=None)
@given(split_text(), POLICIES, st.booleans())
def test_property_no_text_lost_or_duplicated(
    sample: tuple[str, list[str]], policy: ChunkPolicy, hurry: bool
) -> None:
    text, pieces = sample
    chunks = in_pieces(pieces, policy, hurry)
    check_chunks(chunks, policy)
    assert no_ws("".join(chunks)) == no_ws(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(split_text(), min_size=1, max_size=3), POLICIES, st.data())
def test_property_raw_lengths_locate_every_chunk_in_the_text_pushed(
    samples: list[tuple[str, list[str]]], policy: ChunkPolicy, data: st.DataObject
) -> None:
    """A resume continues from "the text after the chunks spoken", counted in characters
    pushed: each chunk must end exactly there, across pushes, flushes and a barge-in."""
    chunker = SentenceChunker(policy)
    pushed, pos = "", 0
    for _text, pieces in samples:
        for piece in pieces:
            pushed += piece
            for chunk, raw in zip(chunker.push(piece), chunker.raw_lengths, strict=True):
                pos += raw
                assert pushed[pos - len(chunk) : pos] == chunk
                assert not pushed[pos - raw : pos - len(chunk)].strip()  # whitespace before
        if data.draw(st.booleans(), label="cancel instead of flush"):
            chunker.clear()
            pos = len(pushed)  # the journal's cancel: all text so far is done
        else:
            for chunk, raw in zip(chunker.flush(), chunker.raw_lengths, strict=True):
                pos += raw
                assert pushed[pos - len(chunk) : pos] == chunk
            assert not pushed[pos:].strip()  # a flush leaves only whitespace behind


@settings(max_examples=200, deadline=None)
@given(
    split_text(),
    st.sampled_from([NO_MERGE, ChunkPolicy(min_chars=0, first_max_chars=10, max_chars=20)]),
)
def test_property_chunks_independent_of_split_without_merging(
    sample: tuple[str, list[str]], policy: ChunkPolicy
) -> None:
    # nothing is ever returned that later text could change, so with merging off the chunks
    # are the same however the text was split
    text, pieces = sample
    reference = in_pieces([text], policy)
    assert in_pieces(pieces, policy) == reference
    assert by_char(text, policy) == reference


@settings(max_examples=200, deadline=None)
@given(ANY_TEXT, POLICIES)
def test_property_by_char_and_whole_give_same_text(text: str, policy: ChunkPolicy) -> None:
    pushed, flushed = whole(text, policy)
    chars = by_char(text, policy)
    check_chunks(pushed + flushed, policy)
    check_chunks(chars, policy)
    assert no_ws("".join(pushed + flushed)) == no_ws("".join(chars)) == no_ws(text)


@settings(max_examples=200, deadline=None)
@given(split_text(), POLICIES)
def test_property_buffer_stays_bounded(sample: tuple[str, list[str]], policy: ChunkPolicy) -> None:
    _, pieces = sample
    chunker = SentenceChunker(policy)
    seen = ""
    for piece in pieces:
        check_chunks(chunker.push(piece), policy)
        seen += piece
        trailing_ws = len(seen) - len(seen.rstrip())
        assert chunker.buffered_chars <= policy.max_chars + trailing_ws


def test_long_sentenceless_input_by_char_keeps_the_buffer_bounded() -> None:
    text = " ".join(["word"] * 2500) + "x" * 10_000
    chunker = SentenceChunker()
    chunks: list[str] = []
    for char in text:
        chunks += chunker.push(char)
        assert chunker.buffered_chars <= 401
    chunks += chunker.flush()
    assert no_ws("".join(chunks)) == no_ws(text)
    assert all(len(chunk) <= 400 for chunk in chunks)


# -- basics ----------------------------------------------------------------------------------


def test_sentences_and_flush() -> None:
    chunker = SentenceChunker()
    assert chunker.push("Hello there. How are you? I am fine.") == [
        "Hello there.",
        "How are you?",
    ]
    assert chunker.flush() == ["I am fine."]
    assert chunker.flush() == []


def test_pieces_ending_mid_word() -> None:
    chunker = SentenceChunker()
    assert chunker.push("Hel") == []
    assert chunker.push("lo the") == []
    assert chunker.push("re. Ho") == ["Hello there."]
    assert chunker.push("w are you?") == []
    assert chunker.flush() == ["How are you?"]


def test_whitespace_only_never_yields_a_chunk() -> None:
    chunker = SentenceChunker()
    assert chunker.push("   \n\n  \t") == []
    assert chunker.buffered_chars == 0
    assert chunker.flush() == []
    assert whole("") == ([], [])


def test_punctuation_alone_is_not_a_chunk_of_its_own() -> None:
    assert by_char("... Hello there. Bye.") == ["... Hello there.", "Bye."]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see example.", []),
        ("It costs 3.", []),
        ("Really?", []),
        ('He said "Stop."', []),
        ("Hello,", []),
        ("Line one\n", []),
        ("你好。", []),
        ("「你好。」", []),
    ],
)
def test_waits_while_the_end_could_still_change(text: str, expected: list[str]) -> None:
    chunker = SentenceChunker()
    assert chunker.push(text) == expected
    assert chunker.buffered_chars == len(text)
    assert chunker.flush() == [text.strip()]


def test_decimal_that_continues_after_a_wait() -> None:
    chunker = SentenceChunker()
    assert chunker.push("It costs 3.") == []
    assert chunker.push(" ") == []
    assert chunker.flush() == ["It costs 3."]
    assert chunker.push("It costs 3.") == []
    assert chunker.push("14 dollars. Next") == ["It costs 3.14 dollars."]
    assert chunker.push("") == []
    assert chunker.flush() == ["Next"]


def test_see_example_decided_by_the_next_character() -> None:
    chunker = SentenceChunker()
    assert chunker.push("Please see example.") == []
    assert chunker.push("com for more. ") == []
    assert chunker.push("T") == ["Please see example.com for more."]
    assert chunker.flush() == ["T"]


# -- sentence ends that are not -------------------------------------------------------------


@pytest.mark.parametrize(
    "expected",
    [
        ["Mr. Smith went home.", "He slept."],
        ["We met Mrs. Jones there.", "Then left."],
        ["Ask Ms. Lee about it.", "Then wait."],
        ["Call Dr. Brown today.", "Now go."],
        ["Ask Prof. Green now.", "Then go."],
        ["John Smith Sr. And his son.", "Then"],
        ["Sammy Davis Jr. Sang it.", "Then"],
        ["Walk down St. James Road.", "Then"],
        ["It was Ali vs. Frazier there.", "Then"],
        ["Use fruit e.g. Apples in it.", "Then"],
        ["The boss i.e. Anna decides.", "Then"],
        ["It took approx. Ten hours.", "Then"],
        ["He works for Acme Inc. Since May.", "Then"],
        ["Foo Ltd. Bought it today.", "Then"],
        ["Smith and Co. Sold it too.", "Then"],
        ["The U.S. Army came today.", "Then"],
        ["The U.K. Parliament met.", "Then"],
        ["We start at 9 a.m. Sharp every day.", "Then"],
        ["It ends at 5 p.m. Eastern time.", "Then"],
        ["He has a Ph.D. From Yale now.", "Then"],
        ["See No. 5 on the list.", "Then"],
        ["Look at Fig. 3 here.", "Then"],
        ["It was on Jan. First last year.", "Then"],
        ["On Sat. Morning we met.", "Then"],
        ["J. R. R. Tolkien wrote it.", "Then he slept."],
        ["The F.B.I. Agent came.", "Then"],
    ],
)
def test_abbreviations_do_not_end_sentences(expected: list[str]) -> None:
    text = " ".join(expected)
    assert by_char(text) == expected
    assert in_pieces([text]) == expected


def test_list_numbers_do_not_end_sentences() -> None:
    assert by_char("1. Open the box.\n2. Close it.") == ["1. Open the box.", "2. Close it."]
    assert by_char("Done. 2. Next step.") == ["Done.", "2. Next step."]


@pytest.mark.parametrize(
    "expected",
    [
        # "etc." before a capital ends the sentence (documented choice) ...
        ["Buy apples pears etc.", "Then go home."],
        # ... but not before a lower-case word
        ["Buy apples etc. and more.", "Then"],
        # "I" is not taken for an initial
        ["So did I.", "Then we left."],
        # numeric abbreviations only before a digit
        ["He said No.", "Then he left."],
        # capitalised-only entries do not match lower-case words
        ["The cat sat.", "Then it slept."],
        ["It costs 3.", "Then more."],
    ],
)
def test_words_that_look_like_abbreviations_but_end_sentences(expected: list[str]) -> None:
    text = " ".join(expected)
    assert by_char(text) == expected


def test_abbreviation_sets_are_public_and_consistent() -> None:
    assert "Mr." in ABBREVIATIONS
    assert "e.g." in ABBREVIATIONS
    assert "etc." not in ABBREVIATIONS
    assert "no." in NUMERIC_ABBREVIATIONS
    assert all(a.endswith(".") for a in ABBREVIATIONS | NUMERIC_ABBREVIATIONS)


@pytest.mark.parametrize(
    "expected",
    [
        ["Pi is 3.14 today.", "Then"],
        ["Update to v2.1 now.", "Version 1.2.3 works.", "Done."],
        ["Meet at 10:30 today.", "Then go."],
        ["Visit https://example.com/a.b?c=d now.", "Then go."],
        ["Go to www.example.org.", "Then rest."],
        ["Mail jane.doe@example.com today.", "Then wait."],
        ["Is it https://x.io/?q=1 here?", "Yes it is."],
    ],
)
def test_numbers_urls_and_emails(expected: list[str]) -> None:
    text = " ".join(expected)
    assert by_char(text) == expected


@pytest.mark.parametrize(
    "expected",
    [
        ["Wait... what?", "Yes."],
        ["Wait...", "What?", "Yes."],
        ["Hmm…", "Okay then."],
        ["Hmm… okay then.", "Bye."],
        ["Really?!", "Yes."],
    ],
)
def test_ellipses_and_punctuation_runs(expected: list[str]) -> None:
    text = " ".join(expected)
    assert by_char(text) == expected


@pytest.mark.parametrize(
    "expected",
    [
        ['He said "Stop."', "Then he left."],
        ["She said 'Go!'", "Then ran."],
        ["He wrote “Fine.”", "Then slept."],
        ['"Stop!" he said.', "Then he left."],
        ["(It works.)", "Then we go."],
        ["It ended.", '"Why?" she asked.'],
        ["Done.", "(Mostly.)", "Next."],
        ["It is **done.**", "Next."],
    ],
)
def test_quotes_and_brackets_stay_with_their_sentence(expected: list[str]) -> None:
    text = " ".join(expected)
    assert by_char(text) == expected


@pytest.mark.parametrize(
    "expected",
    [
        ["你好。", "我很好。"],
        ["真的吗？", "是的！", "好。"],
        ["他说：「你好。」", "然后走了。"],
        ["『好！』", "他说。"],
        ["等等……", "我来了。"],
        ["这是3.14。", "对吗？"],
    ],
)
def test_cjk_sentences(expected: list[str]) -> None:
    text = "".join(expected)
    assert by_char(text) == expected
    assert in_pieces([text], NO_MERGE) == expected


def test_cjk_after_latin() -> None:
    assert by_char("Hello. 你好。再见。") == ["Hello.", "你好。", "再见。"]


def test_cjk_closers_are_waited_for() -> None:
    chunker = SentenceChunker()
    assert chunker.push("「你好。") == []
    assert chunker.push("」") == []
    assert chunker.push("他") == ["「你好。」"]
    assert chunker.flush() == ["他"]


def test_blank_line_ends_a_sentence() -> None:
    chunker = SentenceChunker()
    assert chunker.push("A heading without a stop\n") == []
    assert chunker.push(" \n") == ["A heading without a stop"]
    assert chunker.push("next line\nand more") == []
    assert chunker.flush() == ["next line\nand more"]


# -- first chunk -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expected",
    [
        ["Well, I think that,", "in general, this works."],
        ["We sold 1,000 units,", "and more units, fine."],
        ["One two three four;", "five six."],
        ["Note that here is one:", "five six."],
        ["One two three four —", "five six."],
        ["One two three four –", "five six."],
        ["From 1990–2000 we had rain,", "sun and snow."],
        ["At 10:30 we all met up,", "then left."],
        ["Hi, there.", "Next one, two, three, four, five."],
    ],
)
def test_first_chunk_is_cut_at_a_clause_boundary(expected: list[str]) -> None:
    text = " ".join(expected)
    assert by_char(text) == expected
    assert in_pieces([text]) == expected


@pytest.mark.parametrize(
    "expected",
    [
        ["One two three four—", "five six."],
        ["我们今天去公园，", "然后回家。"],
    ],
)
def test_first_chunk_cut_without_a_following_space(expected: list[str]) -> None:
    text = "".join(expected)
    assert by_char(text) == expected
    assert in_pieces([text]) == expected


def test_first_chunk_clause_needs_first_min_words() -> None:
    policy = ChunkPolicy(first_min_words=2)
    assert by_char("Yes, of course, friend.", policy) == ["Yes, of course,", "friend."]
    assert by_char("Yes, of course, friend.") == ["Yes, of course, friend."]


def test_first_chunk_cut_at_first_max_chars_on_a_confirmed_word_boundary() -> None:
    policy = ChunkPolicy(first_max_chars=20)
    chunker = SentenceChunker(policy)
    assert chunker.push("aaaa bbbb cccc dddd") == []
    assert chunker.push(" ") == []  # 20 characters, nothing beyond the limit yet
    assert chunker.push("eeee") == ["aaaa bbbb cccc dddd"]
    assert chunker.push(" ffff gggg hhhh iiii jjjj kkkk") == []  # later chunks wait for an end
    assert chunker.flush() == ["eeee ffff gggg hhhh iiii jjjj kkkk"]


def test_first_max_chars_cut_does_not_split_a_word() -> None:
    policy = ChunkPolicy(first_max_chars=20)
    text = "aaaa bbbb cccc ddddddddd eeee."
    assert by_char(text, policy) == ["aaaa bbbb cccc", "ddddddddd eeee."]


def test_first_chunk_without_any_whitespace_waits_until_max_chars() -> None:
    policy = ChunkPolicy(first_max_chars=5, max_chars=12)
    chunker = SentenceChunker(policy)
    assert chunker.push("abcdefghij") == []
    assert chunker.push("klm") == ["abcdefghijkl"]
    assert chunker.flush() == ["m"]


def test_later_chunks_are_not_cut_at_clauses() -> None:
    text = "First one. Then, as said before, we go on and on."
    assert by_char(text) == ["First one.", "Then, as said before, we go on and on."]


def test_flush_resets_first_chunk_mode() -> None:
    chunker = SentenceChunker()
    assert chunker.push("One two three four, five. Six seven eight nine, ten. ") == [
        "One two three four,",
        "five.",
    ]
    assert chunker.flush() == ["Six seven eight nine, ten."]
    assert chunker.push("Six seven eight nine, ten.") == ["Six seven eight nine,"]
    assert chunker.flush() == ["ten."]


# -- growth and merging ----------------------------------------------------------------------


def test_short_sentences_merge_up_to_a_growing_target() -> None:
    policy = ChunkPolicy(min_chars=10, growth=2.0, max_target_chars=30)
    text = "Hi there. A b. C d. E f g h i j. K l m n o p q r s t u v. W x. Y z."
    # targets: 10, 20, 30 (capped); "Y z." is not confirmed yet, so "W x." is not held back
    assert whole(text, policy) == (
        ["Hi there.", "A b. C d. E f g h i j.", "K l m n o p q r s t u v.", "W x."],
        ["Y z."],
    )


def test_merging_never_waits_for_more_text() -> None:
    policy = ChunkPolicy(min_chars=10, growth=2.0, max_target_chars=30)
    text = "Hi there. A b. C d. E f g h i j. K l m n o p q r s t u v. W x. Y z."
    assert by_char(text, policy) == [
        "Hi there.",
        "A b.",
        "C d.",
        "E f g h i j.",
        "K l m n o p q r s t u v.",
        "W x.",
        "Y z.",
    ]


def test_default_targets() -> None:
    chunker = SentenceChunker()
    assert chunker.push("Hi. ") == []
    # second chunk: target 40, merged until it is at least that long
    assert chunker.push("One. Two. Three. Four. Five. Six. Seven. Eight.") == [
        "Hi.",
        "One. Two. Three. Four. Five. Six. Seven.",
    ]
    # third chunk: target 80; "Ten." cannot be added, its end is not confirmed yet
    assert chunker.push(" Nine. Ten.") == ["Eight. Nine."]
    assert chunker.push(" ") == []
    assert chunker.flush() == ["Ten."]


def test_merge_never_exceeds_max_chars() -> None:
    policy = ChunkPolicy(min_chars=100, first_max_chars=10, max_chars=20)
    assert whole("Ok. Aa bb. Cc dd. Ee ff gg hh. Ii.", policy) == (
        ["Ok.", "Aa bb. Cc dd.", "Ee ff gg hh."],
        ["Ii."],
    )


# -- over-long sentences ---------------------------------------------------------------------


def test_over_long_sentence_split_at_clause_then_word() -> None:
    text = "Ok. Aaaa bbbb, cccc dddd eeee ffff gggg."
    expected = ["Ok.", "Aaaa bbbb,", "cccc dddd eeee ffff", "gggg."]
    assert by_char(text, TINY) == expected
    assert whole(text, TINY) == (expected[:-1], expected[-1:])


def test_over_long_word_split_hard() -> None:
    text = "Ok. Aaaa bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb cc."
    expected = ["Ok.", "Aaaa", "b" * 20, "b" * 10 + " cc."]
    assert by_char(text, TINY) == expected


def test_over_long_text_is_split_in_push() -> None:
    chunker = SentenceChunker(TINY)
    assert chunker.push("Ok. " + "y" * 50) == ["Ok.", "y" * 20, "y" * 20]
    assert chunker.buffered_chars == 10
    assert chunker.flush() == ["y" * 10]


def test_over_long_split_with_default_policy() -> None:
    clause = "Word " + "word " * 59 + "and, "  # 304 characters up to the comma
    text = "Short one. " + clause + "word " * 40 + "end."
    chunks = by_char(text)
    assert chunks[:2] == ["Short one.", clause.rstrip()]
    assert all(len(chunk) <= 400 for chunk in chunks)
    assert no_ws("".join(chunks)) == no_ws(text)


# -- clear and buffered_chars -----------------------------------------------------------------


def test_clear_drops_buffered_text_and_resets_first_chunk_mode() -> None:
    chunker = SentenceChunker()
    assert chunker.push("First sentence here. Second one is half") == ["First sentence here."]
    assert chunker.buffered_chars == len("Second one is half")
    chunker.clear()
    assert chunker.buffered_chars == 0
    assert chunker.flush() == []
    chunker.clear()
    assert chunker.push("Six seven eight nine, ten.") == ["Six seven eight nine,"]


def test_buffered_chars_counts_text_not_yet_returned() -> None:
    chunker = SentenceChunker()
    assert chunker.buffered_chars == 0
    assert chunker.push("Hello. Wor") == ["Hello."]
    assert chunker.buffered_chars == 3
    assert chunker.push("ld ") == []
    assert chunker.buffered_chars == 6
    assert chunker.flush() == ["World"]
    assert chunker.buffered_chars == 0


# -- policy ------------------------------------------------------------------------------------


def test_policy_defaults() -> None:
    policy = ChunkPolicy()
    assert (policy.first_min_words, policy.first_max_chars) == (4, 120)
    assert (policy.min_chars, policy.growth, policy.max_target_chars) == (40, 2.0, 240)
    assert policy.max_chars == 400
    assert SentenceChunker().policy == policy


@pytest.mark.parametrize(
    "kwargs",
    [
        {"first_min_words": 0},
        {"max_chars": 0},
        {"first_max_chars": 401},
        {"first_max_chars": 0},
        {"min_chars": -1},
        {"growth": 0.5},
        {"growth": float("nan")},
    ],
)
def test_policy_rejects_invalid_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ChunkPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_decodes_with_msgspec() -> None:
    policy = msgspec.json.decode(b'{"max_chars": 100, "first_max_chars": 50}', type=ChunkPolicy)
    assert policy == ChunkPolicy(max_chars=100, first_max_chars=50)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"max_chars": 10}', type=ChunkPolicy)


# -- hurry: first chunks cut short while the engine is saturated -----------------------------

BURST = "Our meeting with the bank has moved to Thursday afternoon. "


def hurried(pieces: list[str], policy: ChunkPolicy | None = None) -> list[str]:
    return in_pieces(pieces, policy, hurry=True)


def test_hurry_cuts_a_known_first_sentence_after_five_words() -> None:
    assert in_pieces([BURST]) == [BURST.strip()]  # not hurried: the sentence whole
    assert hurried([BURST + "Then lunch."]) == [
        "Our meeting with the bank",
        "has moved to Thursday afternoon.",
        "Then lunch.",
    ]
    # at a flush, the end of the text is the known end
    assert hurried(["Our meeting with the bank has moved to Thursday"]) == [
        "Our meeting with the bank",
        "has moved to Thursday",
    ]


def test_hurry_leaves_no_short_tail_and_waits_for_the_end() -> None:
    # Two words would be left alone after the cut: the sentence stays whole.
    assert hurried(["Our meeting with the bank moved today. "]) == [
        "Our meeting with the bank moved today."
    ]
    # The sentence still arriving: nothing is cut before its end is known.
    chunker = SentenceChunker()
    chunker.hurry = True
    assert chunker.push("Our meeting with the bank has moved to") == []
    assert chunker.push(" Thursday afternoon. And") == [
        "Our meeting with the bank",
        "has moved to Thursday afternoon.",
    ]


def test_hurry_cuts_only_first_chunks_and_can_be_turned_off() -> None:
    text = "Fine. " + BURST + "Then lunch."
    assert hurried([text]) == ["Fine.", BURST.strip(), "Then lunch."]
    assert hurried([BURST + "Then"], ChunkPolicy(hurry_words=0))[0] == BURST.strip()
