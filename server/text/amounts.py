"""An amount with what is written around it (sans-I/O): a currency before or after it, a
sign, "%", a unit, an ordinal suffix, a decade's "s", "pm", the word before a year."""

from __future__ import annotations

import functools
import re
from typing import Final

from server.text import readings as rd
from server.text.context import (
    FR_HOUR_AFTER,
    Ctx,
    Say,
    ampm_after,
    glued,
    is_year,
    prev_word,
    touches,
)
from server.text.lexicon import LEXICONS, Lexicon
from server.text.numerals import cardinal, ordinal, year

__all__ = ["amount"]

_CODES: Final = "USD|EUR|GBP|JPY|CNY|RMB"
_SYMBOLS: Final = {"$": "USD", "US$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY"}
_CUR_BEFORE: Final = re.compile(
    rf"(?:(?P<s1>[-−+])?(?P<sym>US\$|[$€£¥])(?P<s2>[-−])? ?|(?P<code>{_CODES}) )$"
)
_SIGN_BEFORE: Final = re.compile(r"[-−+]$")
_SCALE_AFTER: Final = re.compile(r" ?(thousand|million|billion|trillion|k|K|m|M|mn|bn|B)(?!\w)")
_CUR_AFTER: Final = re.compile(rf" ?(?:(?P<sym>[€$£¥])|(?P<code>{_CODES})(?![A-Za-z]))")
_PERCENT_AFTER: Final = re.compile(r" ?%")
_DECADE_AFTER: Final = re.compile(r"(?:['’]s|s)(?!\w)")
_DE_ORDINAL_AFTER: Final = re.compile(r"\. ([^\W\d_]+)")
_ZH_YEAR_AFTER: Final = re.compile(r"年")
_MONTH_DAY_BEFORE: Final = re.compile(r"([A-Za-z]+) [0-9]{1,2}(?:st|nd|rd|th)?, ?$")


def _sign(s: int, ctx: Ctx) -> tuple[int, str]:
    """A sign written right before ``s`` at a word's start: (where it starts, its word)."""
    text = ctx.text
    if s - 1 < ctx.floor or not _SIGN_BEFORE.search(text, max(0, s - 1), s):
        return s, ""
    if s >= 2 and (touches(text[s - 2]) or text[s - 2] in ")]}"):
        return s, ""  # "x-3", "5-3", "(a)-3": a dash, not a sign
    word = ctx.lex.plus if text[s - 1] == "+" else ctx.lex.minus
    return (s - 1, word) if word else (s, "")


def _currency_before(s: int, ctx: Ctx) -> tuple[int, str, str]:
    """A currency written before ``s``: (where it starts, its ISO code, a sign's word)."""
    window = ctx.text[max(ctx.floor, s - 6) : s]
    m = _CUR_BEFORE.search(window)
    if m is None:
        return s, "", ""
    start = s - len(window) + m.start()
    if m.group("code"):
        if start > 0 and ctx.text[start - 1].isalpha():
            return s, "", ""
        return start, "CNY" if m.group("code") == "RMB" else m.group("code"), ""
    sign = m.group("s1") or m.group("s2")
    if not m.group("s1") and start > 0 and glued(ctx.text[start - 1]):
        return s, "", ""  # "A$5", "HK$5": a dollar this table does not name
    if m.group("s1") and start > 0 and touches(ctx.text[start - 1]):
        return s, "", ""
    word = (ctx.lex.plus if sign == "+" else ctx.lex.minus) if sign else ""
    return start, _symbol_code(m.group("sym"), ctx.lex), word


def _symbol_code(sym: str, lex: Lexicon) -> str:
    return "CNY" if sym == "¥" and lex.lang == "zh" else _SYMBOLS[sym]


def _signed(sign: str, words: str, lex: Lexicon) -> str:
    return lex.joiner.join((sign, words)) if sign else words


def amount(s: int, e: int, a: rd.Amount, ctx: Ctx) -> Say | None:
    """An amount with what is written around it: currency, %, a unit, an ordinal suffix."""
    if not ctx.lex.point:  # a language with no lexicon: plain integers only
        return Say(s, e, cardinal(int(a.whole), ctx.code), "number") if a.frac is None else None
    start, currency, sign = _currency_before(s, ctx)
    if currency:
        return _money_before(start, e, a, currency, sign, ctx)
    start, sign = _sign(s, ctx)
    for after in (_money_after, _percent, _integer_suffix, _unit):
        say = after(start, e, a, sign, ctx)
        if say is not None:
            return say
    say = _year_or_day(s, e, a, ctx) if not sign else None
    if say is not None:
        return say
    return Say(start, e, _signed(sign, rd.say_amount(a, ctx.lex, ctx.code), ctx.lex), "number")


def _money_before(start: int, e: int, a: rd.Amount, code: str, sign: str, ctx: Ctx) -> Say | None:
    scale = _SCALE_AFTER.match(ctx.text, e) if ctx.lex.lang == "en" else None
    word = ""
    if scale is not None:
        word = {"k": "thousand", "K": "thousand", "m": "million", "M": "million"}.get(
            scale.group(1), {"mn": "million", "bn": "billion", "B": "billion"}.get(scale.group(1))
        ) or scale.group(1)
        e = scale.end()
    words = rd.say_money(a, code, ctx.lex, ctx.code, word)
    return Say(start, e, _signed(sign, words, ctx.lex), "currency") if words else None


def _money_after(start: int, e: int, a: rd.Amount, sign: str, ctx: Ctx) -> Say | None:
    m = _CUR_AFTER.match(ctx.text, e)
    if m is None:
        return None
    code = _symbol_code(m.group("sym"), ctx.lex) if m.group("sym") else m.group("code")
    words = rd.say_money(a, "CNY" if code == "RMB" else code, ctx.lex, ctx.code)
    return Say(start, m.end(), _signed(sign, words, ctx.lex), "currency") if words else None


def _percent(start: int, e: int, a: rd.Amount, sign: str, ctx: Ctx) -> Say | None:
    m = _PERCENT_AFTER.match(ctx.text, e)
    if m is None:
        return None
    lex, n = ctx.lex, rd.say_amount(a, ctx.lex, ctx.code)
    words = lex.percent + n if lex.lang == "zh" else f"{n} {lex.percent}"
    return Say(start, m.end(), _signed(sign, words, lex), "percent")


def _unit(start: int, e: int, a: rd.Amount, sign: str, ctx: Ctx) -> Say | None:
    m = _unit_pattern(ctx.lex.lang).match(ctx.text, e)
    if m is None:
        return None
    noun = ctx.lex.units[m.group(1)]
    words = rd.say_measure(a, noun, ctx.lex, ctx.code)
    return Say(start, m.end(), _signed(sign, words, ctx.lex), "unit")


@functools.cache
def _unit_pattern(lang: str) -> re.Pattern[str]:
    keys = sorted(LEXICONS[lang].units, key=len, reverse=True)
    return re.compile(r" ?(" + "|".join(map(re.escape, keys)) + r")(?![\w/])")


def _integer_suffix(start: int, e: int, a: rd.Amount, sign: str, ctx: Ctx) -> Say | None:
    """What may follow an integer: an ordinal suffix, a decade's "s", "pm", "15h30"."""
    if a.frac is not None or sign or a.grouped or len(a.whole) > 6:
        return None
    n, lang = int(a.whole), ctx.lex.lang
    say = _ordinal(start, e, n, ctx)
    if say is None and lang == "en":
        say = _decade(start, e, a.whole, ctx) or _hour(start, e, n, ctx)
    if say is None and lang == "fr":
        m = FR_HOUR_AFTER.match(ctx.text, e)
        words = rd.say_time(n, int(m.group(1) or 0), "", ctx.lex, ctx.code) if m else None
        say = Say(start, m.end(), words, "time") if m and words else None
    if say is None and lang == "de":
        say = _de_ordinal(start, e, n, ctx)
    return say


def _ordinal(start: int, e: int, n: int, ctx: Ctx) -> Say | None:
    suffixes = ctx.lex.ordinal_suffixes
    if not suffixes or n < 1:
        return None
    text = ctx.text
    for suf in sorted(suffixes, key=len, reverse=True):
        end = e + len(suf)
        if text[e:end].lower() == suf and not (end < len(text) and text[end].isalnum()):
            return Say(start, end, _ordinal_words(n, suf, ctx), "ordinal")
    return None


def _ordinal_words(n: int, suffix: str, ctx: Ctx) -> str:
    words, lang = ordinal(n, ctx.code), ctx.lex.lang
    feminine = suffix.endswith("ª") or (lang == "fr" and suffix in ("re", "ère"))
    if not feminine:
        return words
    if lang == "fr":
        return words.replace("premier", "première")
    if lang == "it":
        return words[:-1] + "a" if words.endswith("o") else words
    return " ".join(w[:-1] + "a" if w.endswith("o") else w for w in words.split())


def _decade(start: int, e: int, run: str, ctx: Ctx) -> Say | None:
    m = _DECADE_AFTER.match(ctx.text, e)
    if m is None or len(run) not in (2, 4) or int(run) % 10 or int(run) < 10:
        return None
    words = year(int(run), ctx.code) if len(run) == 4 else cardinal(int(run), ctx.code)
    words = words[:-1] + "ies" if words.endswith("y") else words + "s"
    return Say(start, m.end(), words, "year")


def _hour(start: int, e: int, n: int, ctx: Ctx) -> Say | None:
    ampm, end = ampm_after(e, ctx)
    words = rd.say_time(n, 0, ampm, ctx.lex, ctx.code) if ampm else None
    return Say(start, end, words, "time") if words else None


def _de_ordinal(start: int, e: int, n: int, ctx: Ctx) -> Say | None:
    """German "3." only where it cannot end a sentence: after "am", "der", "zum"... and
    before a word, or before a month's name ("3. März")."""
    m = _DE_ORDINAL_AFTER.match(ctx.text, e)
    if m is None or not 1 <= n <= 999:
        return None
    prev = prev_word(ctx.text, start)
    cue = prev in ctx.lex.date_cues or prev in ("der", "die", "das", "im", "beim", "des")
    if not cue and m.group(1) not in ctx.lex.months:
        return None
    return Say(start, e + 1, rd.de_ordinal(n, prev), "ordinal")


def _year_or_day(s: int, e: int, a: rd.Amount, ctx: Ctx) -> Say | None:
    """ "in 1999" and "March 2024" say years (English, German), "1999年" too (Chinese);
    "March 5" says "March fifth"."""
    if a.frac is not None or a.grouped:
        return None
    lex, text = ctx.lex, ctx.text
    if lex.lang == "zh" and _ZH_YEAR_AFTER.match(text, e) and len(a.whole) >= 2:
        return Say(s, e, year(int(a.whole), ctx.code), "year")
    prev = prev_word(text, s)
    day = lex.lang == "en" and len(a.whole) <= 2 and 1 <= int(a.whole) <= 31
    if day and prev.capitalize() in lex.months:
        return Say(s, e, ordinal(int(a.whole), ctx.code), "date")
    if lex.lang not in ("en", "de") or not is_year(a.whole):
        return None
    if prev in lex.year_cues or _after_month_day(text, s, ctx):
        return Say(s, e, year(int(a.whole), ctx.code), "year")
    return None


def _after_month_day(text: str, s: int, ctx: Ctx) -> bool:
    """ "March 5, 2024": a year after a month and a day."""
    m = _MONTH_DAY_BEFORE.search(text[max(0, s - 24) : s])
    return m is not None and m.group(1).capitalize() in ctx.lex.months
