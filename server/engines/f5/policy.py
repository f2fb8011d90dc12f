"""F5 streaming policy: how a chunk of text becomes F5 generations, and how their audio joins.

Pure functions and small classes (numpy only, no torch), so they are tested on their own.

F5 is non-autoregressive: one generation yields all of its audio at once, after every
ODE step. Streaming therefore means generating in pieces: a small first piece so the
first audio comes fast, then longer ones (fewer passes, better prosody), each within
the model's total-length limit (reference + output). The duration of a piece follows
F5's own rule: the reference's speaking rate (mel frames per UTF-8 byte of its
transcript) times the piece's bytes, divided by the speed.
"""

from __future__ import annotations

import re

import msgspec
import numpy as np
import numpy.typing as npt

Audio = npt.NDArray[np.float32]

SAMPLE_RATE = 24000
HOP = 256  # samples per mel frame (≈ 10.7 ms)


class StreamPolicy(msgspec.Struct, frozen=True, kw_only=True):
    # A whole generation (reference + output) stays under this: F5 was trained on
    # clips under ~30 s, and the upstream server keeps 25 s.
    total_limit_s: float = 25.0
    # Seconds of speech in the first piece of an utterance: it decides time to first audio.
    first_piece_s: float = 1.6
    # Each later piece may be this many times longer than the one before, up to the limit.
    growth: float = 2.0
    # A piece is never cut shorter than this (UTF-8 bytes) unless the whole text is:
    # one-word generations come out stretched or garbled.
    min_piece_bytes: int = 16
    # Floor for a piece's generated duration: F5 garbles very short targets (upstream
    # slows text under 10 bytes to speed 0.3 instead, which drawls).
    min_gen_s: float = 0.45
    # Extra time given to every piece so the last word is not squeezed or dropped; the
    # silence it leaves is trimmed afterwards.
    tail_margin_s: float = 0.15
    # Silence kept after the last voiced window when trimming a piece's tail.
    keep_silence_s: float = 0.06
    # Windows quieter than the piece's loudest window by this much count as silence.
    silence_db: float = 40.0
    # Consecutive pieces of one chunk overlap by this much (equal-power cross-fade).
    crossfade_s: float = 0.02


# Sentence ends, then clause breaks; the CJK forms need no following space.
_SENTENCE = re.compile(r"[.!?…]+[\"')\]]*\s+|[。！？]+")
_CLAUSE = re.compile(r"[,;:]\s+|[，；：、]")
_SPACE = re.compile(r"\s+")
_ANY_BREAK = re.compile(r"[。！？，；：、]|\s+")


def nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _cut(text: str, budget: int, min_bytes: int) -> int:
    """Character index to cut ``text`` at, so the head is about ``budget`` bytes.

    The last sentence end, else clause break, else space inside the budget (with a head
    of at least ``min_bytes``); else the first space after it (a piece a little over
    budget beats a word cut in two); a hard cut only for text without breaks nearby
    (CJK runs, one very long token).
    """
    # Characters whose UTF-8 prefix fits the budget.
    limit = len(text.encode("utf-8")[:budget].decode("utf-8", "ignore"))
    for pattern in (_SENTENCE, _CLAUSE, _SPACE):
        best = -1
        for m in pattern.finditer(text, 0, limit + 1):
            if m.end() <= limit and nbytes(text[: m.end()].rstrip()) >= min_bytes:
                best = m.end()
        if best > 0:
            return best
    after = _ANY_BREAK.search(text, limit)
    if after is not None and nbytes(text[: after.end()]) <= budget + budget // 2 + min_bytes:
        return after.end()
    return max(1, limit)


def split_pieces(
    text: str, bytes_per_s: float, speed: float, first: bool, ref_s: float, policy: StreamPolicy
) -> list[str]:
    """Split one chunk of text into the pieces generated one after another.

    ``bytes_per_s`` is the reference's speaking rate (transcript bytes per second of
    audio). The first piece of an utterance holds about ``first_piece_s`` of speech;
    each later piece may grow by ``growth``; none exceeds what fits beside the
    reference within ``total_limit_s``. A tail shorter than ``min_piece_bytes`` is
    merged into the piece before it rather than generated alone.
    """
    text = text.strip()
    if not text:
        return []
    rate = bytes_per_s * speed  # bytes of text per second of output
    max_bytes = max(policy.min_piece_bytes, int(rate * max(1.0, policy.total_limit_s - ref_s)))
    budget = int(rate * policy.first_piece_s) if first else max_bytes
    budget = max(policy.min_piece_bytes, min(budget, max_bytes))
    pieces: list[str] = []
    rest = text
    while rest:
        size = nbytes(rest)
        # Take everything when it fits, or when what would be left is too short to stand alone.
        if size <= budget or (size - budget < policy.min_piece_bytes and size <= max_bytes):
            pieces.append(rest)
            break
        at = _cut(rest, budget, policy.min_piece_bytes)
        head, tail = rest[:at].strip(), rest[at:].strip()
        if tail and nbytes(tail) < policy.min_piece_bytes:
            if size <= max_bytes:
                pieces.append(rest)
                break
            # Cut earlier so the tail is not left too short to stand alone.
            earlier = _cut(rest, budget - policy.min_piece_bytes, policy.min_piece_bytes)
            h2, t2 = rest[:earlier].strip(), rest[earlier:].strip()
            if min(nbytes(h2), nbytes(t2)) >= policy.min_piece_bytes:
                head, tail = h2, t2
        pieces.append(head)
        rest = tail
        budget = min(max_bytes, int(budget * policy.growth))
    return pieces


def duration_frames(
    ref_frames: int, ref_text_bytes: int, gen_bytes: int, speed: float, policy: StreamPolicy
) -> int:
    """Total mel frames (reference + output) for one generation.

    F5's rule: output frames = ref_frames / ref_text_bytes * gen_bytes / speed; here with
    a floor (``min_gen_s``) instead of upstream's 0.3× slow-down for short text, plus
    ``tail_margin_s`` so the last word has room.
    """
    frames_per_s = SAMPLE_RATE / HOP
    gen = ref_frames / max(1, ref_text_bytes) * gen_bytes / speed
    gen = max(gen, policy.min_gen_s * frames_per_s) + policy.tail_margin_s * frames_per_s
    return ref_frames + int(gen)


def trim_trailing_silence(audio: Audio, policy: StreamPolicy, rate: int = SAMPLE_RATE) -> Audio:
    """Drop the silence after the last voiced 10 ms window, keeping ``keep_silence_s``.

    Silence is relative to the piece's loudest window (``silence_db`` below it), so a
    quiet voice is not eaten, and an absolute floor of -70 dBFS covers an all-quiet piece.
    """
    win = rate // 100
    n = len(audio) // win
    if n < 2:
        return audio
    frames = audio[: n * win].astype(np.float64).reshape(n, win)
    level = np.sqrt(np.mean(frames * frames, axis=1))
    threshold = max(float(level.max()) * 10 ** (-policy.silence_db / 20), 10 ** (-70 / 20))
    voiced = np.nonzero(level > threshold)[0]
    if voiced.size == 0:
        return audio[:0]
    end = (int(voiced[-1]) + 1) * win + int(policy.keep_silence_s * rate)
    return audio[: min(len(audio), end)]


class CrossFader:
    """Joins the pieces of one chunk with a short equal-power cross-fade.

    The last ``crossfade_s`` of each piece is held back until the next piece comes (or
    the chunk ends), so the join costs no latency beyond the fade itself.
    """

    def __init__(self, policy: StreamPolicy, rate: int = SAMPLE_RATE) -> None:
        self._n = max(0, int(policy.crossfade_s * rate))
        t = (np.arange(self._n, dtype=np.float64) + 0.5) / max(1, self._n)
        self._fade_in = np.sin(0.5 * np.pi * t).astype(np.float32)
        self._fade_out = np.cos(0.5 * np.pi * t).astype(np.float32)
        self._held: Audio = np.zeros(0, dtype=np.float32)

    def push(self, piece: Audio) -> Audio:
        """Add the next piece; returns the audio that is final now."""
        x = np.asarray(piece, dtype=np.float32)
        held = self._held
        k = min(held.size, x.size)
        if k:
            # Overlap the held tail with the new head; a piece shorter than the fade
            # shortens the overlap rather than being dropped.
            mixed = (
                held[held.size - k :] * self._fade_out[self._n - k :] + x[:k] * self._fade_in[:k]
            )
            x = np.concatenate((held[: held.size - k], mixed, x[k:]))
        elif held.size:
            x = np.concatenate((held, x))
        cut = max(0, x.size - self._n)
        self._held = x[cut:].copy()
        return x[:cut]

    def end(self) -> Audio:
        """The chunk is complete: release the held tail (the pipeline fades it out)."""
        out, self._held = self._held, np.zeros(0, dtype=np.float32)
        return out
