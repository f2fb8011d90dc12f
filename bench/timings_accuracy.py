"""How close voxwire's word timings come to an offline recognizer's forced alignment.

Sentences are spoken by Piper through the engine worker exactly as a session gets them
(one chunk each, in one stream, with word timings on: ``Job.timings``), into a raw
float32 "encoder" at 16 kHz, so the times are checked on the output timeline: after the
speed change, the resampling and the framer's carry between chunks (``offset_s``).
Each chunk's output is then aligned to its known words by pocketsphinx (CMU Sphinx, its
bundled US English model; ``Decoder.set_align_text``), which we did not write, and each
word's start is compared with ours.

    .venv/bin/python bench/timings_accuracy.py [--speed 1.0 --speed 1.5] [--out PATH]

Pocketsphinx needs dictionary words, so each sentence lists what its numbers and
abbreviations are read as ("12" -> "twelve"). Its boundaries come in 10 ms frames, and
it puts a pause before a word into that word (it found no silences between words
here), so a word after a pause starts earlier for it than its first sound: the signed
mean shows that bias apart from the spread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.engines.jobs import (  # noqa: E402
    ChunkDone,
    ChunkTimings,
    Output,
    SegmentStart,
    UtteranceDone,
)
from server.engines.piper import DEFAULT_VOICE, PiperEngine  # noqa: E402
from server.engines.timing import text_words  # noqa: E402
from server.engines.worker import EngineWorker, Job  # noqa: E402
from server.streaming.pipeline import AudioPipeline  # noqa: E402

RATE = 16000  # output rate: pocketsphinx's model is 16 kHz
FRAME_MS = 20

# (text, how pocketsphinx should hear the words that are not plain dictionary words)
SENTENCES: list[tuple[str, dict[str, str]]] = [
    ("The quick brown fox jumps over the lazy dog.", {}),
    ("Please call Stella and ask her to bring these things with her from the store.", {}),
    (
        "Six spoons of fresh snow peas, five thick slabs of blue cheese, "
        "and maybe a snack for her brother Bob.",
        {},
    ),
    ("We also need a small plastic snake and a big toy frog for the kids.", {}),
    (
        "She can scoop these things into three red bags, and we will go meet her "
        "Wednesday at the train station.",
        {},
    ),
    (
        "I paid 12 dollars for 3 apples and 25 pears.",
        {"12": "twelve", "3": "three", "25": "twenty five"},
    ),
    ("Dr. Jones arrived late, so we started without him.", {"Dr": "doctor"}),
    ("Well, okay; fine: it's done, and nobody complained about it.", {}),
    (
        "In 1999 the company had 150 employees.",
        {"1999": "nineteen hundred ninety nine", "150": "one hundred fifty"},
    ),
    (
        "When the sunlight strikes raindrops in the air, they act as a prism and form a "
        "rainbow, which is a division of white light into many beautiful colors that take "
        "the shape of a long round arch, with its path high above, and its two ends "
        "apparently beyond the horizon.",
        {},
    ),
]


class RawFloat:
    """An "encoder" that passes 20 ms frames through as float32 bytes."""

    encoding = "raw"
    lookahead = 0

    def __init__(self, rate: int) -> None:
        self.sample_rate = rate
        self.frame_samples = rate * FRAME_MS // 1000

    def encode(self, frame: npt.NDArray[np.float32]) -> bytes:
        return np.asarray(frame, dtype="<f4").tobytes()

    def reset(self) -> None:
        pass


@dataclass
class Owner:
    """A stream that records what the worker delivers."""

    pipeline: AudioPipeline
    session_id: str = "bench"
    generation: int = 0
    pipeline_generation: int = 0
    items: list[Output] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def can_take_work(self) -> bool:
        return True

    def wants_chunk_pcm(self) -> bool:
        return False

    def deliver(self, generation: int, items: list[Output]) -> None:
        self.items.extend(items)
        if any(isinstance(i, UtteranceDone) for i in items):
            self.done.set()


@dataclass
class Chunk:
    text: str
    start_s: float = 0.0  # output time of the frame SegmentStart precedes
    words: list[tuple[int, int, float, float]] = field(default_factory=list)  # absolute
    estimated: bool = False
    offset_s: float = 0.0
    audio_s: float = 0.0  # the chunk's audio


async def speak(engine: PiperEngine, speed: float) -> tuple[npt.NDArray[np.float32], list[Chunk]]:
    owner = Owner(AudioPipeline(engine.sample_rate, RawFloat(RATE)))
    worker = EngineWorker(engine, threads=1)
    worker.start()
    for i, (text, _) in enumerate(SENTENCES):
        worker.submit(
            Job(
                owner,
                0,
                "chunk",
                text=text,
                voice=DEFAULT_VOICE,
                speed=speed,
                index=i,
                timings=True,
            )
        )
    worker.submit(Job(owner, 0, "end"))
    await asyncio.wait_for(owner.done.wait(), 300)
    await worker.stop()
    chunks = [Chunk(text) for text, _ in SENTENCES]
    frames = 0
    for it in owner.items:
        if isinstance(it, bytes):
            frames += 1
        elif isinstance(it, SegmentStart):
            chunks[it.index].start_s = frames * FRAME_MS / 1000
        elif isinstance(it, ChunkTimings):
            c = chunks[it.index]
            base = c.start_s + it.offset_s
            c.words += [(w.start, w.end, base + w.t0, base + w.t1) for w in it.words]
            c.estimated |= it.estimated
            c.offset_s = it.offset_s
        elif isinstance(it, ChunkDone):
            chunks[it.index].audio_s = it.audio_s
    audio = np.frombuffer(b"".join(i for i in owner.items if isinstance(i, bytes)), dtype="<f4")
    return audio, chunks


def reference(
    audio: npt.NDArray[np.float32], text: str, spoken: dict[str, str]
) -> list[float] | None:
    """Pocketsphinx's start of each text word (seconds into ``audio``), or None when it
    could not align the sentence."""
    from pocketsphinx import Decoder

    tw = text_words(text)
    said = [spoken.get(text[w.start : w.end], text[w.start : w.end]).lower().split() for w in tw]
    d = Decoder(samprate=RATE, loglevel="FATAL")
    d.set_align_text(" ".join(" ".join(s) for s in said))
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    d.start_utt()
    d.process_raw(pcm, full_utt=True)
    d.end_utt()
    segs = [(s.word, s.start_frame / 100) for s in d.seg() if re.match(r"[a-z']", s.word)]
    if len(segs) != sum(len(s) for s in said):
        return None
    starts, k = [], 0
    for s in said:
        starts.append(segs[k][1])
        k += len(s)
    return starts


def stats(deltas_ms: list[float]) -> dict[str, float]:
    a = np.abs(np.asarray(deltas_ms))
    return {
        "words": len(deltas_ms),
        "mean_abs_ms": round(float(a.mean()), 1),
        "median_abs_ms": round(float(np.median(a)), 1),
        "p90_abs_ms": round(float(np.percentile(a, 90)), 1),
        "signed_mean_ms": round(statistics.fmean(deltas_ms), 1),
    }


def run(speed: float, engine: PiperEngine, rounds: int) -> dict[str, object]:
    """Every sentence ``rounds`` times (Piper samples its noise: each take differs)."""
    deltas: list[list[float]] = [[] for _ in SENTENCES]
    naive: list[float] = []  # the words spread over the chunk's audio by their length
    problems: list[list[str]] = [[] for _ in SENTENCES]
    estimated = 0
    for _ in range(rounds):
        audio, chunks = asyncio.run(speak(engine, speed))
        ends = [c.start_s for c in chunks[1:]] + [len(audio) / RATE]
        for i, (c, end, (text, spoken)) in enumerate(zip(chunks, ends, SENTENCES, strict=True)):
            estimated += c.estimated
            if [(w[0], w[1]) for w in c.words] != [(w.start, w.end) for w in text_words(text)]:
                problems[i].append("our words do not cover the text's words in order")
                continue
            ref = reference(audio[int(c.start_s * RATE) : int(end * RATE)], text, spoken)
            if ref is None:
                problems[i].append("pocketsphinx could not align it")
                continue
            ours = [w[2] - c.start_s for w in c.words]
            # Not the first word: pocketsphinx puts the chunk's leading silence into it.
            deltas[i] += [(o - r) * 1000 for o, r in zip(ours[1:], ref[1:], strict=True)]
            guess = _naive(text, c.offset_s, c.audio_s)
            naive += [(g - r) * 1000 for g, r in zip(guess[1:], ref[1:], strict=True)]
    rows = [
        {"sentence": i, "text": text, "problems": problems[i], **(stats(d) if d else {})}
        for i, ((text, _), d) in enumerate(zip(SENTENCES, deltas, strict=True))
    ]
    every = [x for d in deltas for x in d]
    return {
        "speed": speed,
        "rounds": rounds,
        "estimated_chunks": estimated,
        "sentences": rows,
        "all": stats(every) if every else {},
        "naive_spread": stats(naive) if naive else {},
    }


def _naive(text: str, offset_s: float, audio_s: float) -> list[float]:
    """What a server without alignments could say: word starts spread over the chunk's
    audio by character count."""
    tw = text_words(text)
    total = sum(w.end - w.start for w in tw) or 1
    starts, at = [], 0
    for w in tw:
        starts.append(offset_s + audio_s * at / total)
        at += w.end - w.start
    return starts


def table(result: dict[str, object]) -> str:
    lines = [
        f"speed {result['speed']}, {result['rounds']} rounds",
        "| # | words | mean abs Δstart ms | median | p90 | signed mean | text |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = result["sentences"]
    assert isinstance(rows, list)
    total = result["all"]
    assert isinstance(total, dict)
    for r in [*rows, {"sentence": "all", "text": "", **total}]:
        text = str(r["text"])
        short = text if len(text) <= 40 else text[:37] + "..."
        if "words" not in r:
            lines.append(f"| {r['sentence']} | - | {'; '.join(r['problems'])} | | | | {short} |")
            continue
        lines.append(
            f"| {r['sentence']} | {r['words']} | {r['mean_abs_ms']} | {r['median_abs_ms']} | "
            f"{r['p90_abs_ms']} | {r['signed_mean_ms']} | {short} |"
        )
    n = result["naive_spread"]
    assert isinstance(n, dict)
    if n:
        lines.append(
            f"| naive | {n['words']} | {n['mean_abs_ms']} | {n['median_abs_ms']} | "
            f"{n['p90_abs_ms']} | {n['signed_mean_ms']} | spread by characters, no alignment |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--speed", type=float, action="append", help="speeds (default 1.0 and 1.5)")
    ap.add_argument("--rounds", type=int, default=3, help="takes of each sentence")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/timings_accuracy.json")
    args = ap.parse_args()
    engine = PiperEngine()
    engine.load()
    results = [run(s, engine, args.rounds) for s in args.speed or [1.0, 1.5]]
    for r in results:
        print(table(r), end="\n\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": platform.platform(),
        "voice": DEFAULT_VOICE,
        "output_rate": RATE,
        "reference": "pocketsphinx forced alignment (set_align_text), bundled en-us model",
        "runs": results,
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
