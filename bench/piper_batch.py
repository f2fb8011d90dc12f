"""Whether ten first chunks made in one onnxruntime call beat ten calls: the evidence
behind the bursts goal's floor (BENCHMARKS.md, issue 15).

Bench bursts' ten first sentences, whole and cut as the chunker cuts them when its
engine is saturated (the first five words), through the bundled voice's model on the
session voxwire gives an engine process (every usable CPU, up to 4, never spinning):
one ``session.run`` per chunk, or all ten in one padded batch. Piper's own
phonemization and scales; the ways take turns each round, medians over the rounds.

    .venv/bin/python bench/piper_batch.py [--rounds 5] [--out bench/results/piper_batch.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.hurry_prosody import chunks
from loadtests.bench_bursts import SENTENCES
from server.cpus import MAX_PROCESS_THREADS, usable_cpus
from server.engines.piper_session import load_voice
from server.engines.piper_voices import bundled


def _ids(voice: Any, text: str) -> list[int]:
    ids: list[int] = []
    for sentence in voice.phonemize(text):
        ids.extend(voice.phonemes_to_ids(sentence))
    return ids


def _run(voice: Any, batch: list[list[int]]) -> float:
    """One call for ``batch`` (padded to its longest); its wall time."""
    cfg = voice.config
    x = np.zeros((len(batch), max(len(i) for i in batch)), dtype=np.int64)
    for row, ids in enumerate(batch):
        x[row, : len(ids)] = ids
    args = {
        "input": x,
        "input_lengths": np.array([len(i) for i in batch], dtype=np.int64),
        "scales": np.array([cfg.noise_scale, cfg.length_scale, cfg.noise_w_scale], np.float32),
    }
    t0 = time.perf_counter()
    voice.session.run(None, args)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="bench/results/piper_batch.json")
    args = ap.parse_args()
    f = bundled()
    threads = min(usable_cpus(), MAX_PROCESS_THREADS)
    voice = load_voice(Path(f.model), Path(f.config), threads)
    cuts = {
        "whole sentences": [_ids(voice, s) for s in SENTENCES],
        "hurried first chunks (five words)": [
            _ids(voice, chunks(s, hurry=True)[0]) for s in SENTENCES
        ],
    }
    for ids in cuts.values():  # warm both shapes
        _run(voice, ids)
        _run(voice, ids[:1])
    times: dict[str, dict[str, list[float]]] = {
        c: {"lone": [], "ten calls": [], "one call of ten": []} for c in cuts
    }
    for _ in range(args.rounds):
        for cut, ids in cuts.items():
            t = times[cut]
            t["lone"].append(_run(voice, ids[:1]))
            t["ten calls"].append(sum(_run(voice, [i]) for i in ids))
            t["one call of ten"].append(_run(voice, ids))
    rows = {
        cut: {way: round(statistics.median(xs) * 1000, 1) for way, xs in t.items()}
        for cut, t in times.items()
    }
    print(f"ten first chunks, {args.rounds} rounds, {threads} threads, "
          f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
    print("| chunks | one alone ms | ten calls ms | one call of ten ms | ten / one alone |")
    print("|---|---|---|---|---|")
    for cut, r in rows.items():
        best = min(r["ten calls"], r["one call of ten"])
        print(f"| {cut} | {r['lone']} | {r['ten calls']} | {r['one call of ten']} | "
              f"{best / r['lone']:.1f} |")  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"threads": threads, "rounds": args.rounds, "medians_ms": rows}, indent=1) + "\n"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
