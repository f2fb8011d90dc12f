"""What a language's table of words holds (``Lexicon``), and the parsers of the text tables
lexicon.py and lexicon_romance.py are written in (sans-I/O). The tables are text, one
entry a line: ``key = one | many | gender`` (gender "m" when left out; neuter
nouns count as "m": "ein Kilogramm"), money ``code = unit ... ; cents ...``.
"""

from __future__ import annotations

from typing import Final

import msgspec

__all__ = ["ALIASES", "Lexicon", "Money", "Noun", "fractions", "money", "months", "noun"]
__all__ += ["table", "units", "words"]


class Noun(msgspec.Struct, frozen=True, array_like=True):
    one: str
    many: str
    gender: str = "m"  # "m" or "f"


class Money(msgspec.Struct, frozen=True, array_like=True):
    unit: Noun
    cents: Noun | None = None  # None: no subunit is said (yen)


class Lexicon(msgspec.Struct, frozen=True, kw_only=True):
    lang: str
    decimal_comma: bool = False  # "1.234,5" (else "1,234.5")
    space_groups: bool = False  # "10 000" is ten thousand
    joiner: str = " "  # between words ("" in Chinese)
    minus: str = ""
    plus: str = ""
    point: str = ""  # the decimal point; "" for a language without a lexicon
    to: str = ""  # a range: "3-5"
    ratio: str = ""  # a ratio or score: "3:1"
    percent: str = ""
    and_cents: str = ""
    months: tuple[str, ...] = ()
    money: dict[str, Money] = {}
    units: dict[str, Noun] = {}
    fractions: dict[int, Noun] = {}  # by denominator
    abbreviations: dict[str, str] = {}
    sentence_end_abbreviations: frozenset[str] = frozenset()  # may end a sentence ("etc.")
    year_cues: frozenset[str] = frozenset()
    date_cues: frozenset[str] = frozenset()
    ordinal_suffixes: tuple[str, ...] = ()  # written after an ordinal's digits


def words(text: str) -> frozenset[str]:
    return frozenset(text.split())


def months(text: str) -> tuple[str, ...]:
    names = tuple(text.split())
    assert len(names) == 12
    return names


def noun(spec: str) -> Noun:
    """ "one | many | gender", or a word that does not change ("公里")."""
    one, *rest = (p.strip() for p in spec.split("|"))
    many = rest[0] if rest else one
    return Noun(one, many, rest[1] if len(rest) > 1 else "m")


def table(text: str) -> dict[str, str]:
    """``key = value`` lines (the key may hold spaces: "° C")."""
    out: dict[str, str] = {}
    for line in text.strip().splitlines():
        key, _, value = line.partition(" = ")
        out[key.strip()] = value.strip()
    return out


ALIASES: Final = table("""
kmh = km/h
kph = km/h
° C = °C
° F = °F
kB = KB
L = l
mL = ml
sec = s
secs = s
hr = h
hrs = h
mins = min
lbs = lb
""")


def units(text: str) -> dict[str, Noun]:
    units = {k: noun(v) for k, v in table(text).items()}
    return units | {a: units[k] for a, k in ALIASES.items() if k in units}


def money(text: str) -> dict[str, Money]:
    out: dict[str, Money] = {}
    for code, spec in table(text).items():
        unit, _, cents = spec.partition(";")
        out[code] = Money(noun(unit), noun(cents) if cents else None)
    return out


def fractions(text: str) -> dict[int, Noun]:
    return {int(k): noun(v) for k, v in table(text).items()}
