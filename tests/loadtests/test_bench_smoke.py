"""Every benchmark, run tiny through ``voxwire bench NAME --smoke``: the tools keep
working and write well-formed JSON, Markdown and plots with sane numbers. These are
not performance tests: no figure is held to a goal here."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import TypeVar

import msgspec
import numpy as np
import pytest

from loadtests import bench, loadgen
from tests.support import ROOT

T = TypeVar("T")


def _run(name: str, out: Path, *extra: str) -> bench.Result:
    proc = subprocess.run(
        [sys.executable, "-m", "server", "bench", name, "--smoke", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"## {name} (smoke)" in proc.stdout  # the table is printed too
    res = msgspec.json.decode((out / f"{name}.json").read_bytes(), type=bench.Result)
    assert res.kind == name and res.opts.smoke
    m = res.machine
    assert m.cores >= 1 and m.cpu_model and m.python.startswith("3.")
    assert m.packages["numpy"] != "absent" and m.packages["voxwire"] != "absent"
    md = (out / f"{name}.md").read_text()
    assert md.startswith(f"## {name} (smoke)") and "|---|" in md
    for g in res.goals:
        assert g.met is None or isinstance(g.met, bool)
    return res


def _as(res: bench.Result, typ: type[T]) -> T:
    return msgspec.convert(res.results, typ)


def _png(path: Path) -> None:
    import matplotlib.image

    img = matplotlib.image.imread(path)  # matplotlib's own PNG reader
    assert img.shape[0] > 100 and img.shape[1] > 100
    assert float(np.std(img)) > 0.01  # not a blank canvas


def _sane_step(s: loadgen.StepResult) -> None:
    assert s.sessions_failed == 0 and not s.errors, s
    assert s.turns >= 1 and s.frames > 0 and s.audio_s > 0
    for v in (*s.ttfa_ms.values(), *s.lateness_ms.values()):
        assert v is not None and math.isfinite(v)
    assert 0 < (s.ttfa_ms["p50"] or 0) < 5000
    assert s.lateness_ms["p50"] is not None and s.lateness_ms["p50"] < 0  # frames come early
    assert 0 <= s.server_cpu < 64 and s.server_rss_mib is not None and s.server_rss_mib > 50


def test_codec(tmp_path: Path) -> None:
    c = _as(_run("codec", tmp_path), bench.CodecResult)
    assert (c.sample_rate, c.frame_ms, c.complexity) == (24000, 20, 5)
    # libopus encodes speech many times faster than real time on any CPU
    assert 5 < c.single_xrt < 10000 and 5 < c.interleaved_xrt < 10000
    assert c.limit_per_core == c.interleaved_xrt


def test_capacity(tmp_path: Path) -> None:
    res = _run("capacity", tmp_path)
    c = _as(res, bench.CapacityResult)
    assert c.codec.limit_per_core > 5 and c.codec_limit >= c.codec.limit_per_core
    assert [s.sessions for s in c.steps if s.passed] == sorted(
        s.sessions for s in c.steps if s.passed
    )
    for s in c.steps:
        _sane_step(s)
    assert c.capacity is not None and c.ratio == round(c.capacity / c.codec_limit, 3)
    assert [g.name for g in res.goals] == ["capacity / codec limit"]
    _png(tmp_path / "capacity.png")


def test_ttfa(tmp_path: Path) -> None:
    t = _as(_run("ttfa", tmp_path), bench.TtfaResult)
    assert [a.sessions for a in t.at] == [1, 3]
    for a in t.at:
        _sane_step(a.step)
        assert a.turns == a.step.turns
        eng, over, raw = a.engine_first_ms["p50"], a.overhead_ms["p50"], a.ttfa_ms["p50"]
        assert eng is not None and over is not None and raw is not None
        assert 0 <= eng < 100  # the replay engine returns its audio at once
        assert -1 < over < raw  # overhead = TTFA minus the engine's own part


def test_e2e(tmp_path: Path) -> None:
    res = _run("e2e", tmp_path)
    e = _as(res, bench.E2eResult)
    _sane_step(e.step)
    assert e.turns == 2 and all(6 <= w <= 10 for w in e.first_sentence_words)
    assert e.piper_direct_ms["p50"] is not None and e.piper_direct_ms["p50"] > 5
    assert e.ratio_p50 is not None and 0.2 < e.ratio_p50 < 20
    h = e.http
    assert h.paragraph_words > 30 and h.reps == 1
    assert 0 < h.ours_first_ms <= h.ours_total_ms and 0 < h.http_first_ms <= h.http_total_ms
    # (the ratio is of the unrounded times; the fields are rounded to 0.1 ms)
    assert h.total_ratio == pytest.approx(h.ours_total_ms / h.http_total_ms, abs=0.002)
    assert 0 < h.ours_pcm_first_ms <= h.ours_pcm_total_ms
    assert h.total_ratio_pcm == pytest.approx(h.ours_pcm_total_ms / h.http_total_ms, abs=0.002)
    assert len(res.goals) == 5


def test_memory(tmp_path: Path) -> None:
    res = _run("memory", tmp_path)
    m = _as(res, bench.MemoryResult)
    assert m.idle_sessions == 3 and m.active_sessions == 2
    assert 50 < m.idle_baseline_mib < 4096 and 50 < m.active_peak_mib < 4096
    assert m.active_peak_mib >= m.active_baseline_mib
    _sane_step(m.active_step)
    s = m.soak
    _sane_step(s.step)
    assert s.step.sessions_run >= s.sessions
    assert len(s.samples) >= 4 and all(p.rss_mib > 50 for p in s.samples)
    assert [p.t_s for p in s.samples] == sorted(p.t_s for p in s.samples)
    assert math.isfinite(s.slope_mib_per_min)
    _png(tmp_path / "memory.png")


def test_resume(tmp_path: Path) -> None:
    res = _run("resume", tmp_path)
    r = _as(res, bench.ResumeResult)
    assert [m.mode for m in r.modes] == ["off", "memory", "redis"]
    for m in r.modes:
        _sane_step(m.ttfa.step)
        assert m.ttfa.overhead_ms["p50"] is not None
    assert r.modes[0].takeovers == 0
    for m in r.modes[1:]:  # every resume got its first replayed frame back
        p50 = m.takeover_first_frame_ms["p50"]
        assert m.takeovers >= 1 and p50 is not None and 0 < p50 < 5000
    assert [g.name for g in res.goals] == [
        "TTFA overhead p50 added by the memory journal",
        "TTFA overhead p50 added by the redis journal",
    ]


def test_isolation_smoke(tmp_path: Path) -> None:
    from loadtests.bench_isolation import IsolationResult

    res = _as(_run("isolation", tmp_path), IsolationResult)
    assert [m.mode for m in res.modes] == ["thread", "process"]
    for m in res.modes:
        assert m.turns >= 1 and m.audio_s > 0 and m.cpu_s > 0
        assert 0 < m.ttfa_p50_ms <= m.flushed_p50_ms
    assert res.cpu_ratio > 0
    # the engine processes are counted: more processes, more resident memory
    assert res.modes[1].rss_mb > res.modes[0].rss_mb


def test_dialects_smoke(tmp_path: Path) -> None:
    from loadtests.bench_dialects import DialectsResult

    res = _as(_run("dialects", tmp_path), DialectsResult)
    assert [r.protocol for r in res.protocols] == ["native", "elevenlabs", "deepgram", "cartesia"]
    for r in res.protocols:
        assert r.turns >= 1 and 0 < r.ttfa_p50_ms <= r.done_p50_ms
    assert res.protocols[0].ttfa_p50_minus_native_ms == 0


def test_rtp_smoke(tmp_path: Path) -> None:
    from loadtests.bench_rtp import RtpBenchResult

    res = _as(_run("rtp", tmp_path), RtpBenchResult)
    assert [(r.mode, r.streams) for r in res.rows] == [
        (m, n) for n in (1, 4) for m in ("rtp", "ws paced", "ws unpaced")
    ]
    for r in res.rows:
        assert r.audio_s > 2 and r.cpu_ms_per_audio_s > 0
        if r.mode != "ws unpaced":  # paced: the stream takes its own length in real time
            assert r.wall_s > r.audio_s - 1 and r.jitter_p99_ms is not None
    assert res.cpu_paced_over_unpaced > 0


def test_bursts_smoke(tmp_path: Path) -> None:
    from loadtests.bench_bursts import BURST, BurstsResult

    res = _as(_run("bursts", tmp_path), BurstsResult)
    assert res.cores >= 1 and len(res.configs) == 3
    for r in res.configs:
        assert r.burst_sessions == 2 * BURST and r.lone_turns >= 2  # two alternations
        assert r.lone_p50_ms > 0 and 0 < r.burst_p50_ms <= r.burst_p99_ms <= r.burst_max_ms
        assert r.ratio_p99_to_lone_p50 == round(r.burst_p99_ms / r.lone_p50_ms, 2)
    from server.config import Settings

    assert res.configs[0].engine_threads == res.configs[1].engine_threads == res.cores
    assert res.configs[2].engine_threads == Settings().engines()


def test_profile_smoke(tmp_path: Path) -> None:
    from loadtests.bench_profile import ProfileResult

    res = _as(_run("profile", tmp_path), ProfileResult)
    names = {t.thread for t in res.threads}
    assert "MainThread" in names and any(n.startswith("engine-replay") for n in names)
    engine = next(t for t in res.threads if t.thread.startswith("engine-replay"))
    # the encoder is where the engine thread's work is
    assert any("OpusEncoder.encode" in f.function for f in engine.top_self)
    assert (tmp_path / "profile.raw.txt").stat().st_size > 0


def test_piper_batch_script(tmp_path: Path) -> None:
    """bench/piper_batch.py (the evidence behind the bursts goal's floor) runs and
    times both cuts both ways."""
    out = tmp_path / "piper_batch.json"
    proc = subprocess.run(
        [sys.executable, "bench/piper_batch.py", "--rounds", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = msgspec.json.decode(out.read_bytes())["medians_ms"]
    assert set(rows) == {"whole sentences", "hurried first chunks (five words)"}
    for r in rows.values():
        assert 0 < r["lone"] < r["ten calls"] and r["one call of ten"] > r["lone"]
    # five words take less than a whole sentence
    assert rows["hurried first chunks (five words)"]["lone"] < rows["whole sentences"]["lone"]
    assert "| ten / one alone |" in proc.stdout


def test_paragraph_ab_script(tmp_path: Path) -> None:
    """bench/paragraph_ab.py (the paragraph's total time, several servers against
    Piper's HTTP server in one run) runs two servers and Piper's and writes each row."""
    out = tmp_path / "paragraph_ab.json"
    proc = subprocess.run(
        [
            sys.executable,
            "bench/paragraph_ab.py",
            "now",
            "every-cpu-each=engine_busy_threads=0",
            "--rounds",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = msgspec.json.decode(out.read_bytes())
    assert res["words"] == 54 and res["output"] == "pcm"
    other = res["servers"]["every-cpu-each"]
    assert other["tree"] is None and other["settings"] == {"engine_busy_threads": "0"}
    assert len(other["commit"].rstrip("+")) >= 7
    rows = res["rows"]
    assert set(rows) == {"now", "every-cpu-each", "piper http"}
    for r in rows.values():
        assert 0 < r["first_ms"] <= r["total_ms"] and r["median_round_ratio"] > 0
    # voxwire streams: its first audio comes long before Piper's server's only answer
    assert rows["now"]["first_ms"] < rows["piper http"]["first_ms"]
    assert "| / Piper HTTP (median of rounds) |" in proc.stdout
    assert "| piper http |" in out.with_suffix(".md").read_text()
