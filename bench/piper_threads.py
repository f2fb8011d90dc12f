"""How Piper's speed and CPU depend on onnxruntime's threads and their spinning: the
evidence behind ``engine_process_threads`` (0 = every CPU) and the never-spinning
sessions of server/engines/piper_session.py.

The bundled voice, loaded once per way of running it, in this process; the ways take
turns, a paragraph (54 words, bench e2e's) and a first sentence each round, so drift
on a shared machine hits all alike. Wall time and this process's CPU time, medians.

    .venv/bin/python bench/piper_threads.py [--rounds 8] [--out bench/results/piper_threads.json]
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

from loadtests import textgen
from server.engines.piper_session import cpu_session
from server.engines.piper_voices import bundled

FIRST = "Your table for four is booked for tonight at eight."


def _voice(model: Path, config: Path, threads: int | None, spin: bool) -> Any:
    from piper import PiperVoice
    from piper.config import PiperConfig

    if threads is None:  # Piper's own: onnxruntime's defaults
        return PiperVoice.load(model, config_path=config)
    session = cpu_session(model, threads)
    if spin:  # the same session, spinning allowed (onnxruntime's default)
        import onnxruntime  # type: ignore[import-untyped]

        opts = session.get_session_options()
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
        session = onnxruntime.InferenceSession(
            str(model), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    with open(config, encoding="utf-8") as f:
        return PiperVoice(session=session, config=PiperConfig.from_dict(json.load(f)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--out", default="bench/results/piper_threads.json")
    args = ap.parse_args()
    f = bundled()
    model, config = Path(f.model), Path(f.config)
    cpus = len(os.sched_getaffinity(0))
    para = textgen.paragraph(np.random.default_rng(7), 5)
    ways = {
        "Piper's own (onnxruntime defaults: a thread per core, spinning)": (None, True),
        f"{cpus} threads, spinning": (cpus, True),
        f"{cpus} threads, never spinning (voxwire's default)": (cpus, False),
        "1 thread, never spinning": (1, False),
    }
    voices = {name: _voice(model, config, t, spin) for name, (t, spin) in ways.items()}
    for v in voices.values():
        list(v.synthesize("Warm up."))
    runs: dict[str, dict[str, list[float]]] = {
        n: {"para": [], "cpu": [], "first": []} for n in ways
    }
    for _ in range(args.rounds):
        for name, v in voices.items():
            c0, t0 = time.process_time(), time.perf_counter()
            list(v.synthesize(para))
            runs[name]["para"].append(time.perf_counter() - t0)
            runs[name]["cpu"].append(time.process_time() - c0)
            t0 = time.perf_counter()
            list(v.synthesize(FIRST))
            runs[name]["first"].append(time.perf_counter() - t0)
    rows = {
        name: {k: round(statistics.median(xs) * 1000, 1) for k, xs in r.items()}
        for name, r in runs.items()
    }
    print(f"{len(para.split())}-word paragraph and a first sentence, {args.rounds} rounds, "
          f"{cpus} CPUs, load {os.getloadavg()[0]:.2f}")  # fmt: skip
    print("| way | paragraph ms | its CPU ms | first sentence ms |\n|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['para']} | {r['cpu']} | {r['first']} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"cpus": cpus, "rounds": args.rounds, "medians_ms": rows}, indent=1) + "\n"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
