"""Word timings from phoneme alignments: which span of a text is spoken when (sans-I/O).

Piper (espeak-ng phonemes) says how many samples each phoneme of a sentence took. This
module turns that into times for the words of the text the engine was given:

* the phonemes of each sentence are split at the word separator (the ``" "`` phoneme)
  into *phonetic words*; punctuation phonemes (``, ; : . ! ?``) mark clause ends;
* the text is split at whitespace into *text words* (tokens with a letter or digit),
  each with an estimate of how many phonemes it takes (a digit reads as several) and
  the punctuation that follows it;
* the two sequences rarely match one to one (espeak reads "12" as "twelve", "$3.50" as
  "dollar three point five zero", "e.g." as "for example", runs "from the" and
  "Well... okay" together), so a monotone alignment (dynamic programming, numpy, about
  O(T·P·16)) gives each text word a run of phonetic words: where their lengths agree
  with its estimate, its first letters can start them, punctuation meets punctuation,
  and no sentence end falls inside. Text words that share one phonetic word split its
  time by their lengths.

When the phonemes arrive without sample counts (a model without alignments) the
sentence's audio is spread over its phonetic words by phoneme count (``estimated``).
Nothing here raises into the engine: on a mismatch it falls back to an even spread,
and it gives no words at all rather than wrong ones on a plan it cannot follow.

:func:`remap` carries spans of the engine's text (the normalised text, see
server/streaming/normalize.py) over to the text the client sent.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import unicodedata
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from server.engines.base import WordSpan

__all__ = ["ChunkTimer", "TextWord", "align", "phonetic_words", "remap", "text_words"]

NONE, CLAUSE, SENTENCE = 0, 1, 2
_TOKEN_RE = re.compile(r"\S+")
# Dashes that espeak reads as a pause (a clause end); a plain "-" it passes over.
_CLAUSE_DASHES = frozenset("\u2013\u2014\u2015")
_OPENERS = frozenset("\"'¡¿*_`.…")
_CLOSERS = frozenset(".,;:!?\"'…*_`")
# Phonemes a non-letter character is read as, roughly ("$" -> "dollar").
_SYMBOL_WEIGHT = {"%": 6.0, "$": 5.0, "€": 4.0, "£": 5.0, "¥": 3.0, "&": 3.0, "@": 2.0}
_SYMBOL_WEIGHT |= {"+": 4.0, "=": 5.0, "#": 6.0, "/": 4.0, "°": 6.0}
# Numbers: phonemes by count of digits ("7": seven, "12": twelve, "150": one hundred
# fifty, "2024": two thousand twenty four); beyond four digits, per digit.
_NUMBER_RE = re.compile(r"(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?")
_INT_WEIGHTS = {1: 3.5, 2: 5.5, 3: 14.0, 4: 19.0}
_TWO_WORDS_WEIGHT = 10.0
_DIGIT_WEIGHT = 5.0
_POINT_WEIGHT = 4.0  # "3.50": point
# The sounds a word's first letter may start with in espeak's English phonemes
# ("ch" -> t, "gem" -> d, "who" -> h, "one" -> w, "x-ray" -> ɛ).
_VOWELS = "aeiouæɑɐɒɔəɛɜɪʊʌɚɝᵻɘɵɨʉy"
_FIRST_SOUNDS = {
    "b": "b", "c": "ksʃt", "d": "d", "f": "f", "g": "ɡgdʒ", "h": "h" + _VOWELS,
    "j": "djhʒ", "k": "k", "l": "l", "m": "m", "n": "n", "p": "p", "q": "k",
    "r": "ɹr", "s": "szʃ", "t": "tθðʃ", "v": "v", "w": "wh", "x": "zs" + _VOWELS,
    "y": "j" + _VOWELS, "z": "zs",
    "ph": "f", "wh": "wh", "wr": "ɹr", "kn": "n", "gn": "n", "ps": "s", "pn": "n",
}  # fmt: skip
for _v in "aeiou":
    _FIRST_SOUNDS[_v] = _VOWELS + "jw"
_MISMATCH_COST = 0.6  # a text word's first letter cannot start its phonemes
# Alignment costs; a word whose phonemes are e (2.7) times its estimate costs 1.
_SMOOTH = 2.0  # added to both lengths: short words may be off by a phoneme or two
_EXTRA_COST = 0.15  # each phonetic word beyond the first that a text word takes
_EMPTY_COST = 1.0  # a text word gets no phonetic word of its own (it shares one)
_JOINED_COST = 0.1  # ... when it follows an ellipsis, as espeak runs such words together
_ANCHOR_MISS = 0.25  # a text word with punctuation ends where the phonemes have none
_ANCHOR_BONUS = 0.5  # a boundary with punctuation on both sides (twice for sentence ends)
_SENTENCE_COST = 3.0  # a text word runs across the end of one of the engine's sentences
_MAX_SPAN = 16  # phonetic words one text word may take ("2024-05-01" takes 10)
_MAX_CELLS = 2_000_000  # beyond this the alignment is a plain proportional spread


@dataclass(frozen=True, slots=True)
class TextWord:
    start: int  # [start, end) in the text: the word without surrounding punctuation
    end: int
    weight: float  # estimated phonemes
    punct: int  # NONE, CLAUSE or SENTENCE: the punctuation after it
    joined: bool = False  # after an ellipsis: espeak runs it into the word before
    initial: str = ""  # the sounds it may start with ("" when its letters do not say)


@dataclass(slots=True)
class PhoneticWord:
    sounds: str  # its sound phonemes (no stress, length or punctuation marks)
    punct: int
    s0: int = 0  # samples from the sentence's start to its first phoneme
    s1: int = 0  # ... to the end of its last sound


# ---------------------------------------------------------------- the text side


def _punct_class(tail: str) -> int:
    if not tail or _ellipsis(tail):
        return NONE
    if "!" in tail or "?" in tail or "." in tail:
        return SENTENCE
    if any(c in ",;:" or c in _CLAUSE_DASHES for c in tail):
        return CLAUSE
    return NONE


def _ellipsis(tail: str) -> bool:
    """espeak runs the words around an ellipsis together, without a pause."""
    return "..." in tail or "…" in tail


def _is_opener(ch: str) -> bool:
    return ch in _OPENERS or unicodedata.category(ch) in ("Ps", "Pi")


def _is_closer(ch: str) -> bool:
    return ch in _CLOSERS or unicodedata.category(ch) in ("Pe", "Pf", "Pd")


def _number_weight(m: re.Match[str]) -> float:
    whole = m.group(1).replace(",", "")
    w = _INT_WEIGHTS.get(len(whole), _DIGIT_WEIGHT * len(whole))
    if len(whole) == 2 and whole[0] >= "2" and whole[1] != "0":
        w = _TWO_WORDS_WEIGHT  # "25": twenty five
    if m.group(2):  # "3.50": point five zero
        w += _POINT_WEIGHT + _DIGIT_WEIGHT * len(m.group(2))
    return w


def _weight(word: str) -> float:
    w = sum(_number_weight(m) for m in _NUMBER_RE.finditer(word))
    rest = _NUMBER_RE.sub(" ", word)
    letters = [c for c in rest if c.isalpha()]
    spelled = len(letters) > 1 and all(c.isupper() for c in letters)  # "USA", "ABC"
    w += len(letters) * (2.0 if spelled else 1.0)
    w += sum(_SYMBOL_WEIGHT.get(c, 0.0) for c in rest)
    return max(w, 1.0)


def _initial(word: str) -> str:
    """The sounds the word may start with, from its first letters (a-z, accents
    dropped); "" when they do not tell: digits, symbols, other scripts, or capitals
    read as letter names ("FBI")."""
    head = unicodedata.normalize("NFD", word[:2]).lower()
    head = "".join(c for c in head if "a" <= c <= "z")
    sounds = _FIRST_SOUNDS.get(head[:2]) or _FIRST_SOUNDS.get(head[:1], "")
    letters = [c for c in word if c.isalpha()]
    if not sounds or (len(letters) > 1 and all(c.isupper() for c in letters)):
        return ""
    return sounds


def _spoken(tok: str) -> bool:
    """A token espeak says something for: a letter or digit, or a symbol it names."""
    return any(c.isalnum() or c in _SYMBOL_WEIGHT for c in tok)


def text_words(text: str) -> list[TextWord]:
    """The words of ``text``: whitespace-separated tokens with a letter, digit or named
    symbol ("&"), without the punctuation around them; a token of punctuation only
    ("—") marks the word before."""
    words: list[TextWord] = []
    joined = False
    for m in _TOKEN_RE.finditer(text):
        tok = m.group()
        if not _spoken(tok):
            if words:
                last = words[-1]
                punct = max(last.punct, _punct_class(tok))
                words[-1] = dataclasses.replace(last, punct=punct)
            joined = _ellipsis(tok)
            continue
        a, b = 0, len(tok)
        while a < b and not _spoken(tok[a]) and _is_opener(tok[a]):
            a += 1
        while b > a and not _spoken(tok[b - 1]) and _is_closer(tok[b - 1]):
            b -= 1
        punct = _punct_class(tok[b:])
        joined = joined or _ellipsis(tok[:a])
        word = tok[a:b]
        start, end = m.start() + a, m.start() + b
        words.append(TextWord(start, end, _weight(word), punct, joined, _initial(word)))
        joined = _ellipsis(tok[b:])
    return words


# ---------------------------------------------------------------- the phoneme side


def _is_sound(p: str) -> bool:
    return bool(p) and unicodedata.category(p[0]) in ("Ll", "Lu", "Lo")


def _in_word(p: str) -> bool:
    """A sound, or a mark on one (stress, length): the audio of "ˈæ" starts at the mark."""
    return bool(p) and unicodedata.category(p[0])[0] in "LM"


def _phoneme_punct(p: str) -> int:
    if p in (".", "!", "?"):
        return SENTENCE
    if p in (",", ";", ":"):
        return CLAUSE
    return NONE


def phonetic_words(phonemes: Sequence[tuple[str, int]]) -> list[PhoneticWord]:
    """A sentence's phonemes (with the samples each took; 0 when unknown) as phonetic
    words. Piper's alignment list also has its start ("^") and end ("$") markers: they
    only take time. A word of punctuation only marks the word before.

    A word starts at the word separator before it, where the word before ends: the
    separator carries the word's onset (the closure of a stop, the glide into a vowel),
    and there an aligner trained on real speech (pocketsphinx) puts the boundary too.
    After a pause for punctuation the separator is more pause: the word starts at its
    first phoneme."""
    words: list[PhoneticWord] = []
    cur: PhoneticWord | None = None
    gap: int | None = None  # where the separator before the next word began
    pause = True  # after punctuation (or the sentence's start) a separator is pause
    pos = 0
    for p, n in phonemes:
        if p == " ":
            cur = None
            gap = pos if gap is None and not pause else gap
        elif _in_word(p):
            if cur is None:
                cur = PhoneticWord("", NONE, pos if gap is None else gap, pos)
                words.append(cur)
                gap, pause = None, False
            if _is_sound(p):
                cur.sounds += p
            cur.s1 = pos + n
        else:
            gap, pause = None, True  # a pause is no one's
            punct = _phoneme_punct(p)
            if punct and words:
                words[-1].punct = max(words[-1].punct, punct)
        pos += n
    return words


# ---------------------------------------------------------------- the alignment


def _cumulative(weights: Sequence[float]) -> np.ndarray:
    c = np.concatenate(([0.0], np.cumsum(np.asarray(weights, dtype=np.float64))))
    return c / c[-1] if c[-1] > 0 else np.linspace(0.0, 1.0, len(c))


def _proportional(tw: Sequence[TextWord], n_p: int) -> list[int]:
    """Boundaries that split ``n_p`` phonetic words over the text words by weight."""
    ft = _cumulative([w.weight for w in tw])
    return [min(n_p, max(0, round(f * n_p))) for f in ft[1:]]


def _boundary_punct(pw: Sequence[PhoneticWord], ends: set[int]) -> np.ndarray:
    cp = np.zeros(len(pw) + 1)
    for b in range(1, len(pw) + 1):
        cp[b] = SENTENCE if b in ends or b == len(pw) else pw[b - 1].punct
    return cp


def _anchor(punct: int, cp: np.ndarray) -> np.ndarray:
    """The cost of a text word with ``punct`` ending at each boundary: a bonus (negative)
    where the phonemes have punctuation too, a little where they have none."""
    if not punct:
        return np.zeros_like(cp)
    both = (cp > 0) + (punct == SENTENCE) * (cp == SENTENCE)
    cost: np.ndarray = np.where(cp > 0, -_ANCHOR_BONUS * both, _ANCHOR_MISS)
    return cost


def _spans(
    pw: Sequence[PhoneticWord], ends: set[int], span: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What does not depend on the text word, indexed [m, e] (the m phonetic words that
    end at boundary e): log of their sounds, the fixed costs, and their start e - m."""
    p = len(pw)
    cs = np.concatenate(([0.0], np.cumsum([max(len(w.sounds), 1) for w in pw])))
    inside = np.zeros(p + 1)
    for b in ends:
        if 0 < b < p:
            inside[b] = _SENTENCE_COST
    ce = np.cumsum(inside)  # ce[x]: the costs of sentence ends at boundaries 1..x
    m = np.arange(span + 1)[:, None]
    e = np.arange(p + 1)[None, :]
    start = e - m
    valid = start >= 0
    start = np.where(valid, start, 0)
    sounds = cs[e] - cs[start]
    ends_inside = ce[np.maximum(e - 1, 0)] - ce[start]
    fixed = np.where(valid, _EXTRA_COST * np.maximum(m - 1, 0) + ends_inside, np.inf)
    return np.log(sounds + _SMOOTH), fixed, start


class _Misses:
    """The cost of a text word's possible first sounds against each phonetic word's
    first sound, by phonetic word (one vector per set of sounds, made when needed)."""

    def __init__(self, pw: Sequence[PhoneticWord]) -> None:
        self._firsts = [w.sounds[:1] for w in pw] + [""]
        self._none = np.zeros(len(self._firsts))
        self._by_initial: dict[str, np.ndarray] = {}

    def by_start(self, initial: str) -> np.ndarray:
        if not initial:
            return self._none
        v = self._by_initial.get(initial)
        if v is None:
            v = np.array([0.0 if not f or f in initial else _MISMATCH_COST for f in self._firsts])
            self._by_initial[initial] = v
        return v


def align(tw: Sequence[TextWord], pw: Sequence[PhoneticWord], ends: set[int]) -> list[int]:
    """For each text word, the phonetic boundary it ends at: word k takes phonetic words
    ``[b[k-1], b[k])`` (``b[-1]`` is 0; the last boundary is ``len(pw)``). ``ends`` are
    the phonetic boundaries where a sentence of the engine ends (inside the chunk).

    Each word's cost is local: how far its phonemes are from its estimated length (a
    log ratio), a little for each phonetic word beyond one, more for none at all, a lot
    for running over a sentence end; punctuation on both sides is a bonus."""
    t, p = len(tw), len(pw)
    if t == 0:
        return []
    if p == 0:
        return [0] * t
    span = min(p, _MAX_SPAN)
    if t * (span + 1) * (p + 1) > _MAX_CELLS:
        return _proportional(tw, p)
    log_sounds, fixed, start = _spans(pw, ends, span)
    cp = _boundary_punct(pw, ends)
    misses = _Misses(pw)
    best = np.full(p + 1, np.inf)
    best[0] = 0.0
    back = np.zeros((t, p + 1), dtype=np.int64)  # phonetic words taken by word k
    for k, w in enumerate(tw):
        # cand[m, e]: word k takes the m phonetic words that end at boundary e
        cand = np.abs(log_sounds - np.log(w.weight + _SMOOTH)) + fixed + best[start]
        cand[1:] += _anchor(w.punct, cp) + misses.by_start(w.initial)[start[1:]]
        cand[0] = best + (_JOINED_COST if w.joined else _EMPTY_COST)
        back[k] = np.argmin(cand, axis=0)
        best = cand[back[k], np.arange(p + 1)]
    if not np.isfinite(best[p]):
        return _proportional(tw, p)
    bounds = [0] * t
    e = p
    for k in range(t - 1, -1, -1):
        bounds[k] = e
        e -= int(back[k][e])
    return bounds


# ---------------------------------------------------------------- per chunk


@dataclass(slots=True)
class _Group:
    words: list[TextWord]  # text words that share phonetic words [first, last)
    first: int
    last: int


def _groups(tw: Sequence[TextWord], bounds: Sequence[int]) -> list[_Group]:
    groups: list[_Group] = []
    waiting: list[TextWord] = []  # leading words without a phonetic word of their own
    b0 = 0
    for w, b in zip(tw, bounds, strict=True):
        if b > b0:
            groups.append(_Group([*waiting, w], b0, b))
            waiting = []
        elif groups:
            groups[-1].words.append(w)
        else:
            waiting.append(w)
        b0 = max(b0, b)
    return groups


def _split(group: _Group, t0: float, t1: float) -> list[WordSpan]:
    if len(group.words) == 1:
        w = group.words[0]
        return [WordSpan(w.start, w.end, t0, t1)]
    cum = _cumulative([w.weight for w in group.words])
    times = t0 + (t1 - t0) * cum
    return [
        WordSpan(w.start, w.end, float(a), float(b))
        for w, a, b in zip(group.words, times[:-1], times[1:], strict=True)
    ]


def _spread(pw: list[PhoneticWord], n_samples: int) -> None:
    """No alignment: spread a sentence's samples over its words by their sounds."""
    total = sum(max(len(w.sounds), 1) for w in pw)
    pos = 0.0
    for w in pw:
        w.s0 = round(pos)
        pos += n_samples * max(len(w.sounds), 1) / max(total, 1)
        w.s1 = round(pos)


class ChunkTimer:
    """Word times for one chunk that the engine speaks in sentences.

    Built from the text and the phonemes of each of its sentences (known before any
    audio); ``piece`` takes each sentence's alignment as its audio comes and returns
    the words that end in it, times in seconds from the start of that piece (a word
    begun in an earlier sentence has a negative start).
    """

    def __init__(self, text: str, sentences: Sequence[Sequence[str]], rate: int) -> None:
        self.rate = rate
        self._sentences = [list(s) for s in sentences if s]
        self._words: list[PhoneticWord] = []
        self._first: list[int] = []  # each sentence's first phonetic word
        for s in self._sentences:
            self._first.append(len(self._words))
            self._words.extend(phonetic_words([(p, 0) for p in s]))
        ends = set(self._first[1:])
        tw = text_words(text)
        self._groups = _groups(tw, align(tw, self._words, ends))
        self._next = 0  # sentence
        self._group = 0  # first group not given yet
        self._base = 0  # samples of the chunk before the current sentence
        self._ok = True

    def piece(
        self,
        phonemes: Sequence[str],
        alignment: Sequence[tuple[str, int]] | None,
        n_samples: int,
    ) -> tuple[list[WordSpan], bool]:
        """The words that end in the next sentence (its ``phonemes``, ``alignment`` with
        Piper's "^"/"$" markers, and its length), and whether their times are estimated."""
        try:
            return self._piece(phonemes, alignment, n_samples)
        except Exception:  # never into the engine: give no words from here on
            self._ok = False
            return [], True
        finally:
            self._base += n_samples

    def _piece(
        self,
        phonemes: Sequence[str],
        alignment: Sequence[tuple[str, int]] | None,
        n_samples: int,
    ) -> tuple[list[WordSpan], bool]:
        s = self._next
        self._next += 1
        if not self._ok or s >= len(self._sentences) or list(phonemes) != self._sentences[s]:
            self._ok = False  # the engine did not speak what was planned
            return [], True
        a = self._first[s]
        b = self._first[s + 1] if s + 1 < len(self._first) else len(self._words)
        mine = self._words[a:b]
        timed = phonetic_words(alignment) if alignment is not None else []
        estimated = [w.sounds for w in timed] != [w.sounds for w in mine]
        if estimated:
            _spread(mine, n_samples)
        else:
            for w, x in zip(mine, timed, strict=True):
                w.s0, w.s1 = x.s0, x.s1
        for w in mine:  # from the chunk's start
            w.s0 += self._base
            w.s1 += self._base
        return self._ready(b), estimated

    def _ready(self, upto: int) -> list[WordSpan]:
        out: list[WordSpan] = []
        base = self._base / self.rate
        while self._group < len(self._groups) and self._groups[self._group].last <= upto:
            g = self._groups[self._group]
            self._group += 1
            t0 = self._words[g.first].s0 / self.rate - base
            t1 = self._words[g.last - 1].s1 / self.rate - base
            out.extend(_split(g, t0, max(t0, t1)))
        return out


# ---------------------------------------------------------------- engine text -> client text


def _key(text: str, w: TextWord) -> str:
    return unicodedata.normalize("NFKC", text[w.start : w.end]).casefold()


def _counterpart(i: int, n: int, j1: int, j2: int, n_o: int) -> int:
    """The original word that spoken word ``i`` of ``n`` in a differing stretch stands
    for: spread over the original's ``[j1, j2)``, or its neighbour when that is empty."""
    if j2 > j1:
        return j1 + i * (j2 - j1) // n
    if j1 > 0:
        return j1 - 1
    return j1 if j1 < n_o else -1


def _token_map(spoken: str, original: str) -> tuple[list[TextWord], list[tuple[int, int]]]:
    """The spoken text's words, and for each the span of the original it stands for."""
    ws, wo = text_words(spoken), text_words(original)
    ks, ko = [_key(spoken, w) for w in ws], [_key(original, w) for w in wo]
    spans: list[tuple[int, int]] = [(0, 0)] * len(ws)
    ops = difflib.SequenceMatcher(None, ks, ko, autojunk=False).get_opcodes()
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal":
            for i, j in zip(range(i1, i2), range(j1, j2), strict=True):
                spans[i] = (wo[j].start, wo[j].end)
        elif i2 > i1:
            for i in range(i1, i2):
                j = _counterpart(i - i1, i2 - i1, j1, j2, len(wo))
                spans[i] = (wo[j].start, wo[j].end) if j >= 0 else (0, 0)
    return ws, spans


def remap(spoken: str, original: str, words: Sequence[WordSpan]) -> list[WordSpan]:
    """Spans of ``spoken`` (what the engine said) as spans of ``original``: words are
    paired by their letters and digits; a word the normaliser split ("1234567890" read
    in groups) maps to the one it came from, and such repeats are merged."""
    if spoken == original or not words:
        return list(words)
    ws, spans = _token_map(spoken, original)
    starts = [w.start for w in ws]
    out: list[WordSpan] = []
    for w in words:
        i = bisect_right(starts, w.start) - 1
        if i < 0 or not ws or spans[i][1] <= spans[i][0]:
            continue
        a, b = spans[i]
        if out and out[-1].start == a and out[-1].end == b:
            last = out[-1]
            out[-1] = WordSpan(a, b, min(last.t0, w.t0), max(last.t1, w.t1))
        else:
            out.append(WordSpan(a, b, w.t0, w.t1))
    return out
