"""Numbers, currency, percentages, dates, times, ordinals, units and abbreviations written
out as words, for engines that read text as written (sans-I/O).

``verbalize(text, language)`` returns a ``Verbalized``: the spoken form and its span map
(server/text/spans.py), so word spans of what the engine said map back to what the client
wrote. One scan finds runs of digits and separators ("$12.50", "3/4/2025", "15:45"),
phone numbers and abbreviations; the words around a run decide what it is (a currency
sign, "%", a unit, "on" before a date, "in" before a year). The rules, per language, and
their limits are in docs/normalization.md.

Never raises. Time is linear in the text (every pattern is bounded or anchored; a run is
read once) and the spoken form is at most ``MAX_GROWTH`` times the text plus
``MAX_EXTRA`` characters: a replacement that would pass that bound is left as written.
"""

from __future__ import annotations

import functools
import re
from typing import Final

from server.text import readings as rd
from server.text.amounts import amount
from server.text.context import (
    ALL,
    FR_HOUR_AFTER,
    SENTENCE_AFTER,
    Category,
    Ctx,
    Say,
    ampm_after,
    glued,
    is_year,
    prev_word,
    touches,
)
from server.text.lexicon import GENERIC, LEXICONS, Lexicon
from server.text.numerals import integer, language_code, year
from server.text.spans import Builder, Verbalized

__all__ = ["ALL", "MAX_EXTRA", "MAX_GROWTH", "PIPER", "Category", "for_piper", "verbalize"]

# What espeak-ng (Piper's front end) reads wrongly in English, measured with the bundled
# voice (docs/normalization.md): "$12.50" as "dollar twelve point five zero", "3/4/2025"
# with "slash", "5 km/h" as letters, "Dr." as a sentence end. It reads the others well.
PIPER: Final[frozenset[Category]] = frozenset(
    {"currency", "date", "year", "phone", "unit", "fraction", "range", "ratio", "abbreviation"}
)
MAX_GROWTH: Final = 12
MAX_EXTRA: Final = 64

_RUN: Final = r"[0-9]+(?:[.,:/-][0-9]+)*"
_RUN_SPACED: Final = r"[0-9]+(?:(?:[.,:/-]| (?=[0-9]{3}(?![0-9])))[0-9]+)*"
_PHONE: Final = r"(?:\+[0-9]{1,3}|\([0-9]{1,4}\))(?:[ .-]?[0-9]{1,4}){2,5}(?![0-9])"
_ALNUM_AFTER: Final = re.compile(r"[A-Za-z]+[0-9]")


def verbalize(text: str, language: str | None, categories: frozenset[Category] = ALL) -> Verbalized:
    """``text`` with what ``categories`` name written out in ``language`` (a BCP 47 tag or
    locale; a language num2words does not read, or None, leaves the text as it is)."""
    try:
        return _verbalize(text, language, categories)
    except Exception:  # a bug must never cost the chunk its audio
        return Verbalized.same(text)


def for_piper(text: str, language: str | None) -> Verbalized:
    """What Piper should be given: only what espeak-ng reads wrongly (``PIPER``), in English
    (the only language measured); other languages unchanged."""
    if (language_code(language) or "").split("_")[0] != "en":
        return Verbalized.same(text)
    return verbalize(text, language, PIPER)


def _verbalize(text: str, language: str | None, cats: frozenset[Category]) -> Verbalized:
    code = language_code(language)
    if code is None or not text or not cats:
        return Verbalized.same(text)
    lex = LEXICONS.get(code.split("_")[0], GENERIC)
    scanner = _scanner(lex.lang)
    out = Builder(text, MAX_GROWTH * len(text) + MAX_EXTRA)
    pos = 0
    while (m := scanner.search(text, pos)) is not None:
        ctx = Ctx(text, lex, code, cats, out.consumed)
        say = _read(m, ctx)
        if say is not None and say.category in cats and out.replace(*say[:3]):
            pos = max(say.end, m.end())
        else:  # as written; a phone-shaped match that was none may hold numbers
            pos = m.start() + 1 if m.lastgroup == "phone" else m.end()
    return out.done()


@functools.cache
def _abbreviations(lang: str) -> dict[str, str]:
    """The language's abbreviations, with capitalised forms of those written in lower case
    ("E.g." says "For example"); English "St." and "No." have rules of their own."""
    table = dict(LEXICONS[lang].abbreviations) if lang in LEXICONS else {}
    for key, words in list(table.items()):
        if key[:1].islower():
            table.setdefault(key[:1].upper() + key[1:], words[:1].upper() + words[1:])
    if lang == "en":
        table |= {"St.": "", "No.": ""}
    return table


@functools.cache
def _scanner(lang: str) -> re.Pattern[str]:
    """One pattern for a language: a phone number's shape, a run of digits and separators,
    an abbreviation. Every branch is bounded or consumes a run whole (linear time)."""
    lex = LEXICONS.get(lang, GENERIC)
    alts = [rf"(?P<phone>{_PHONE})" if lex.point else "", "(?P<num>"]
    alts[1] += (_RUN_SPACED if lex.space_groups else _RUN) + ")"
    keys = sorted(_abbreviations(lang), key=len, reverse=True)
    if keys:
        alts.append("(?P<abbr>(?<![\\w.])(?:" + "|".join(map(re.escape, keys)) + ")(?!\\w))")
    return re.compile("|".join(a for a in alts if a))


def _read(m: re.Match[str], ctx: Ctx) -> Say | None:
    kind = m.lastgroup
    if kind == "abbr":
        return _abbreviation(m, ctx)
    if kind == "phone":
        runs = re.findall(r"[0-9]+", m.group())
        words = rd.say_phone(runs, [], ctx.code, shaped=True)
        return Say(m.start(), m.end(), words, "phone") if words else None
    return _number(m.start(), m.end(), ctx)


def _abbreviation(m: re.Match[str], ctx: Ctx) -> Say | None:
    key, text, end = m.group(), ctx.text, m.end()
    words = _abbreviations(ctx.lex.lang)[key]
    if key == "No.":
        if not re.match(r" ?[0-9]", text[end : end + 2]):
            return None
        words = "number"
    elif key == "St.":
        words = _saint_or_street(text, m.start(), end)
    elif key.endswith(".") and not text[end:].strip():
        words += "."  # the text ends here: its dot ended the last sentence too
    elif key in ctx.lex.sentence_end_abbreviations and SENTENCE_AFTER.match(text, end):
        words += "."
    return Say(m.start(), end, words, "abbreviation")


def _saint_or_street(text: str, start: int, end: int) -> str:
    """ "St. Louis" is Saint (a capitalised name follows), "Main St." and "5th St. North"
    are Street (nothing capitalised follows, or a number or ordinal comes before)."""
    before = text[max(0, start - 8) : start]
    after_name = re.match(r" [A-Z]", text[end : end + 2]) is not None
    after_number = re.search(r"[0-9](?:st|nd|rd|th)? $", before) is not None
    if after_name and not after_number:
        return "Saint"
    return "Street." if SENTENCE_AFTER.match(text, end) and not after_name else "Street"


def _number(s: int, e: int, ctx: Ctx) -> Say | None:
    text = ctx.text
    if (s > 0 and glued(text[s - 1])) or _identifier_after(text, e, ctx.lex):
        return None  # part of an identifier
    run = text[s:e]
    if len(run) > rd.MAX_RUN:
        return _pieces(s, e, ctx)
    runs, seps = rd.split_run(run)
    say = _structure(s, e, runs, seps, ctx) if seps else None
    if say is None:
        parsed = rd.parse_amount(runs, seps, ctx.lex)
        if parsed is None:
            return _pieces(s, e, ctx) if ctx.lex.point else None
        say = amount(s, e, parsed, ctx)
    return _spaced(say, ctx) if say is not None else None


def _identifier_after(text: str, e: int, lex: Lexicon) -> bool:
    """Letters then a digit follow ("3f2a9c"), other than French "15h30"."""
    if _ALNUM_AFTER.match(text, e) is None:
        return False
    return not (lex.lang == "fr" and FR_HOUR_AFTER.match(text, e))


def _spaced(say: Say, ctx: Ctx) -> Say:
    """Words never run into letters around them: "5x" says "five x"."""
    if ctx.lex.joiner != " ":
        return say
    words, text = say.words, ctx.text
    if say.end < len(text) and touches(text[say.end]):
        words += " "
    if say.start > 0 and touches(text[say.start - 1]):
        words = " " + words
    return say._replace(words=words)


def _pieces(s: int, e: int, ctx: Ctx) -> Say:
    """A run that is none of the shapes below: each group of digits on its own ("1.2.3"
    says "one point two point three"), separators kept."""
    runs, seps = rd.split_run(ctx.text[s:e])
    out = [integer(runs[0], ctx.code)]
    for sep, r in zip(seps, runs[1:], strict=True):
        word = f" {ctx.lex.point} " if sep == "." else sep if sep != "," else ", "
        out.append((word.strip() if not ctx.lex.joiner else word) + integer(r, ctx.code))
    return Say(s, e, "".join(out), "number")


def _structure(s: int, e: int, runs: list[str], seps: list[str], ctx: Ctx) -> Say | None:
    """A time, date, fraction, range, ratio or phone number, else None."""
    lex, code = ctx.lex, ctx.code
    hm = rd.clock(runs, seps)
    if hm is not None:
        return _time(s, e, hm, ctx)
    prev = prev_word(ctx.text, s)
    if seps == ["/"] and prev not in lex.date_cues and max(map(len, runs)) <= 3:
        words = rd.say_fraction(int(runs[0]), int(runs[1]), lex, code)
        if words is not None:
            return Say(s, e, words, "fraction")
    if seps != ["."] or prev in lex.date_cues:
        date = rd.calendar(runs, seps, lex)
        if date is not None:
            words = rd.say_date(*date, lex, code, prev)
            return _date_dot(Say(s, e, words, "date"), seps, ctx) if words else None
    phone = rd.say_phone(runs, seps, code) if set(seps) <= {"-", "."} else None
    if phone is not None:
        return Say(s, e, phone, "phone")
    if len(runs) == 2 and seps[0] in "-:" and max(map(len, runs)) <= 4 and lex.to:
        words = _span_words(runs, seps[0], ctx)
        return Say(s, e, words, "range" if seps[0] == "-" else "ratio")
    return None


def _date_dot(say: Say, seps: list[str], ctx: Ctx) -> Say:
    """ "am 3.4. treffen": the dot after a day and month is the date's, not a sentence end
    (unless the text ends there)."""
    text, e = ctx.text, say.end
    if seps != ["."] or not text.startswith(".", e):
        return say
    return say._replace(end=e + 1, words=say.words + ("." if not text[e + 1 :].strip() else ""))


def _span_words(runs: list[str], sep: str, ctx: Ctx) -> str:
    """ "3-5" says "three to five", "1990-1995" two years, "3:1" "three to one"."""
    lex, code = ctx.lex, ctx.code
    years = sep == "-" and lex.lang in ("en", "de") and all(is_year(r) for r in runs)
    a, b = (year(int(r), code) if years else integer(r, code) for r in runs)
    word = lex.to if sep == "-" else lex.ratio
    return lex.joiner.join((a, word, b))


def _time(s: int, e: int, hm: tuple[int, int], ctx: Ctx) -> Say | None:
    ampm, end = ampm_after(e, ctx)
    words = rd.say_time(*hm, ampm, ctx.lex, ctx.code)
    return Say(s, end, words, "time") if words else None
