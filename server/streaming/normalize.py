"""Text normalisation before synthesis, and a bound on how much audio a chunk may produce.

A sans-I/O unit: pure functions, no engine import. Chunk text comes from an LLM, a user's chat
or a web page, and espeak-ng (Piper's phonemiser) crashes or runs away on some strings; see
docs/robustness.md for the findings this module is built on.

* :func:`speakable` returns the text the engine should be given for one chunk.
* :func:`audio_budget_s` returns the most audio (seconds) that chunk may reasonably produce; the
  engine worker cuts output beyond it.

Both never raise and take microseconds to low milliseconds for a 400-character chunk.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from typing import Final

__all__ = [
    "DOTTED_GROUP_LETTERS",
    "MAX_DIGIT_RUN",
    "MAX_MARKS_PER_BASE",
    "MAX_TOKEN_CHARS",
    "audio_budget_s",
    "speakable",
]

# No whitespace-free token longer than this reaches espeak. espeak-ng silently cuts a word at
# about 160 bytes (measured: "ab" * 80 and "ab" * 200 give the same 165 phonemes), and 40
# characters of 4-byte UTF-8 stay below that; real words are shorter (40 covers long German
# compounds), while URLs, base64, hex and digit soup beyond it are noise that espeak would
# spell out at ~3 phonemes per character.
MAX_TOKEN_CHARS: Final = 40
# Digit runs longer than this are read in groups of four: espeak reads up to 33 digits as one
# number ("one hundred eleven octillion ...", ~10 phonemes per digit); 15 keeps every real
# amount (up to hundreds of trillions) whole.
MAX_DIGIT_RUN: Final = 15
# A chain of single letters joined by dots ("U.S.A.") whose letters take more than
# _DOTTED_MAX_BYTES of UTF-8 is regrouped into chains of DOTTED_GROUP_LETTERS letters. espeak-ng's
# CheckDottedAbbrev() copies a chain into an 80-byte stack buffer with no bound (fixed upstream
# in espeak-ng PR #2428, not in piper-tts 1.8): ~97 ASCII letters segfault and 41 two-byte
# letters already overrun it. 24 bytes leaves a wide margin yet keeps real text ("e.g. U.S.A.",
# "J. R. R. Tolkien") unchanged; groups of four letters (<= 40 bytes even with marks) are safe.
DOTTED_GROUP_LETTERS: Final = 4
_DOTTED_MAX_BYTES: Final = 24
# Combining marks kept per base character: enough for Vietnamese, Indic and Thai clusters,
# not for zalgo pile-ups (which espeak reads as a list of diacritic names).
MAX_MARKS_PER_BASE: Final = 3
# A cluster of punctuation/symbols (no letters, digits or spaces) keeps at most this many
# characters after runs are collapsed: '?!"' survives, "?!?!?!?!" does not.
_MAX_PUNCT_CLUSTER: Final = 3

# Dash-like characters whose runs of two or more (rules, separators, "--" for a dash) become
# one pause; "*" and "#" only from three on, so markdown "**bold**" stays as it was.
_PAUSE_RUN_CHARS: Final = frozenset("-_=~\u2010\u2011\u2012\u2013\u2014\u2015\u2212")
_PAUSE_RUN3_CHARS: Final = frozenset("*#")
_PAUSE: Final = "\u2014"  # an em dash: espeak ends a clause there (measured: "a — b")
_ELLIPSIS: Final = "\u2026"

# Blocks whose characters espeak reads by code point ("letter one d four zero seven") but
# whose NFKC form is ordinary text: mathematical alphanumerics, fullwidth/halfwidth forms,
# enclosed alphanumerics (espeak says nothing for "①"), ligatures, presentation forms.
_FOLD_RANGES: Final = (
    (0x2460, 0x24FF),
    (0x3200, 0x33FF),
    (0xFB00, 0xFDFF),
    (0xFE30, 0xFE4F),
    (0xFE50, 0xFE6F),
    (0xFE70, 0xFEFF),
    (0xFF00, 0xFFEF),
    (0x1D400, 0x1D7FF),
    (0x1F100, 0x1F1FF),
)

# Other symbols (category So) that are kept: Latin-1 and the other small-script symbols,
# letterlike symbols and number forms, which espeak names in a word or two ("copyright",
# "degrees"). Every other So character is dropped: emoji and pictographs, dingbats, box
# drawing, braille ("braille one two three four five six"), CJK and technical symbols, which
# espeak names at length or reads as hex code points. Emoji are dropped rather than named:
# a voice bot reading "family man woman girl boy" eighty times is worse than silence, and the
# ZWJ/skin-tone/flag machinery makes one emoji up to a dozen names.
_KEEP_SYMBOL_RANGES: Final = ((0x0000, 0x07FF), (0x2100, 0x218F))

# Scripts written without spaces: an over-long token in them is split, not truncated, because
# it is a whole sentence rather than a blob.
_NO_SPACE_SCRIPT_RANGES: Final = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x0F00, 0x0FFF),  # Tibetan
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified
    (0xF900, 0xFAFF),  # CJK compatibility
    (0x20000, 0x3134F),  # CJK extensions B-G
)

_WS_RE: Final = re.compile(r"\s+")
_TOKEN_RE: Final = re.compile(r"\S+")
_DIGITS_RE: Final = re.compile(rf"\d{{{MAX_DIGIT_RUN + 1},}}")
_MARK_CLASS: Final = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
_LETTER: Final = rf"[^\W\d_][{_MARK_CLASS}]*"
# One item of a dotted chain: a single-letter word, then a separator holding a dot. espeak keeps
# the chain going across spaces ("a . b" crashed at 150 letters) and across punctuation after
# the dot ("a.a.a.a., " * 40 crashed, as did ".;", ".:", ".!", ".?", ".…" and ".—"); only a
# letter without a dot, a newline, a quote or bracket, or a capital after ". " ends it.
_DOTTED_ITEM: Final = rf"(?<!\w){_LETTER}(?!\w) *\.[ .,;:!?\u2026\u2013\u2014-]*"
_DOTTED_CHAIN_RE: Final = re.compile(rf"(?:{_DOTTED_ITEM}){{2,}}(?:{_LETTER}(?!\w))?")
_LETTER_RE: Final = re.compile(_LETTER)


def _in_ranges(cp: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(lo <= cp <= hi for lo, hi in ranges)


def _is_emoji_modifier(cp: int) -> bool:
    return 0x1F3FB <= cp <= 0x1F3FF


def _foldable(ch: str) -> bool:
    # Letters, digits and symbols only: fullwidth punctuation ("，" "！") is ordinary CJK text.
    return _in_ranges(ord(ch), _FOLD_RANGES) and unicodedata.category(ch)[0] in "LNS"


def _fold(text: str) -> str:
    """NFKC only for the compatibility blocks above, then NFC for everything.

    Plain NFKC would also rewrite ordinary text ("x²" -> "x2", "™" -> "TM"), so it is applied
    per character where espeak would otherwise read a code point.
    """
    if any(_foldable(c) for c in text):
        text = "".join(unicodedata.normalize("NFKC", c) if _foldable(c) else c for c in text)
    return unicodedata.normalize("NFC", text)


def _filter_chars(text: str) -> str:
    """Drop what cannot be spoken; map every kind of whitespace to a space or a newline."""
    out: list[str] = []
    marks = 0  # combining marks kept since the last base character
    has_base = False  # whether a mark may attach to the previous kept character
    for ch in text:
        cp = ord(ch)
        if ch in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029":
            out.append("\n")
            has_base = False
            continue
        cat = unicodedata.category(ch)
        if ch.isspace() or cat == "Zs":
            out.append(" ")
            has_base = False
            continue
        major = cat[0]
        if major == "C":
            # Cc controls, Cf format (ZWJ, ZWNJ, bidi controls, BOM, soft hyphen, tags),
            # Cs surrogates, Co private use, Cn unassigned (noncharacters included).
            continue
        if major == "M":
            if 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF:
                continue  # variation selectors: emoji/text presentation, nothing to say
            if cat == "Me" or not has_base or marks >= MAX_MARKS_PER_BASE:
                continue  # enclosing marks (keycaps), stray marks, zalgo pile-ups
            marks += 1
            out.append(ch)
            continue
        if cat == "So" and not _in_ranges(cp, _KEEP_SYMBOL_RANGES):
            continue
        if cat == "Sk" and _is_emoji_modifier(cp):
            continue  # skin tones
        if ch == "\ufffd":
            continue
        out.append(ch)
        marks = 0
        has_base = major in "LN"
    return "".join(out)


def _collapse_whitespace(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        return "\n" if "\n" in m.group() else " "

    return _WS_RE.sub(one, text).strip()


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PS"


def _collapse_punct(text: str) -> str:
    """Collapse runs of one punctuation/symbol character, then cap mixed clusters.

    Also defuses Piper's raw-phoneme syntax: ``[[...]]`` cannot survive ``[[`` -> ``[``.
    """
    out: list[str] = []
    cluster = 0  # length of the punctuation cluster written so far
    for ch, same in itertools.groupby(text):
        run = sum(1 for _ in same)
        if not _is_punct(ch):
            out.append(ch * run)
            cluster = 0
            continue
        piece = _fit_cluster(_run_piece(ch, run), cluster, out[-1] if out else "")
        out.append(piece)
        cluster += len(piece)
    return "".join(out)


def _run_piece(ch: str, run: int) -> str:
    """What a run of ``run`` copies of the punctuation/symbol ``ch`` becomes."""
    if ch == "." and run == 3:
        return "..."  # ordinary text, and espeak reads it as a pause
    if run >= 2 and ch in (".", _ELLIPSIS):
        return _ELLIPSIS  # espeak-ng misreads "word.." (espeak-ng issues #1271, #1761)
    if (run >= 2 and ch in _PAUSE_RUN_CHARS) or (run >= 3 and ch in _PAUSE_RUN3_CHARS):
        return _PAUSE
    if run == 2 and ch not in "[]":
        return ch * 2  # "C++", "!!", "??" stay; "[[" must not: Piper's raw-phoneme syntax
    return ch


def _fit_cluster(piece: str, cluster: int, last: str) -> str:
    """``piece`` cut to what is left of the cluster's room (``cluster`` characters written,
    the last piece written being ``last``)."""
    if cluster + len(piece) > _MAX_PUNCT_CLUSTER:
        if cluster + 1 > _MAX_PUNCT_CLUSTER:
            return ""
        piece = _ELLIPSIS if piece == "..." else piece[0]
    if len(piece) == 1 and last == piece:
        return ""  # "..…" or "--—" would otherwise leave two of a kind
    return piece


def _no_space_script(token: str) -> bool:
    return any(_in_ranges(ord(c), _NO_SPACE_SCRIPT_RANGES) for c in token)


def _bound_token(m: re.Match[str]) -> str:
    token = m.group()
    if len(token) <= MAX_TOKEN_CHARS:
        return token
    if _no_space_script(token):
        # A sentence in a script without spaces: keep it all, in pieces espeak reads whole.
        return " ".join(
            token[k : k + MAX_TOKEN_CHARS] for k in range(0, len(token), MAX_TOKEN_CHARS)
        )
    # URLs, base64, hex, digit soup, endless words: the head is all a listener can use.
    return token[:MAX_TOKEN_CHARS]


def _group_digits(m: re.Match[str]) -> str:
    run = m.group()
    return ", ".join(run[k : k + 4] for k in range(0, len(run), 4))


def _regroup_dotted(m: re.Match[str]) -> str:
    letters = _LETTER_RE.findall(m.group())
    if sum(len(letter.encode()) for letter in letters) <= _DOTTED_MAX_BYTES:
        return m.group()
    groups = [
        ".".join(letters[k : k + DOTTED_GROUP_LETTERS])
        for k in range(0, len(letters), DOTTED_GROUP_LETTERS)
    ]
    # A comma after a letter without a dot ends espeak's chain (measured: "a.a.a.a, " * 75 is
    # 75 clauses and safe, "a.a.a.a., " * 40 crashes).
    tail = " " if m.group().endswith(" ") else ""
    return ", ".join(groups) + tail


def _speakable(text: str) -> str:
    text = _fold(text)
    # NFC again: a dropped format character (ZWJ, a variation selector) may have kept a
    # letter and its mark apart, and the result must be a fixed point (idempotent).
    text = unicodedata.normalize("NFC", _filter_chars(text))
    text = _collapse_whitespace(text)
    text = _collapse_punct(text)
    text = _TOKEN_RE.sub(_bound_token, text)
    text = _DIGITS_RE.sub(_group_digits, text)
    text = _DOTTED_CHAIN_RE.sub(_regroup_dotted, text)
    return _collapse_whitespace(text)


def _fallback(text: str) -> str:
    # Only reached if a bug above raises: printable ASCII words, each within the token bound.
    words = "".join(c if c.isascii() and (c.isalnum() or c in " ,;:?!'") else " " for c in text)
    return " ".join(w[:MAX_TOKEN_CHARS] for w in words.split())


def speakable(text: str) -> str:
    """The text the engine should be given for a chunk; see the module docstring.

    Ordinary text (words, numbers, abbreviations such as "Dr." or "e.g.", accented letters,
    non-Latin scripts) comes back unchanged; an empty result means nothing to say.
    """
    try:
        return _speakable(text)
    except Exception:
        try:
            return _fallback(str(text))
        except Exception:
            return ""


# audio_budget_s: seconds of audio at speed 1 per character of the speakable text, plus a cost
# per whitespace-separated token. Measured with Piper en_US-joe-medium (docs/robustness.md):
# English prose ~0.06 s/char (17 chars/s); spelled or unpronounceable Latin tokens up to
# 0.23 s/letter ("xkcdqwrtzp", 40 x "W"); single letters ~0.33 s each with their space;
# digits read as number words up to 0.66 s/digit; letters espeak-en only names ("Chinese
# letter", "Thai letter e 2 a", IPA, Latin Extended-B, titlecase letter names) up to 1.1 s/char.
# Every weight sits above the worst measured rate, so real speech is never cut; the bound is
# ~5x English prose and still tiny for text that normalises to little (emoji: ~1 s).
_BASE_S: Final = 1.0
_TOKEN_S: Final = 0.3
_WEIGHTS_S: Final = {
    "latin": 0.25,  # ASCII, Latin-1 and Latin Extended-A letters
    "other_letter": 1.3,
    "digit": 0.8,
    "symbol": 1.0,
    "punct": 0.3,
    "mark": 0.1,
    "space": 0.05,
}
_MIN_SPEED: Final = 0.25
_MAX_SPEED: Final = 4.0


def _char_class(ch: str) -> str:
    if ch.isspace():
        return "space"
    cat = unicodedata.category(ch)
    major = cat[0]
    if major == "L":
        return "latin" if ord(ch) < 0x0180 else "other_letter"
    if major == "N":
        return "digit"
    if major == "M":
        return "mark"
    if major == "S":
        return "symbol"
    return "punct"


def audio_budget_s(text: str, speed: float) -> float:
    """The most audio (seconds) a chunk's text may reasonably produce at ``speed``.

    Computed from :func:`speakable` of ``text``, so the raw chunk and its speakable form give
    the same bound; ``speed`` is clamped to 0.25-4.0 (Piper's length_scale is 1 / speed).
    """
    try:
        spoken = speakable(text)
        seconds = _BASE_S + _TOKEN_S * len(spoken.split())
        seconds += sum(_WEIGHTS_S[_char_class(c)] for c in spoken)
        s = float(speed)
        if s != s:  # NaN
            s = 1.0
        return seconds / min(max(s, _MIN_SPEED), _MAX_SPEED)
    except Exception:
        return _BASE_S / _MIN_SPEED
