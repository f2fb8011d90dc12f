"""F5 benchmark: time to first audio and real-time factor per stream, at 1, 2, 4, 8, 16
concurrent sessions, with batching off (``f5_max_batch=1``) and on.

It runs a real server on a random-weight checkpoint built with f5-tts's own classes
(``server.engines.f5.random_model``; the work per generation does not depend on the
weights' values, so timings are true for the architecture) and real WebSocket clients:

- ``--arch tiny``: a 0.2 M-parameter DiT, for the CPU (the plumbing and the batching
  gain, not F5's speed);
- ``--arch mid``: a 6-layer, 256-wide DiT (about 8 M parameters);
- ``--arch F5TTS_v1_Base``: the full-size v1 architecture (336 M), for a GPU.

Each session sends one paragraph at once, then ``end``. Per session: time to first
audio (text sent → first audio frame received), audio seconds, and its RTF (text sent
→ last frame, over its audio seconds: the share of real time a stream's generation
takes when it competes with the others). Printed as a table and written as JSON, with
the machine and device description, under bench/results/.

    python -m loadtests.bench_f5 --arch tiny --cpu-threads 1
    python -m loadtests.bench_f5 --arch F5TTS_v1_Base --nfe 16     # on a GPU

Goals on an H100-class GPU (the issue's): TTFA p50 ≤ 250 ms and RTF ≤ 0.03 per stream
at 8 concurrent streams. This script measures; it does not assert.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import websockets

from loadtests.machine import ROOT, describe
from loadtests.serverproc import VoxwireServer

PARAGRAPH = (
    "The lighthouse keeper climbed the stairs every evening at dusk. From the top he "
    "could see the fishing boats coming home, one after another, their lamps swinging "
    "in the dark. He counted them, wrote the number in his book, and lit the great lamp."
)
MID_ARCH = {"dim": 256, "depth": 6, "heads": 4, "dim_head": 64, "text_dim": 128}


class SessionResult(msgspec.Struct):
    ttfa_s: float
    audio_s: float
    wall_s: float
    rtf: float


class LevelResult(msgspec.Struct):
    batching: bool
    sessions: int
    ttfa_p50_ms: float
    ttfa_p90_ms: float
    rtf_p50: float
    rtf_p90: float
    audio_s_per_s: float  # all streams' audio produced per second of wall time
    mean_batch: float  # pieces per forward pass during this level
    samples: list[SessionResult]


def _pct(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def _session(url: str, text: str, voice: str) -> SessionResult:
    async with websockets.connect(url, max_size=None, open_timeout=60) as ws:
        await ws.send(json.dumps({"type": "start", "engine": "f5", "voice": voice}))
        while True:
            msg = await ws.recv()
            if isinstance(msg, str) and json.loads(msg)["type"] == "ready":
                break
        t0 = time.perf_counter()
        await ws.send(json.dumps({"type": "text", "text": text}))
        await ws.send(json.dumps({"type": "end"}))
        first: float | None = None
        last = t0
        frames = 0
        frame_s = 0.02
        async for msg in ws:
            if isinstance(msg, bytes):
                last = time.perf_counter()
                first = first if first is not None else last
                frames += 1
            elif json.loads(msg)["type"] == "error":
                raise RuntimeError(msg)
    audio_s = frames * frame_s
    if first is None or audio_s == 0:
        raise RuntimeError("no audio")
    return SessionResult(
        ttfa_s=first - t0, audio_s=audio_s, wall_s=last - t0, rtf=(last - t0) / audio_s
    )


def _batch_stats(srv: VoxwireServer) -> tuple[float, float]:
    return srv.metric("voxwire_f5_batch_size_sum"), srv.metric("voxwire_f5_batch_size_count")


async def _level(srv: VoxwireServer, n: int, rounds: int, voice: str) -> list[SessionResult]:
    out: list[SessionResult] = []
    for _ in range(rounds):
        out += await asyncio.gather(*(_session(srv.ws_url, PARAGRAPH, voice) for _ in range(n)))
    return out


def build_model(arch: str, root: Path) -> dict[str, Any]:
    """Random-weight checkpoint + Vocos on disk; the server settings that load them."""
    from server.engines.f5.random_model import (
        FULL_VOCOS,
        TINY_ARCH,
        TINY_VOCOS,
        write_checkpoint,
        write_vocos,
    )

    if arch == "tiny":
        ckpt = write_checkpoint(root / "model", "tiny")
        vocos = write_vocos(root / "vocos", TINY_VOCOS)
    elif arch == "mid":
        ckpt = write_checkpoint(root / "model", dict(TINY_ARCH, **MID_ARCH))
        vocos = write_vocos(root / "vocos", FULL_VOCOS)
    else:
        ckpt = write_checkpoint(root / "model", arch)
        vocos = write_vocos(root / "vocos", FULL_VOCOS)
    return {
        "f5_checkpoint": ckpt,
        "f5_model_config": ckpt.parent / "model.yaml",
        "f5_vocos": vocos,
        "f5_offline": True,
    }


def _device(srv: VoxwireServer) -> dict[str, Any]:
    loaded = srv.log_events("f5_model_loaded")
    info: dict[str, Any] = dict(loaded[0]) if loaded else {}
    for k in ("event", "timestamp", "level", "logger"):
        info.pop(k, None)
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    return info


def run(args: argparse.Namespace) -> dict[str, Any]:
    levels = [int(x) for x in args.levels.split(",")]
    results: list[LevelResult] = []
    device: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="voxwire-f5-bench-") as tmp:
        settings = build_model(args.arch, Path(tmp))
        settings.update(
            f5_enabled=True,
            f5_nfe_steps=args.nfe,
            f5_device=args.device,
            f5_cpu_threads=args.cpu_threads,
            f5_languages="en",
            max_sessions=max(levels) * 2 + 4,
        )
        for batching in (False, True):
            srv = VoxwireServer(f5_max_batch=max(levels) if batching else 1, **settings)
            try:
                srv.wait_ready(timeout=args.load_timeout)
                device = device or _device(srv)
                asyncio.run(_level(srv, 1, 1, args.voice))  # warm the shapes up
                for n in levels:
                    s0, c0 = _batch_stats(srv)
                    t0 = time.perf_counter()
                    samples = asyncio.run(_level(srv, n, args.rounds, args.voice))
                    wall = time.perf_counter() - t0
                    s1, c1 = _batch_stats(srv)
                    ttfa = [x.ttfa_s * 1000 for x in samples]
                    rtf = [x.rtf for x in samples]
                    res = LevelResult(
                        batching=batching,
                        sessions=n,
                        ttfa_p50_ms=round(statistics.median(ttfa), 1),
                        ttfa_p90_ms=round(_pct(ttfa, 0.9), 1),
                        rtf_p50=round(statistics.median(rtf), 4),
                        rtf_p90=round(_pct(rtf, 0.9), 4),
                        audio_s_per_s=round(sum(x.audio_s for x in samples) / wall, 3),
                        mean_batch=round((s1 - s0) / max(1.0, c1 - c0), 2),
                        samples=samples,
                    )
                    results.append(res)
                    print(_row(res), flush=True)
            finally:
                srv.stop()
    return {
        "kind": "f5",
        "machine": msgspec.to_builtins(describe()),
        "device": device,
        "model": {"arch": args.arch, "nfe_steps": args.nfe, "voice": args.voice},
        "text_chars": len(PARAGRAPH),
        "rounds": args.rounds,
        "results": msgspec.to_builtins(results),
    }


_HEADER = (
    "| batching | sessions | TTFA p50 ms | TTFA p90 ms | RTF/stream p50 | RTF p90 "
    "| audio s per s | pieces/pass |\n|---|---|---|---|---|---|---|---|"
)


def _row(r: LevelResult) -> str:
    return (
        f"| {'on' if r.batching else 'off'} | {r.sessions} | {r.ttfa_p50_ms:.0f} | "
        f"{r.ttfa_p90_ms:.0f} | {r.rtf_p50:.3f} | {r.rtf_p90:.3f} | {r.audio_s_per_s:.2f} | "
        f"{r.mean_batch:.2f} |"
    )


def table(report: dict[str, Any]) -> str:
    rows = [_row(msgspec.convert(r, LevelResult)) for r in report["results"]]
    return "\n".join([_HEADER, *rows])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--arch", default="tiny", help="tiny | mid | an f5-tts config name")
    p.add_argument("--nfe", type=int, default=16, help="ODE steps per generation")
    p.add_argument("--levels", default="1,2,4,8,16", help="concurrent sessions to try")
    p.add_argument("--rounds", type=int, default=2, help="rounds of sessions per level")
    p.add_argument("--device", default="auto")
    p.add_argument("--cpu-threads", type=int, default=0)
    p.add_argument("--voice", default="f5_basic_en")
    p.add_argument("--load-timeout", type=float, default=600.0)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args(argv)
    print(_HEADER, flush=True)
    report = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    where = "gpu" if report["device"].get("gpu") else "cpu"
    path = args.out / f"f5-{args.arch}-{where}-{stamp}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"\ndevice: {report['device'].get('gpu') or report['machine']['cpu_model']}")
    eight = [r for r in report["results"] if r["sessions"] == 8 and r["batching"]]
    if eight:
        r = eight[0]
        print(
            f"8 streams, batching on: TTFA p50 {r['ttfa_p50_ms']:.0f} ms (goal ≤ 250 on an "
            f"H100), RTF p50 {r['rtf_p50']:.3f} (goal ≤ 0.03)"
        )
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
