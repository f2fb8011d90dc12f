"""What a hurried first chunk costs and saves (``chunk_hurry_words``): each of bench
bursts' ten first sentences made by Piper whole, and made as voxwire makes it while its
engine is saturated (the chunker's cut after five words, then the rest), in this
process on the bundled voice with Piper's noise off (the same audio every run).

Per sentence, medians over the rounds: the time Piper takes for the first chunk (what a
waiting listener waits for), and for all of it; the audio's length, the longest pause
inside it (10 ms windows under -40 dBFS, the leading and trailing silence left out),
and the words the offline recognizer hears (pocketsphinx's bundled US English model).

    .venv/bin/python bench/hurry_prosody.py [--rounds 5] [--out bench/results/hurry_prosody.json]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests.bench_bursts import SENTENCES
from server.engines.base import EngineOptions
from server.engines.piper import DEFAULT_VOICE, PiperEngine
from server.streaming.chunker import SentenceChunker

QUIET = 10 ** (-40 / 20)  # -40 dBFS


def chunks(text: str, hurry: bool) -> list[str]:
    c = SentenceChunker()
    c.hurry = hurry
    return c.push(text) + c.flush()


def make(engine: PiperEngine, text: str) -> tuple[np.ndarray, float]:
    opts = EngineOptions(noise_scale=0.0, noise_w=0.0)
    t0 = time.perf_counter()
    audio = np.concatenate(list(engine.synthesize(text, DEFAULT_VOICE, 1.0, options=opts)))
    return audio, time.perf_counter() - t0


def longest_pause_s(x: np.ndarray, rate: int) -> float:
    n = rate // 100
    windows = x[: len(x) // n * n].reshape(-1, n)
    loud = np.sqrt((windows**2).mean(axis=1)) >= QUIET
    idx = np.flatnonzero(loud)
    if len(idx) == 0:
        return 0.0
    inner = loud[idx[0] : idx[-1] + 1]
    best = run = 0
    for v in inner:
        run = 0 if v else run + 1
        best = max(best, run)
    return best / 100


def recall(reference: str, audio: np.ndarray, rate: int) -> float:
    import soxr
    from pocketsphinx import Decoder

    pcm = (np.clip(soxr.resample(audio, rate, 16000), -1, 1) * 32767).astype("<i2")
    d = Decoder(samprate=16000, loglevel="FATAL")
    d.start_utt()
    d.process_raw(pcm.tobytes(), full_utt=True)
    d.end_utt()
    hyp = d.hyp()
    heard = re.findall(r"[a-z']+", (hyp.hypstr if hyp else "").lower())
    ref = re.findall(r"[a-z']+", reference.lower())
    pool = {w: heard.count(w) for w in heard}
    hit = 0
    for w in ref:
        if pool.get(w, 0) > 0:
            pool[w] -= 1
            hit += 1
    return hit / len(ref)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("bench/results/hurry_prosody.json"))
    a = ap.parse_args()
    engine = PiperEngine()
    engine.load()
    rate = engine.sample_rate
    make(engine, SENTENCES[0])  # warm
    rows: list[dict[str, Any]] = []
    for sentence in SENTENCES:
        parts = chunks(sentence, hurry=True)
        assert len(parts) == 2, parts
        first_s: list[float] = []
        whole_s: list[float] = []
        parts_s: list[float] = []
        for _ in range(a.rounds):  # the ways take turns
            whole, t = make(engine, sentence)
            whole_s.append(t)
            pieces = []
            total = 0.0
            for i, part in enumerate(parts):
                audio, t = make(engine, part)
                pieces.append(audio)
                total += t
                if i == 0:
                    first_s.append(t)
            parts_s.append(total)
        cut = np.concatenate(pieces)
        rows.append(
            {
                "sentence": sentence,
                "first_chunk": parts[0],
                "whole_ms": round(statistics.median(whole_s) * 1000, 1),
                "first_chunk_ms": round(statistics.median(first_s) * 1000, 1),
                "both_chunks_ms": round(statistics.median(parts_s) * 1000, 1),
                "whole_audio_s": round(len(whole) / rate, 2),
                "cut_audio_s": round(len(cut) / rate, 2),
                "whole_pause_s": longest_pause_s(whole, rate),
                "cut_pause_s": longest_pause_s(cut, rate),
                "whole_recall": round(recall(sentence, whole, rate), 2),
                "cut_recall": round(recall(sentence, cut, rate), 2),
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    def med(key: str) -> float:
        return round(float(statistics.median(r[key] for r in rows)), 3)

    summary = {k: med(k) for k in rows[0] if k not in ("sentence", "first_chunk")}
    summary["first_chunk_over_whole"] = round(summary["first_chunk_ms"] / summary["whole_ms"], 2)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"rounds": a.rounds, "rows": rows, "median": summary}, indent=1))
    head = (
        "| sentence (cut after) | whole ms | first chunk ms | both ms | audio s whole / cut "
        "| longest pause s whole / cut | words heard whole / cut |"
    )
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        lines.append(
            f"| {r['first_chunk']} … | {r['whole_ms']} | {r['first_chunk_ms']} | "
            f"{r['both_chunks_ms']} | {r['whole_audio_s']} / {r['cut_audio_s']} | "
            f"{r['whole_pause_s']} / {r['cut_pause_s']} | {r['whole_recall']} / {r['cut_recall']} |"
        )
    s = summary
    lines.append(
        f"| **median** | {s['whole_ms']} | {s['first_chunk_ms']} | {s['both_chunks_ms']} | "
        f"{s['whole_audio_s']} / {s['cut_audio_s']} | {s['whole_pause_s']} / "
        f"{s['cut_pause_s']} | {s['whole_recall']} / {s['cut_recall']} |"
    )
    md = "\n".join(lines) + "\n"
    a.out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
