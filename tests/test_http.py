"""Health, engines, voices and Prometheus metrics over real HTTP."""

from __future__ import annotations

import asyncio
import time
import urllib.request

from tests.support import Received, ServerProcess, connect, get_json, recv_until, send


def test_health_engines_voices(server: ServerProcess) -> None:
    assert get_json(server.http + "/health") == (200, {"status": "ok"})
    status, engines = get_json(server.http + "/v1/engines")
    assert status == 200 and engines["default"] == "piper"
    (piper,) = engines["engines"]
    assert piper["name"] == "piper" and piper["loaded"] is True
    assert piper["sample_rate"] == 22050 and piper["languages"] == ["en"]
    status, voices = get_json(server.http + "/v1/voices")
    assert status == 200 and voices["default"] == "en_US-joe-medium"
    assert [v["id"] for v in voices["voices"]] == ["en_US-joe-medium"]


def test_health_is_503_until_engines_are_loaded() -> None:
    srv = ServerProcess()
    try:
        seen = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                seen.append(get_json(srv.http + "/health")[0])
            except OSError:
                time.sleep(0.05)
                continue
            if seen[-1] == 200:
                break
            time.sleep(0.05)
        assert 503 in seen and seen[-1] == 200, seen
    finally:
        srv.stop()


def _metrics(srv: ServerProcess) -> str:
    with urllib.request.urlopen(srv.http + "/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        return str(r.read().decode())


def _value(text: str, name: str, missing: float | None = None) -> float:
    """The sum of ``name``'s series (every label set: other tests' sessions on this
    server, over HTTP too, have their own)."""
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    ]
    if values:
        return sum(values)
    if missing is not None:  # a labelled series appears with its first observation
        return missing
    raise AssertionError(f"{name} not in metrics")


async def test_metrics_count_sessions_frames_latency_and_errors(server: ServerProcess) -> None:
    before = _metrics(server)
    async with await connect(server.ws_url) as ws:
        await send(ws, type="bogus")
        await send(ws, type="start")
        rec = await recv_until(ws, Received(), stop="ready")
        await send(ws, type="text", text="Counting frames for the metrics.")
        await send(ws, type="end")
        await recv_until(ws, rec)
    after = _metrics(server)
    frames = _value(after, "voxwire_frames_sent_total") - _value(
        before, "voxwire_frames_sent_total"
    )
    assert frames == len(rec.frames) > 0
    assert _value(after, 'voxwire_errors_total{code="unknown_type"}') >= 1
    ttfa = "voxwire_time_to_first_audio_seconds_count"
    assert _value(after, ttfa) == _value(before, ttfa, missing=0.0) + 1
    assert _value(after, "voxwire_engine_real_time_factor_count") > 0
    assert "voxwire_active_sessions" in after and "voxwire_engine_queue_depth" in after


async def test_session_log_lines(server: ServerProcess) -> None:
    async with await connect(server.ws_url) as ws:
        await send(ws, type="start")
        rec = await recv_until(ws, Received(), stop="ready")
        sid = rec.of("ready")[0]["session_id"]
        await send(ws, type="text", text="One line per session start and end.")
        await send(ws, type="end")
        await recv_until(ws, rec)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        ends = [e for e in server.log_events("session_end") if e.get("session_id") == sid]
        if ends:
            break
        await asyncio.sleep(0.1)
    starts = [e for e in server.log_events("session_start") if e.get("session_id") == sid]
    assert len(starts) == 1 and starts[0]["engine"] == "piper"
    (end,) = ends
    assert end["frames_sent"] == len(rec.frames)
    assert end["chars"] == len("One line per session start and end.")
    assert end["ttfa_ms"] > 0 and end["audio_s"] > 1 and end["close_code"] == 1000
