"""What is written around a run of digits, and what verbalize.py and amounts.py share
(sans-I/O): a reading (``Say``), the scan's state (``Ctx``), the categories of reading."""

from __future__ import annotations

import re
from typing import Final, Literal, NamedTuple, get_args

from server.text.lexicon import Lexicon

__all__ = ["ALL", "AMPM_AFTER", "FR_HOUR_AFTER", "SENTENCE_AFTER", "Category", "Ctx", "Say"]
__all__ += ["ampm_after", "glued", "is_year", "prev_word", "touches"]

Category = Literal[
    "number", "ordinal", "currency", "percent", "time", "date", "year", "phone", "unit",
    "fraction", "range", "ratio", "abbreviation",
]  # fmt: skip
ALL: Final[frozenset[Category]] = frozenset(get_args(Category))

PREV_WORD: Final = re.compile(r"([^\W\d_]+)[ ]*[(\[\"'“‘]?[ ]*$")
AMPM_AFTER: Final = re.compile(r" ?([aApP])\.? ?[mM](\.?)(?!\w)")
SENTENCE_AFTER: Final = re.compile(r"\s*$|\s+[\"'“‘(]?[A-ZÀ-ÖØ-Þ]")
FR_HOUR_AFTER: Final = re.compile(r"h([0-5][0-9])?(?!\w)")


class Say(NamedTuple):
    start: int  # the source span said
    end: int
    words: str
    category: Category


class Ctx(NamedTuple):
    text: str
    lex: Lexicon
    code: str
    cats: frozenset[Category]
    floor: int  # source already consumed: no prefix reaches back before it


def glued(ch: str) -> bool:
    """A letter of an alphabet written with spaces, or "_": "A320", "mp3", "x_2"."""
    return ch == "_" or (ch.isalpha() and ord(ch) < 0x2E80)


def touches(ch: str) -> bool:
    return ch.isdigit() or glued(ch)


def prev_word(text: str, at: int) -> str:
    """The word written before ``at`` (lower case), "" if none: what a number follows."""
    m = PREV_WORD.search(text[max(0, at - 32) : at])
    return m.group(1).lower() if m else ""


def ampm_after(e: int, ctx: Ctx) -> tuple[str, int]:
    """ "AM" or "PM" written after ``e`` in English (and where it ends), else ("", e)."""
    m = AMPM_AFTER.match(ctx.text, e) if ctx.lex.lang == "en" else None
    if m is None:
        return "", e
    words = "AM" if m.group(1) in "aA" else "PM"
    if m.group(2) and SENTENCE_AFTER.match(ctx.text, m.end()):
        words += "."  # "at 5 p.m. Then": the dot also ended the sentence
    return words, m.end()


def is_year(run: str) -> bool:
    return len(run) == 4 and 1000 <= int(run) <= 2099
