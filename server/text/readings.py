"""What a run of digits and separators says, in one language (sans-I/O): amounts, times,
dates, fractions, ranges, ratios and phone numbers, and how each is said.

verbalize.py finds the runs ("12.50", "3:30", "2024-03-05", "555-123-4567") and the words
around them; this module reads them. Every function gets bounded input (a run of at most
``MAX_RUN`` characters) and returns the words, or None when the run is not what it looks
for; lookups into num2words may raise for a language it cannot do (the caller then leaves
the run as written).
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from server.text.lexicon import Lexicon, Money, Noun
from server.text.numerals import (
    MAX_CARDINAL_DIGITS,
    cardinal,
    counted,
    digits,
    integer,
    ordinal,
    year,
)

__all__ = [
    "MAX_RUN",
    "Amount",
    "calendar",
    "clock",
    "parse_amount",
    "say_amount",
    "say_date",
    "say_fraction",
    "say_measure",
    "say_money",
    "say_phone",
    "say_time",
    "split_run",
]

# A run of digits and separators longer than this is read piece by piece (fallback).
MAX_RUN: Final = 64
_SEP_RE: Final = re.compile(r"([.,:/\- ])")
_DAYS_IN_MONTH: Final = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# German ordinals inflect after these words: "am dritten März", "der dritte Platz".
_DE_WEAK_AFTER: Final = frozenset(
    ["am", "vom", "zum", "dem", "den", "im", "beim", "des", "seit", "ab"]
)
_DE_ARTICLES: Final = frozenset(["der", "die", "das"])
_DAY_ONE: Final = {"es": "primero", "fr": "premier", "it": "primo", "pt": "primeiro"}


class Amount(msgspec.Struct, frozen=True):
    """A number as written: the digits of its whole part, of its fraction (None: an
    integer), and whether thousands separators grouped it."""

    whole: str
    frac: str | None = None
    grouped: bool = False

    @property
    def one(self) -> bool:
        return self.frac is None and self.whole.lstrip("0") == "1"


def split_run(run: str) -> tuple[list[str], list[str]]:
    """ "2024-03-05" -> (["2024", "03", "05"], ["-", "-"])."""
    parts = _SEP_RE.split(run)
    return parts[0::2], parts[1::2]


# ---------------------------------------------------------------- amounts


def parse_amount(runs: list[str], seps: list[str], lex: Lexicon) -> Amount | None:
    """An integer or decimal by the language's separators: "1,234.5" in English,
    "1.234,5" in German, "1 234,5" in French; a lone "." before other than three digits is
    a decimal point everywhere ("1.5" in German text)."""
    if not seps:
        return Amount(runs[0])
    if not lex.point:
        return None
    dec = "," if lex.decimal_comma else "."
    groups = (".", " ") if lex.space_groups else (".",) if lex.decimal_comma else (",",)
    frac: str | None = None
    if seps[-1] == dec:
        frac, runs, seps = runs[-1], runs[:-1], seps[:-1]
    elif lex.decimal_comma and seps == ["."] and len(runs[1]) != 3:
        return Amount(runs[0], runs[1])
    if not seps:
        return Amount(runs[0], frac)
    grouped = (
        len(set(seps)) == 1
        and seps[0] in groups
        and 1 <= len(runs[0]) <= 3
        and all(len(r) == 3 for r in runs[1:])
    )
    return Amount("".join(runs), frac, True) if grouped else None


def say_amount(a: Amount, lex: Lexicon, code: str) -> str:
    words = integer(a.whole, code, a.grouped)
    if a.frac is None:
        return words
    j = lex.joiner
    return j.join((words, lex.point, digits(a.frac, code)))


def _count(a: Amount, noun: Noun, lex: Lexicon, code: str) -> str:
    """An amount of ``noun``: "one kilometer", "eine Stunde", "1.5 kilometers"."""
    if lex.lang == "zh":
        return say_amount(a, lex, code) + noun.many
    if a.frac is None and len(a.whole) <= MAX_CARDINAL_DIGITS and a.whole[:1] != "0":
        n = int(a.whole)
        return counted(n, code, noun.gender, noun.one if n == 1 else noun.many)
    singular = lex.lang == "fr" and a.whole.lstrip("0") in ("", "1")  # "1,5 kilomètre"
    return f"{say_amount(a, lex, code)} {noun.one if singular else noun.many}"


def say_measure(a: Amount, noun: Noun, lex: Lexicon, code: str) -> str:
    return _count(a, noun, lex, code)


def _cents(frac: str) -> int | None:
    return int(frac.ljust(2, "0")) if 1 <= len(frac) <= 2 else None


def _zh_money(a: Amount, code_: str, lex: Lexicon, code: str) -> str:
    name = lex.money[code_].unit.many
    cents = _cents(a.frac) if a.frac is not None else None
    if code_ != "CNY" or cents is None:
        return say_amount(a, lex, code) + name
    whole = cardinal(int(a.whole), code) + "元" if int(a.whole) or not cents else ""
    jiao, fen = divmod(cents, 10)
    out = whole + (cardinal(jiao, code) + "角" if jiao else "")
    if fen:
        out += ("零" if whole and not jiao else "") + cardinal(fen, code) + "分"
    return out


def say_money(a: Amount, currency: str, lex: Lexicon, code: str, scale: str = "") -> str | None:
    """An amount of ``currency`` (an ISO code): "twelve dollars and fifty cents", "fünf
    Euro", "five million dollars" (``scale``: the word after the amount)."""
    money: Money | None = lex.money.get(currency)
    if money is None or len(a.whole) > MAX_CARDINAL_DIGITS:
        return None
    if lex.lang == "zh":
        return _zh_money(a, currency, lex, code)
    if scale:
        return f"{say_amount(a, lex, code)} {scale} {money.unit.many}"
    cents = _cents(a.frac) if a.frac is not None else None
    if a.frac is None or money.cents is None or cents is None:
        return _count(Amount(a.whole.lstrip("0") or "0", a.frac), money.unit, lex, code)
    parts = []
    if int(a.whole) or not cents:
        parts.append(_count(Amount(str(int(a.whole))), money.unit, lex, code))
    if cents:
        parts.append(_count(Amount(str(cents)), money.cents, lex, code))
    return f" {lex.and_cents} ".join(parts)


# ---------------------------------------------------------------- times


def clock(runs: list[str], seps: list[str]) -> tuple[int, int] | None:
    """Hours and minutes of "3:30" or "15:45"."""
    if seps != [":"] or not 1 <= len(runs[0]) <= 2 or len(runs[1]) != 2:
        return None
    h, m = int(runs[0]), int(runs[1])
    if h > 24 or m > 59 or (h == 24 and m):
        return None
    return h, m


def _en_time(h: int, m: int, ampm: str) -> str:
    hh = cardinal(h % 12 or 12, "en") if ampm else cardinal(h, "en")
    if m == 0:
        words = hh if ampm else f"{hh} o'clock" if 1 <= h <= 12 else f"{hh} hundred"
    elif m < 10:
        words = f"{hh} oh {cardinal(m, 'en')}"
    else:
        words = f"{hh} {cardinal(m, 'en')}"
    return f"{words} {ampm}" if ampm else words


def say_time(h: int, m: int, ampm: str, lex: Lexicon, code: str) -> str | None:
    """A time of day: "three thirty PM", "fünfzehn Uhr fünfundvierzig", "十五点四十五分"
    (``ampm``: "AM", "PM" or "" for a 24-hour time)."""
    if ampm and not 1 <= h <= 12:
        return None
    lang = lex.lang
    mm = cardinal(m, code) if m else ""
    if lang == "en":
        return _en_time(h, m, ampm)
    if ampm:
        return None
    if lang == "de":
        hh = "ein" if h == 1 else cardinal(h, code)
        return f"{hh} Uhr {mm}".strip()
    if lang == "zh":
        hh = "两" if h == 2 else cardinal(h, code)
        return f"{hh}点" + ("" if not m else f"零{mm}分" if m < 10 else f"{mm}分")
    return _romance_time(h, m, lang, code)


def _romance_time(h: int, m: int, lang: str, code: str) -> str | None:
    hh = counted(h, code, "f")
    mm = cardinal(m, code)
    if lang == "es":
        return f"{hh} y {mm}" if m else f"{hh} en punto"
    if lang == "fr":
        hours = f"{hh} {'heure' if h < 2 else 'heures'}"
        return f"{hours} {counted(m, code, 'f')}" if m else hours
    if lang == "it":
        hh = "una" if h == 1 else cardinal(h, code)
        return f"{hh} e {mm}" if m else hh
    if lang == "pt":
        return f"{hh} e {mm}" if m else f"{hh} {'hora' if h == 1 else 'horas'}"
    return None


# ---------------------------------------------------------------- dates


def _valid(month: int, day: int) -> bool:
    return 1 <= month <= 12 and 1 <= day <= _DAYS_IN_MONTH[month - 1]


def _year_of(run: str) -> int:
    y = int(run)
    if len(run) == 2:
        return 2000 + y if y < 50 else 1900 + y
    return y


def calendar(runs: list[str], seps: list[str], lex: Lexicon) -> tuple[int | None, int, int] | None:
    """(year or None, month, day) of "2024-03-05", "2024/3/5", "3/4/2025" (English:
    month first; others: day first), "05.03.2024" (not in English), "3/4" and "3.4"."""
    if len(set(seps)) != 1 or len(runs) not in (2, 3) or (not lex.months and lex.lang != "zh"):
        return None
    sep = seps[0]
    if sep not in "/-." or (sep == "." and lex.lang == "en"):
        return None
    if len(runs) == 3 and len(runs[0]) == 4:  # year first: ISO and East Asian order
        return _year_first(runs)
    return _day_and_month(runs, sep, lex)


def _year_first(runs: list[str]) -> tuple[int | None, int, int] | None:
    y, mo, d = int(runs[0]), int(runs[1]), int(runs[2])
    ok = len(runs[1]) <= 2 and len(runs[2]) <= 2 and _valid(mo, d)
    return (y, mo, d) if ok else None


def _day_and_month(runs: list[str], sep: str, lex: Lexicon) -> tuple[int | None, int, int] | None:
    if any(not 1 <= len(r) <= 2 for r in runs[:2]):
        return None
    if (len(runs) == 3 and len(runs[2]) not in (2, 4)) or (sep == "-" and len(runs) == 2):
        return None  # "3-4" is a range
    a, b = int(runs[0]), int(runs[1])
    mo, d = (a, b) if lex.lang in ("en", "zh") else (b, a)
    if not _valid(mo, d):
        return None
    return (_year_of(runs[2]) if len(runs) == 3 else None), mo, d


def de_ordinal(n: int, prev: str) -> str:
    """A German ordinal as it follows ``prev`` ("am dritten", "der dritte", "dritter")."""
    base = ordinal(n, "de")
    if prev in _DE_WEAK_AFTER:
        return base + "n"
    return base if prev in _DE_ARTICLES else base + "r"


def say_date(y: int | None, mo: int, d: int, lex: Lexicon, code: str, prev: str) -> str | None:
    """A date: "March fifth, twenty twenty-five", "am fünften März", "5 de marzo de ..."."""
    lang = lex.lang
    if lang == "zh":
        head = f"{year(y, code)}年" if y is not None else ""
        return f"{head}{cardinal(mo, code)}月{cardinal(d, code)}日"
    if not lex.months:
        return None
    month = lex.months[mo - 1]
    yy = year(y, code) if y is not None else ""
    if lang == "en":
        return f"{month} {ordinal(d, code)}" + (f", {yy}" if yy else "")
    if lang == "de":
        return f"{de_ordinal(d, prev)} {month} {yy}".strip()
    day = _DAY_ONE[lang] if d == 1 else cardinal(d, code)
    if lang in ("es", "pt"):
        return f"{day} de {month}" + (f" de {yy}" if yy else "")
    return f"{day} {month} {yy}".strip()


# ---------------------------------------------------------------- the rest


def say_fraction(a: int, b: int, lex: Lexicon, code: str) -> str | None:
    """A proper fraction with a small denominator: "three quarters", "drei Viertel"."""
    if not 1 <= a < b:
        return None
    if lex.lang == "zh":
        return f"{cardinal(b, code)}分之{cardinal(a, code)}" if b <= 100 else None
    noun = lex.fractions.get(b)
    if noun is None:
        return None
    return counted(a, code, noun.gender, noun.one if a == 1 else noun.many)


def say_phone(runs: list[str], seps: list[str], code: str, shaped: bool = False) -> str | None:
    """Groups of digits joined by one kind of dash or dot, read digit by digit: "555-1234",
    "555-123-4567" (seven digits at least); ``shaped``: the scanner saw a phone number's
    shape already ("+1 555 123 4567", "(555) 123-4567")."""
    if len(set(seps)) > 1 or sum(map(len, runs)) < 7:
        return None
    lengths = [len(r) for r in runs]
    if (
        not shaped
        and lengths != [3, 4]
        and not (len(runs) >= 3 and 2 <= min(lengths) <= max(lengths) <= 4)
    ):
        return None
    sep = " " if code == "zh" else ", "
    return sep.join(digits(r, code) for r in runs)
