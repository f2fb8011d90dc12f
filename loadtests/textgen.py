"""LLM-like text for load tests: assistant-style paragraphs cut into tokens.

An LLM streams sub-word tokens: short words whole with their leading space, long
words in pieces of 3–5 characters, punctuation on its own. A paragraph opens with a
first sentence of 6–10 words and no clause mark (so the server's first chunk is
that whole sentence, which benchmarks 3 and 4 need), followed by body sentences of
varied length, some with commas.
"""

from __future__ import annotations

import re

import numpy as np

from server.streaming.chunker import ChunkPolicy, SentenceChunker

# 6–10 words each, no comma/semicolon/colon/dash: the first chunk is the whole sentence.
OPENERS = (
    "Sure thing I can help you with that.",
    "Your order shipped this morning from our warehouse.",
    "The next train to the city leaves at noon.",
    "I found three restaurants near your hotel tonight.",
    "Your appointment is confirmed for Tuesday next week.",
    "The weather looks sunny for the whole weekend.",
    "Thanks for waiting while I checked your account.",
    "There are two ways to reset your password.",
    "The package should arrive within four business days.",
    "Let me walk you through the setup step by step.",
    "Great question about the battery life of this model.",
    "I have updated the delivery address on your order.",
)

BODY = (
    "First, open the settings page and choose the option called security.",
    "It usually takes a minute or two, so please keep the page open.",
    "If anything looks wrong, you can always call our support line.",
    "The museum opens at nine, and the gardens stay open until sunset.",
    "Most customers choose the standard plan.",
    "You will get a confirmation email as soon as the payment goes through.",
    "Parking is free on weekends, but it fills up quickly after ten.",
    "Do you want me to book a table for two at seven thirty?",
    "The larger model costs a little more, yet it lasts almost twice as long.",
    "I can also send the details to your phone.",
    "Remember to bring a photo ID and the reference number from your letter.",
    "Traffic is light right now, so the drive should take about twenty minutes.",
    "Is there anything else I can help you with today?",
    "The refund will show up on your card within five to seven days.",
    "Our team checked the logs and found nothing unusual on your line.",
    "Please note that prices may change during the holiday season.",
    "After that, restart the device and wait for the green light.",
    "Many people find the evening tour even more beautiful than the morning one.",
)

_WORD = re.compile(r"\s*[\w'’]+|\s*[^\w\s]")


def paragraph(rng: np.random.Generator, sentences: int) -> str:
    """An opener and ``sentences - 1`` body sentences (distinct), joined by spaces."""
    first = OPENERS[int(rng.integers(len(OPENERS)))]
    k = max(0, min(sentences - 1, len(BODY)))
    body = [BODY[int(i)] for i in rng.choice(len(BODY), size=k, replace=False)]
    return " ".join([first, *body])


def tokens(text: str, rng: np.random.Generator) -> list[str]:
    """``text`` cut like an LLM's output tokens; joined they give ``text`` back."""
    out: list[str] = []
    for m in _WORD.finditer(text):
        piece = m.group(0)
        core = piece.lstrip()
        if len(core) <= 6 or not core[0].isalnum():
            out.append(piece)
            continue
        # A long word: its leading space and first 3–5 letters, then the rest in 3–5s.
        pos = 0
        lead = len(piece) - len(core)
        while pos < len(core):
            start = pos
            pos += int(rng.integers(3, 6))
            if len(core) - pos < 3:
                pos = len(core)  # no one- or two-letter tail token
            out.append((piece[:lead] if start == 0 else "") + core[start:pos])
    rest = text[sum(len(t) for t in out) :]
    if rest:
        out.append(rest)  # trailing whitespace
    return out


def first_chunk_at(pieces: list[str], policy: ChunkPolicy | None = None) -> tuple[int, str]:
    """Index of the piece after which the server's chunker releases the first chunk,
    and that chunk's text; (-1, rest) when only the closing flush releases it.

    Runs the server's own chunker with the server's default policy, so the client
    knows exactly which send completes the first chunk.
    """
    chunker = SentenceChunker(policy or ChunkPolicy())
    for i, piece in enumerate(pieces):
        chunks = chunker.push(piece)
        if chunks:
            return i, chunks[0]
    rest = chunker.flush()
    return -1, rest[0] if rest else ""
