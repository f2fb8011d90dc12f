"""Numbers as words in one language (sans-I/O): num2words for the languages it has, Chinese
numerals here (num2words 0.5.14 has none).

Every function takes digit strings or small ints that the caller bounded (at most
``MAX_CARDINAL_DIGITS`` digits for a number read whole), so each call costs microseconds;
num2words results are cached. Functions may raise on a language num2words cannot do: the
caller then leaves that number as written.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

import num2words as _n2w

__all__ = [
    "MAX_CARDINAL_DIGITS",
    "MAX_PLAIN_DIGITS",
    "cardinal",
    "counted",
    "digits",
    "integer",
    "language_code",
    "ordinal",
    "year",
]

# A number read whole has at most this many digits (hundreds of trillions); one written
# with thousands separators may have this many.
MAX_CARDINAL_DIGITS: Final = 15
# A number written without separators is read whole up to this many digits (below ten
# billion); a longer one is an identifier, an account or a phone number: digit by digit.
MAX_PLAIN_DIGITS: Final = 9

_CONVERTERS: Final = frozenset(_n2w.CONVERTER_CLASSES)
_ZH_DIGITS: Final = "零一二三四五六七八九"
_ZH_SMALL: Final = ("", "十", "百", "千")
_ZH_BIG: Final = ("", "万", "亿", "万亿")
_SPACES: Final = re.compile(r"\s+")


def language_code(language: str | None) -> str | None:
    """The code numbers are read in for a BCP 47 tag or locale ("pt-BR" -> "pt_BR",
    "de_AT" -> "de", "zh-Hans" -> "zh"); None when neither num2words nor this module reads
    that language."""
    if not language:
        return None
    parts = language.replace("-", "_").split("_")
    base = parts[0].lower()
    if base == "zh":
        return "zh"
    if len(parts) > 1:
        regional = f"{base}_{parts[1].upper()}"
        if regional in _CONVERTERS:
            return regional
    return base if base in _CONVERTERS else None


def _tidy(words: str) -> str:
    # num2words writes "one thousand, two hundred": a comma there is a pause in speech.
    return _SPACES.sub(" ", words.replace(",", " ")).strip()


def _zh_group(n: int) -> str:
    """0 < n < 10000 in Chinese numerals, a zero said once for a gap ("一千零五")."""
    out: list[str] = []
    zero = False
    for k in range(3, -1, -1):
        d = n // 10**k % 10
        if d == 0:
            zero = bool(out)
            continue
        if zero:
            out.append("零")
            zero = False
        out.append(_ZH_DIGITS[d] + _ZH_SMALL[k])
    return "".join(out)


def zh_cardinal(n: int) -> str:
    """A non-negative integer below 10^16 in Chinese numerals: groups of four digits with
    万 and 亿, 零 for a gap, 十 for 10-19 at the start ("十二", "一百一十二")."""
    if n == 0:
        return "零"
    groups: list[int] = []
    while n:
        groups.append(n % 10000)
        n //= 10000
    out: list[str] = []
    for k in range(len(groups) - 1, -1, -1):
        g = groups[k]
        if g == 0:
            continue
        if out and (groups[k + 1] == 0 or g < 1000):
            out.append("零")  # a gap before this group ("一万零五", "一亿零一万")
        out.append(_zh_group(g) + _ZH_BIG[k])
    text = "".join(out)
    return text[1:] if text.startswith("一十") else text


@lru_cache(maxsize=4096)
def cardinal(n: int, code: str) -> str:
    """``n`` (>= 0) as a cardinal number."""
    if code == "zh":
        return zh_cardinal(n)
    return _tidy(_n2w.num2words(n, lang=code))


@lru_cache(maxsize=1024)
def ordinal(n: int, code: str) -> str:
    """``n`` (>= 1) as an ordinal number (masculine, nominative: "first", "dritte")."""
    if code == "zh":
        return "第" + zh_cardinal(n)
    return _tidy(_n2w.num2words(n, lang=code, to="ordinal"))


@lru_cache(maxsize=1024)
def year(n: int, code: str) -> str:
    """``n`` read as a year: "nineteen ninety-nine", "neunzehnhundertneunundneunzig";
    digit by digit in Chinese ("一九九九"); as a cardinal elsewhere (that is how Spanish,
    French, Italian and Portuguese say years)."""
    if code == "zh":
        return digits(str(n), code)
    if code.split("_")[0] in ("en", "de"):
        return _tidy(_n2w.num2words(n, lang=code, to="year"))
    return cardinal(n, code)


def digits(run: str, code: str) -> str:
    """A run of ASCII digits read one by one."""
    if code == "zh":
        return "".join(_ZH_DIGITS[int(c)] for c in run)
    names = [cardinal(d, code) for d in range(10)]
    return " ".join(names[int(c)] for c in run)


def integer(run: str, code: str, grouped: bool = False) -> str:
    """A run of digits as a number, or digit by digit when it is an identifier: a leading
    zero ("007"), or more than ``MAX_PLAIN_DIGITS`` digits (``MAX_CARDINAL_DIGITS`` when
    the writer grouped them with thousands separators)."""
    limit = MAX_CARDINAL_DIGITS if grouped else MAX_PLAIN_DIGITS
    if (len(run) > 1 and run[0] == "0") or len(run) > limit:
        return digits(run, code)
    return cardinal(int(run), code)


# -- a count before a noun: gender and the short forms ("ein Euro", "veintiún dólares")

_ONE_BEFORE: Final = {
    "de": {"m": "ein", "f": "eine"},
    "es": {"m": "un", "f": "una"},
    "fr": {"m": "un", "f": "une"},
    "it": {"m": "un", "f": "una"},
    "pt": {"m": "um", "f": "uma"},
}
# Large numbers take a preposition before the noun: "un millón de euros", "un million d'euros".
_SCALE_OF: Final = {
    "es": (("millón", "millones"), "de"),
    "pt": (("milhão", "milhões"), "de"),
    "fr": (("million", "millions", "milliard", "milliards"), "de"),
    "it": (("milione", "milioni", "miliardo", "miliardi"), "di"),
}


def _agree(words: str, lang: str, gender: str) -> str:
    """The last word of a cardinal made to agree with the noun after it."""
    head, _, last = words.rpartition(" ")
    if lang == "es" and last.endswith("uno"):
        last = last[:-1] + "a" if gender == "f" else (last[:-3] + "ún" if last != "uno" else "un")
    elif lang == "it" and last.endswith("uno"):
        last = last[:-1] + "a" if gender == "f" else last[:-1]
    elif lang == "pt" and gender == "f" and last in ("um", "dois"):
        last = "uma" if last == "um" else "duas"
    elif lang == "fr" and gender == "f" and last == "un":
        last = "une"
    return f"{head} {last}" if head else last


def counted(n: int, code: str, gender: str = "m", noun: str = "") -> str:
    """``n`` as said before a noun of ``gender`` ("m", "f"; neuter counts as "m"): "one",
    "ein"/"eine", "veintiún"/"veintiuna", "duas"; with ``noun``, the noun joined as the
    language joins it after large round numbers ("un millón de euros")."""
    lang = code.split("_")[0]
    if n == 1 and lang in _ONE_BEFORE:
        words = _ONE_BEFORE[lang].get(gender, _ONE_BEFORE[lang]["m"])
    else:
        words = _agree(cardinal(n, code), lang, gender)
    if not noun:
        return words
    scale = _SCALE_OF.get(lang)
    if scale is not None and words.rpartition(" ")[2] in scale[0]:
        prep = scale[1]
        if prep == "de" and lang == "fr" and noun[:1].lower() in "aeiouéh":
            return f"{words} d'{noun}"
        return f"{words} {prep} {noun}"
    return f"{words} {noun}"
