"""A paragraph's total time on several voxwire servers and Piper's own HTTP server, in
one run: the same-run A/B that ``voxwire bench e2e`` (one server against Piper's) cannot
give (BENCHMARKS.md, issue 15, "The paragraph's total time").

Each server gets the same paragraph at once and an ``end``; the time is from the text's
send to ``done`` (all audio received), and Piper's server's from the POST to its last
byte. The servers and Piper's take turns every round, so a slow moment of the shared
machine falls on all of them; the table gives each server's median and the median of its
per-round ratios to Piper's (the steadier of the two on a noisy machine).

A server is ``NAME`` (this checkout, default settings), ``NAME=SETTING=VALUE,...``
(VOXWIRE_* settings), or ``NAME=tree=PATH[,SETTING=VALUE...]`` (another checkout's
``server`` package, e.g. a ``git worktree`` of the commit before a change):

    .venv/bin/python bench/paragraph_ab.py now old=tree=/tmp/old \\
        every-cpu-each=engine_busy_threads=0 [--rounds 25] [--output pcm|opus] \\
        [--out bench/results/paragraph_ab.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests import textgen
from loadtests.bench import http_paragraph, ours_paragraph, piper_http_server
from loadtests.serverproc import VoxwireServer

# Piper's own output (16-bit PCM at the voice's 22.05 kHz, as its WAV); None: Opus 48 kHz.
_OUTPUTS: dict[str, dict[str, Any] | None] = {
    "pcm": {"encoding": "pcm_s16le", "sample_rate": 22050},
    "opus": None,
}


def server_spec(spec: str) -> tuple[str, Path | None, dict[str, Any]]:
    """``NAME[=tree=PATH][,|=SETTING=VALUE...]`` as (name, tree, settings)."""
    name, _, rest = spec.partition("=")
    tree: Path | None = None
    settings: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise SystemExit(f"server {name!r}: {item!r} is not SETTING=VALUE")
        if key == "tree":
            tree = Path(value).resolve()
        else:
            settings[key] = value
    return name, tree, settings


def _commit(tree: Path | None) -> str:
    """The checkout's commit, ``+`` if its files differ from it."""
    cwd = tree or Path(__file__).resolve().parent.parent
    run = partial(subprocess.run, cwd=cwd, capture_output=True, text=True, check=False)
    head = run(["git", "rev-parse", "--short", "HEAD"]).stdout.strip()
    dirty = run(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
    return head + ("+" if dirty else "")


def table(result: dict[str, Any]) -> str:
    """The run as Markdown: a line on what ran, then a row per server."""
    lines = [
        f"{result['words']}-word paragraph at once, {result['output']}, {result['rounds']} "
        f"rounds, load {result['load_at_start']:.2f} at the start",
        "",
        "| server | first audio ms | all audio ms | / Piper HTTP (medians) | "
        "/ Piper HTTP (median of rounds) |",
        "|---|---|---|---|---|",
    ]
    for name, r in result["rows"].items():
        lines.append(
            f"| {name} | {r['first_ms']} | {r['total_ms']} | {r['ratio_of_medians']:.2f} | "
            f"{r['median_round_ratio']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("servers", nargs="+", help="NAME[=tree=PATH][,SETTING=VALUE...]")
    ap.add_argument("--rounds", type=int, default=25)
    ap.add_argument("--sentences", type=int, default=5, help="of the paragraph (5: 54 words)")
    ap.add_argument("--output", choices=sorted(_OUTPUTS), default="pcm")
    ap.add_argument("--out", default="bench/results/paragraph_ab.json")
    args = ap.parse_args()
    output = _OUTPUTS[args.output]
    para = textgen.paragraph(np.random.default_rng(7), args.sentences)
    specs = [server_spec(s) for s in args.servers]
    servers: dict[str, VoxwireServer] = {}
    http = None
    totals: dict[str, list[float]] = {}
    firsts: dict[str, list[float]] = {}
    try:
        for name, tree, settings in specs:
            servers[name] = VoxwireServer(tree=tree, **settings)
        for srv in servers.values():
            srv.wait_ready()
        http, port = piper_http_server(None)
        load = os.getloadavg()[0]
        http_paragraph(port, para)
        for srv in servers.values():  # warm: first runs allocate
            for _ in range(2):
                asyncio.run(ours_paragraph(srv.ws_url, para, output))
        for _ in range(args.rounds):
            for name, srv in servers.items():
                first, total = asyncio.run(ours_paragraph(srv.ws_url, para, output))
                firsts.setdefault(name, []).append(first)
                totals.setdefault(name, []).append(total)
                time.sleep(0.2)  # the last one's encoding and hand-offs are over
            first, total = http_paragraph(port, para)
            firsts.setdefault("piper http", []).append(first)
            totals.setdefault("piper http", []).append(total)
            time.sleep(0.2)
    finally:
        if http is not None:
            http.stop()
        for srv in servers.values():
            srv.stop()
    theirs = totals["piper http"]
    rows = {
        name: {
            "first_ms": round(statistics.median(firsts[name]) * 1000, 1),
            "total_ms": round(statistics.median(t) * 1000, 1),
            "ratio_of_medians": round(statistics.median(t) / statistics.median(theirs), 3),
            "median_round_ratio": round(
                statistics.median(a / b for a, b in zip(t, theirs, strict=True)), 3
            ),
        }
        for name, t in totals.items()
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    result = {
        "words": len(para.split()),
        "output": args.output,
        "rounds": args.rounds,
        "load_at_start": round(load, 2),
        "servers": {
            n: {"tree": str(t) if t else None, "commit": _commit(t), "settings": s}
            for n, t, s in specs
        },
        "rows": rows,
        "totals_ms": {n: [round(x * 1000, 1) for x in t] for n, t in totals.items()},
    }
    md = table(result)
    print(md, end="")
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    Path(args.out).with_suffix(".md").write_text(md)
    print(f"wrote {args.out} and its .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
