"""Incremental text chunker: LLM tokens in, TTS-ready chunks out.

An LLM streams text a few characters at a time and a piece may end in the middle of a word.
:class:`SentenceChunker` is a pure, sans-I/O unit: :meth:`SentenceChunker.push` adds a piece and
returns the chunks that are now *final*, :meth:`SentenceChunker.flush` ends an utterance and
returns the rest, and :meth:`SentenceChunker.clear` drops everything (barge-in).

Policy (see :class:`ChunkPolicy` for the numbers):

* Chunks are spans of the input with surrounding whitespace stripped; no text is rewritten,
  dropped or duplicated, and no chunk is empty.
* A chunk is returned only once nothing that may still arrive can change it. A sentence end is
  ``.``, ``!``, ``?`` or ``…`` (runs such as ``?!`` or ``...`` included), then any closing
  quotes/brackets, then whitespace, then a character that can start a sentence: an upper-case
  (or caseless, e.g. CJK) letter, a digit, or an opening quote/bracket/bullet. So
  ``"costs 3."`` waits (it may become ``3.14``) and ``"see example."`` waits for the next
  character. CJK terminators (``。！？；｡``) need no space, but the chunker still waits for
  the character after them so closers such as ``」』）”`` stay with their sentence. A blank line
  (two newlines) also ends a sentence.
* A single ``.`` does not end a sentence after an abbreviation in :data:`ABBREVIATIONS`, after
  one of :data:`NUMERIC_ABBREVIATIONS` when a digit follows (``No. 5``), after a single capital
  initial other than ``I`` (``J. R. R. Tolkien``), after a dotted acronym (``U.S.``, ``e.g.``,
  ``a.m.``), or after a list number of up to three digits at the start of a line or chunk
  (``1. Open the box``). Decimals, versions, times, URLs and e-mail addresses never end a
  sentence because their dots and colons are not followed by whitespace.
* Ambiguity decisions: ``etc.`` is *not* an abbreviation here; followed by whitespace and an
  upper-case letter it ends the sentence, because in practice it closes a list at the end of a
  sentence far more often than it precedes a proper noun. Dotted acronyms and titles followed by
  a capital (``in the U.S. The ...``) are kept together instead: a missed split only costs a
  little latency, a wrong one breaks prosody mid-sentence.
* First chunk of an utterance: cut as early as possible so first audio comes fast, at a clause
  boundary (``, ; :`` or a dash followed by whitespace, an em dash also directly before a word,
  or full-width ``，、：``) once the chunk has ``first_min_words`` words, else at a sentence end;
  if it grows beyond ``first_max_chars`` with neither, at the last whitespace within that limit.
* Hurry: while the engine has as much work in hand as threads (the owner sets ``hurry``), a
  first chunk whose end is known is cut after ``hurry_words`` words when at least three
  follow. Only a known end: a cut decided while the sentence still arrives could leave one
  word on its own.
* Later chunks are sentences. A sentence shorter than the current *target* is merged with the
  following sentence(s), but only with those whose end is already confirmed in the buffer:
  the chunker never waits for more text just to merge. The target for the n-th chunk after the
  first is ``min(min_chars * growth ** (n - 1), max_target_chars)`` (40, 80, 160, 240, 240, ...
  with the defaults).
* No chunk is longer than ``max_chars``: a sentence without an end in sight is split at the last
  clause boundary within the limit, else at the last whitespace, else hard at the limit. This
  happens in ``push()`` as soon as the text is that long, so the buffer stays bounded and each
  push costs time proportional to the new text (plus at most ``max_chars`` of rescanning).

The maintained ``sentence-stream`` library was evaluated and rejected: it rewrites the text
(strips asterisks and whitespace), so chunk spans cannot be recovered, and its abbreviation rule
only knows capitalised abbreviations.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

__all__ = ["ABBREVIATIONS", "NUMERIC_ABBREVIATIONS", "ChunkPolicy", "SentenceChunker"]

ABBREVIATIONS: Final[frozenset[str]] = frozenset(
    {
        # titles and honorifics
        "Mr.", "Mrs.", "Ms.", "Mx.", "Dr.", "Prof.", "Sr.", "Jr.", "St.", "Mt.", "Ft.", "Messrs.",
        "Mme.", "Mlle.", "Rev.", "Hon.", "Gen.", "Gov.", "Sen.", "Rep.", "Pres.", "Supt.",
        "Capt.", "Col.", "Lt.", "Sgt.", "Cpl.", "Maj.", "Adm.", "Cmdr.", "Ph.D.",
        # organisations and addresses
        "Inc.", "Ltd.", "Co.", "Corp.", "Bros.", "Assn.", "Dept.", "Univ.",
        "Ave.", "Blvd.", "Rd.", "Hwy.", "Apt.", "Ste.",
        # months and weekdays (capitalised only: "the cat sat." must still end a sentence)
        "Jan.", "Feb.", "Mar.", "Apr.", "Jun.", "Jul.", "Aug.", "Sep.", "Sept.", "Oct.", "Nov.",
        "Dec.", "Mon.", "Tue.", "Tues.", "Wed.", "Thu.", "Thur.", "Thurs.", "Fri.", "Sat.",
        "Sun.",
        # dotted acronyms (also caught by the dotted-acronym rule)
        "U.S.", "U.K.", "U.N.", "E.U.",
        # lower-case entries match in any letter case ("vs." "Vs." "VS.")
        "vs.", "e.g.", "i.e.", "cf.", "viz.", "al.", "ca.", "approx.", "esp.", "incl.", "a.m.",
        "p.m.",
    }
)  # fmt: skip
"""Words whose final period never ends a sentence (``etc.`` is deliberately absent).

Entries written in lower case match in any letter case; the others match exactly.
"""

NUMERIC_ABBREVIATIONS: Final[frozenset[str]] = frozenset(
    {
        "no.", "nos.", "nr.", "fig.", "figs.", "vol.", "vols.", "ch.", "chap.", "sec.", "sect.",
        "eq.", "art.", "p.", "pp.", "op.", "pt.", "ex.",
    }
)  # fmt: skip
"""Abbreviations (any letter case) whose period does not end a sentence when a digit follows."""

_CASELESS_ABBREVIATIONS: Final[frozenset[str]] = frozenset(
    a for a in ABBREVIATIONS if a == a.lower()
)

_TERMINALS: Final = ".!?…"
_CJK_TERMINALS: Final = "。！？；｡"
_ALL_TERMINALS: Final = _TERMINALS + _CJK_TERMINALS
_CJK_CLAUSE: Final = "，、："
_CLOSERS: Final = "\"'”’)]}»›」』）】》〉〕〗〙〛＂＇］｝*_`"
_OPENERS: Final = "\"'“‘„([{«‹「『（【《〈〔〖〘〚［｛¿¡*_`#•>-–—"

_CJK_RANGES: Final = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_CHAR: Final = re.compile(f"[{_CJK_RANGES}]")
_ALNUM: Final = re.compile(r"[^\W_]")
_WS_RUN: Final = re.compile(r"\s*")
_HSPACE_RUN: Final = re.compile(r"[^\S\n]*")
_DOTTED_ACRONYM: Final = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")
_TOKEN: Final = re.compile(r"\S+")
_HURRY_REST_WORDS: Final = 3  # a hurried cut leaves at least this many words after it
_CLAUSE: Final = re.compile(r"[,;:–—，、：]")
_SENTENCE_CANDIDATES: Final = re.compile(r"(?P<term>[.!?…。！？；｡]+)|(?P<nl>\n)")
_FIRST_CANDIDATES: Final = re.compile(
    r"(?P<term>[.!?…。！？；｡]+)|(?P<nl>\n)|(?P<clause>[,;:–—，、：])"
)

# outcome of examining one candidate boundary
_REJECT: Final = 0  # not a boundary, whatever text follows
_PENDING: Final = 1  # undecided until more text arrives (only whitespace follows it so far)
_BOUNDARY: Final = 2  # a confirmed boundary


class ChunkPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How :class:`SentenceChunker` sizes chunks. Lengths are in characters (code points)."""

    first_min_words: int = 4
    """The first chunk of an utterance may be cut at a clause boundary once it has this many
    words (a CJK character counts as a word)."""

    first_max_chars: int = 120
    """The first chunk is cut at the last whitespace within this length if it grows longer
    without a clause boundary or sentence end."""

    hurry_words: int = 5
    """While the engine is saturated (:attr:`SentenceChunker.hurry`), a first chunk whose end
    is known is cut after this many words when at least three more follow: a shorter
    first synthesis, so first audio comes sooner when it would wait for others, at the
    price of a phrase break where the cut falls. ``0`` disables it."""

    min_chars: int = 40
    """Target length of the second chunk: a shorter sentence is merged with the following
    sentences whose end is already in the buffer. ``0`` disables merging."""

    growth: float = 2.0
    """Factor by which the target grows for each further chunk (>= 1)."""

    max_target_chars: int = 240
    """Upper limit of the growing target."""

    max_chars: int = 400
    """Hard maximum length of any chunk."""

    def __post_init__(self) -> None:
        if self.first_min_words < 1:
            raise ValueError("first_min_words must be >= 1")
        if self.hurry_words < 0:
            raise ValueError("hurry_words must be >= 0")
        if self.max_chars < 1:
            raise ValueError("max_chars must be >= 1")
        if not 1 <= self.first_max_chars <= self.max_chars:
            raise ValueError("first_max_chars must be between 1 and max_chars")
        if self.min_chars < 0 or self.max_target_chars < 0:
            raise ValueError("min_chars and max_target_chars must be >= 0")
        if not self.growth >= 1.0:  # also rejects NaN
            raise ValueError("growth must be >= 1")


def _count_words(text: str) -> int:
    """Whitespace-separated tokens that contain a letter or digit, plus one per CJK character."""
    cjk = len(_CJK_CHAR.findall(text))
    rest = _CJK_CHAR.sub(" ", text) if cjk else text
    return cjk + sum(1 for token in rest.split() if _ALNUM.search(token))


def _starts_sentence(char: str) -> bool:
    return char.isdigit() or (char.isalpha() and not char.islower()) or char in _OPENERS


class SentenceChunker:
    """Turns a stream of text pieces into TTS chunks; see the module docstring for the policy.

    Not thread-safe; one instance per stream.
    """

    __slots__ = (
        "_buf",
        "_first",
        "_last_nonws",
        "_policy",
        "_raw_base",
        "_raw_done",
        "_scanned",
        "_start",
        "_target",
        "hurry",
        "raw_lengths",
    )

    def __init__(self, policy: ChunkPolicy | None = None) -> None:
        self._policy = policy if policy is not None else ChunkPolicy()
        self._buf = ""  # pending text; everything before _start has been returned
        self._start = 0
        self._scanned = 0  # candidates before this index are rejected for the current chunk
        self._last_nonws = -1  # index of the last non-whitespace character in _buf
        self._first = True  # the next chunk is the first of an utterance
        self._target = 0.0  # merge target of the next (non-first) chunk
        # Where the chunks are in the text pushed: chunks drop the whitespace around
        # them and _compact shrinks it, so a resume that continues "after the chunks
        # spoken" must count the raw characters. _buf[i] is pushed character
        # _raw_base + i (a compacted whitespace run keeps its last characters).
        self._raw_base = 0
        self._raw_done = 0  # pushed characters up to the end of the last chunk returned
        # For the chunks the last push/flush returned: the pushed characters each one
        # accounts for (the whitespace before it, then the chunk itself).
        self.raw_lengths: list[int] = []
        # Set by the owner before a push or flush: the engine has as much work in hand as
        # threads, so a first chunk may be cut short (ChunkPolicy.hurry_words).
        self.hurry = False

    @property
    def policy(self) -> ChunkPolicy:
        return self._policy

    @property
    def buffered_chars(self) -> int:
        """Characters held and not yet returned (leading whitespace, never returned, excluded)."""
        content = _WS_RUN.match(self._buf, self._start)
        assert content is not None
        return len(self._buf) - content.end()

    def push(self, text: str) -> list[str]:
        """Add a piece of text; return the chunks that are now final."""
        if not text:
            self.raw_lengths = []
            return []
        base = len(self._buf)
        self._buf += text
        stripped = len(text.rstrip())
        if stripped:
            self._last_nonws = base + stripped - 1
        chunks = self._drain(final=False)
        self._compact()
        return chunks

    def flush(self) -> list[str]:
        """End the utterance: return everything buffered; the next chunk is a first chunk."""
        chunks = self._drain(final=True)
        # Only whitespace is left: it goes with the next chunk, as between two sentences.
        self._reset()
        return chunks

    def clear(self) -> None:
        """Drop everything buffered (barge-in); the next chunk is a first chunk."""
        self._reset()
        self._raw_done = self._raw_base  # dropped text counts as done (the journal's cancel)

    def _reset(self) -> None:
        self._raw_base += len(self._buf)
        self._buf = ""
        self._start = 0
        self._scanned = 0
        self._last_nonws = -1
        self._first = True
        self._target = 0.0

    # -- internals ---------------------------------------------------------------------------

    def _drain(self, final: bool) -> list[str]:
        chunks: list[str] = []
        self.raw_lengths = []
        while (chunk := self._next_chunk(final)) is not None:
            chunks.append(chunk)
        return chunks

    def _compact(self) -> None:
        """Drop returned text; shrink leading whitespace to one character (newline kept)."""
        buf = self._buf
        content = _WS_RUN.match(buf, self._start)
        assert content is not None
        p = content.end()
        lead = buf[self._start : p]
        if self._start == 0 and len(lead) <= 1:
            return
        keep = ("\n" if "\n" in lead else " ") if lead else ""
        shift = p - len(keep)
        self._buf = keep + buf[p:]
        self._raw_base += shift
        self._scanned = max(self._scanned, p) - shift
        self._last_nonws = self._last_nonws - shift if self._last_nonws >= p else -1
        self._start = 0

    def _next_chunk(self, final: bool) -> str | None:
        """Return the next final chunk and consume it, or None if more text is needed."""
        buf = self._buf
        content = _WS_RUN.match(buf, self._start)
        assert content is not None
        p = content.end()
        if p >= len(buf) or self._last_nonws < p:
            return None
        policy = self._policy
        extent = self._last_nonws + 1 - p  # length of the chunk if it took everything
        boundary, self._scanned = self._find_boundary(
            max(self._scanned, p), p, first=self._first, final=final, after=p
        )
        end: int | None = None
        if self._first:
            if boundary is not None and self.hurry and policy.hurry_words:
                boundary = self._hurried(p, boundary)
            if boundary is not None and boundary - p <= policy.first_max_chars:
                end = boundary
            elif extent > policy.first_max_chars and (
                (space := self._last_space(p + 1, p + policy.first_max_chars + 1)) is not None
            ):
                end = space
            elif boundary is not None and boundary - p <= policy.max_chars:
                end = boundary
        elif boundary is not None and boundary - p <= policy.max_chars:
            end = self._merge(p, boundary, final)
        if end is None:
            if extent <= policy.max_chars:
                return None
            end = self._forced_end(p)

        chunk = buf[p:end].rstrip()
        raw_end = self._raw_base + p + len(chunk)
        self.raw_lengths.append(raw_end - self._raw_done)
        self._raw_done = raw_end
        self._start = end
        self._scanned = end
        if self._first:
            self._first = False
            self._target = float(min(policy.min_chars, policy.max_target_chars))
        else:
            self._target = min(self._target * policy.growth, float(policy.max_target_chars))
        return chunk

    def _hurried(self, p: int, end: int) -> int:
        """Where a hurried first chunk ``buf[p:end]`` ends: after ``hurry_words`` words if
        at least _HURRY_REST_WORDS follow, else at ``end``."""
        buf = self._buf
        words = 0
        for token in _TOKEN.finditer(buf, p, end):
            if _ALNUM.search(buf, token.start(), token.end()) is None:
                continue
            words += 1
            if words == self._policy.hurry_words:
                cut = token.end()
                rest = _count_words(buf[cut:end])
                return cut if rest >= _HURRY_REST_WORDS else end
        return end

    def _merge(self, p: int, end: int, final: bool) -> int:
        """Extend the chunk ``buf[p:end]`` by already confirmed sentences up to the target."""
        max_chars = self._policy.max_chars
        while end - p < self._target:
            following, _ = self._find_boundary(end, p, first=False, final=final, after=end)
            if following is None or following - p > max_chars:
                break
            end = following
        return end

    def _find_boundary(
        self, start: int, p: int, *, first: bool, final: bool, after: int
    ) -> tuple[int | None, int]:
        """Find the first confirmed boundary at or after ``start`` for a chunk starting at ``p``.

        Returns ``(end, resume)``: ``end`` is the exclusive end of the chunk text (None if
        none is confirmed yet; at a flush, the end of the text) and every candidate before
        ``resume`` has been rejected. The text between ``after`` and the boundary must contain
        a letter or digit (so no chunk is punctuation only). Only candidates that can yield a
        chunk of at most ``max_chars`` are examined.
        """
        buf = self._buf
        limit = min(len(buf), p + self._policy.max_chars + 1)
        pattern = _FIRST_CANDIDATES if first else _SENTENCE_CANDIDATES
        alnum = _ALNUM.search(buf, after, limit)
        alnum_at = alnum.start() if alnum is not None else len(buf)
        resume = start
        for match in pattern.finditer(buf, start, limit):
            index = match.start()
            if index < resume:
                continue
            kind = match.lastgroup
            if kind == "term":
                status, position = self._check_terminal(index, p, alnum_at)
            elif kind == "nl":
                status, position = self._check_newline(index, alnum_at)
            else:
                status, position = self._check_clause(index, p, alnum_at, count_words=True)
            if status == _BOUNDARY:
                return position, resume
            if status == _PENDING:
                break
            resume = position
        else:
            resume = max(resume, limit)  # no candidate starts in [start, limit) any more
        rest_end = self._last_nonws + 1
        if final and rest_end > after:
            return rest_end, resume
        return None, resume

    def _check_terminal(self, index: int, p: int, alnum_at: int) -> tuple[int, int]:
        """Examine the run of sentence punctuation at ``index``."""
        buf = self._buf
        n = len(buf)
        run_end = index + 1
        while run_end < n and buf[run_end] in _ALL_TERMINALS:
            run_end += 1
        run = buf[index:run_end]
        end = run_end
        while end < n and buf[end] in _CLOSERS:
            end += 1
        if end == n:
            return _PENDING, index
        cjk = any(c in _CJK_TERMINALS for c in run) or (
            run[0] == "…" and index > p and _CJK_CHAR.match(buf, index - 1) is not None
        )
        if not cjk:
            if not buf[end].isspace():
                return _REJECT, end
            following = self._whitespace_end(end)
            newline = buf.find("\n", end, following)
            if newline < 0 or buf.find("\n", newline + 1, following) < 0:  # no blank line
                if following == n:
                    return _PENDING, index
                char = buf[following]
                if not _starts_sentence(char):
                    return _REJECT, end
                if run == "." and self._is_abbreviation(index, p, char):
                    return _REJECT, end
        if alnum_at >= index:
            return _REJECT, end
        return _BOUNDARY, end

    def _whitespace_end(self, index: int) -> int:
        """End of the whitespace run at ``index``, without rescanning a trailing run."""
        if self._last_nonws < index:
            return len(self._buf)
        space = _WS_RUN.match(self._buf, index)
        assert space is not None
        return space.end()

    def _check_newline(self, index: int, alnum_at: int) -> tuple[int, int]:
        """Examine the newline at ``index``: a blank line ends the sentence before it."""
        buf = self._buf
        if self._last_nonws < index:  # only whitespace follows
            following = buf.find("\n", index + 1)
            if following < 0:
                return _PENDING, index
        else:
            space = _HSPACE_RUN.match(buf, index + 1)
            assert space is not None
            following = space.end()
        if buf[following] != "\n" or alnum_at >= index:
            return _REJECT, index + 1
        return _BOUNDARY, index

    def _check_clause(
        self, index: int, p: int, alnum_at: int, *, count_words: bool
    ) -> tuple[int, int]:
        """Examine the clause punctuation at ``index`` (comma, semicolon, colon, dash)."""
        buf = self._buf
        n = len(buf)
        end = index + 1
        while end < n and buf[end] in _CLOSERS:
            end += 1
        if end == n:
            return _PENDING, index
        mark = buf[index]
        char = buf[end]
        confirmed = mark in _CJK_CLAUSE or char.isspace() or (mark == "—" and char.isalnum())
        if not confirmed or alnum_at >= index:
            return _REJECT, end
        if count_words and _count_words(buf[p:end]) < self._policy.first_min_words:
            return _REJECT, end
        return _BOUNDARY, end

    def _is_abbreviation(self, index: int, p: int, following: str) -> bool:
        """Whether the single period at ``index`` belongs to a word rather than ending it."""
        buf = self._buf
        start = index
        while start > p and not buf[start - 1].isspace():
            start -= 1
        word = buf[start:index].lstrip(_OPENERS)
        if not word:
            return False
        dotted = word + "."
        lowered = dotted.lower()
        if dotted in ABBREVIATIONS or lowered in _CASELESS_ABBREVIATIONS:
            return True
        if lowered in NUMERIC_ABBREVIATIONS and following.isdigit():
            return True
        if len(word) == 1 and word.isupper() and word != "I":
            return True  # an initial: "J. R. R. Tolkien"
        if _DOTTED_ACRONYM.fullmatch(word):
            return True  # "U.S.", "e.g.", "a.m."
        return word.isdigit() and len(word) <= 3 and self._at_line_start(start, p)

    def _at_line_start(self, start: int, p: int) -> bool:
        """Whether the word at ``start`` begins the chunk or follows a newline."""
        if start == p:
            return True
        buf = self._buf
        while start > p and buf[start - 1].isspace():
            if buf[start - 1] == "\n":
                return True
            start -= 1
        return False

    def _last_space(self, lo: int, hi: int) -> int | None:
        """Index of the last whitespace character in ``buf[lo:hi]``."""
        buf = self._buf
        for index in range(hi - 1, lo - 1, -1):
            if buf[index].isspace():
                return index
        return None

    def _forced_end(self, p: int) -> int:
        """End of an over-long chunk starting at ``p``: clause, else word, else hard split."""
        hi = p + self._policy.max_chars
        best: int | None = None
        alnum = _ALNUM.search(self._buf, p, hi)
        if alnum is not None:
            for match in _CLAUSE.finditer(self._buf, alnum.end(), hi):
                status, end = self._check_clause(match.start(), p, alnum.start(), count_words=False)
                if status == _BOUNDARY and end <= hi:
                    best = end
        if best is not None:
            return best
        space = self._last_space(p + 1, hi + 1)
        return space if space is not None else hi
