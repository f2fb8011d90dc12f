"""Every hostile text of tests/hostile_texts.py spoken through the full server on the
Piper engine, over the WebSocket (and a sample through ``POST /v1/audio/speech``).

For each text: the server stays up (alive, ``/health`` 200), the session ends with
``done`` (an ``error`` on the way is allowed if it is non-fatal and says what went
wrong) within a bounded time, and the audio is bounded (a text that expands into
minutes of speech is a denial of service). After the corpus: the server's memory,
its engine processes included, is within a bound of its baseline, and a normal
session is still intelligible.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from loadtests.machine import rss_bytes
from server.streaming.normalize import audio_budget_s
from tests.hostile_texts import HOSTILE, MAX_CHARS
from tests.support import (
    ServerProcess,
    connect,
    decode_opus,
    transcribe,
    word_recall,
)

# From the text to the close: no hang. A chunk's engine deadline is 10 s + 50 ms a
# character; a case is a few chunks, two sessions share two cores.
CASE_TIMEOUT_S = 120.0
CONCURRENCY = 2
# CI speaks the first CORPUS_CHARS characters of each text (every hostile shape is
# longer than its trigger by then: a dotted chain crashes espeak from ~98 characters);
# VOXWIRE_CORPUS_CHARS=2000 speaks them whole (about 20 minutes on two cores).
CORPUS_CHARS = int(os.environ.get("VOXWIRE_CORPUS_CHARS", "240"))
CASES = [(name, text[:CORPUS_CHARS]) for name, text in HOSTILE]
# The texts are spoken at twice the speed: the front end (espeak-ng, where the crashes
# are) reads them the same, and the model makes half the audio (0.6 x the time), which
# keeps the corpus inside CI's time. The audio bound scales with the speed.
CORPUS_SPEED = 2.0
# the server process itself: the audio only passes through it
SERVER_RSS_GROWTH_BYTES = 128 * 1024 * 1024
# an engine process over engine_max_rss_mb retires after its chunk
ENGINE_RSS_BOUND_BYTES = (768 + 64) * 1024 * 1024
HTTP_SAMPLE = CASES[::10]
# a sentence the recognizer hears reliably (it misses "brown fox jumps" one run in a few)
NORMAL_TEXT = "Our meeting with the bank has moved to Thursday afternoon."
RATE, FRAME_MS = 16000, 100  # PCM: the audio length is the byte count

RESULTS: dict[str, dict[str, Any]] = {}
SERVER_BASELINE: list[int] = [0]
# the whole corpus is spoken in the first test's setup: minutes on two cores
pytestmark = pytest.mark.timeout(1800)


def tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants (the engine processes),
    from /proc: a child is listed under the thread that started it."""
    total = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
        children = [
            int(c)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()
        ]
    except (OSError, ValueError):
        return total  # it exited meanwhile
    return total + sum(tree_rss(c) for c in children)


@pytest.fixture(scope="module")
def piper_server() -> Iterator[ServerProcess]:
    """The default server (Piper), with one engine thread per core of a CI machine."""
    srv = ServerProcess(engine_threads=CONCURRENCY, max_session_s=600)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def baseline_rss(piper_server: ServerProcess) -> int:
    """Memory after one ordinary session (first-use allocations are not growth)."""
    asyncio.run(_speak(piper_server, NORMAL_TEXT, "opus"))
    piper_server.wait_idle()
    SERVER_BASELINE[:] = [rss_bytes(piper_server.pid)]
    return tree_rss(piper_server.pid)


def _alive(srv: ServerProcess) -> None:
    if srv.proc.poll() is not None:
        pytest.fail(
            f"the server exited with {srv.proc.returncode}:\n{srv.logs()[-3000:]}", pytrace=False
        )
    r = httpx.get(srv.http + "/health", timeout=10)
    assert r.status_code == 200, r.text


async def _speak(
    srv: ServerProcess, text: str, encoding: str, speed: float = 1.0
) -> dict[str, Any]:
    """One session: start, the whole text, end; everything received until the close."""
    out: dict[str, Any] = {"events": [], "frames": [], "close": None}
    t0 = time.monotonic()
    output: dict[str, Any] = {"encoding": encoding}
    if encoding == "pcm_s16le":
        output |= {"sample_rate": RATE, "frame_ms": FRAME_MS}
    async with await connect(srv.ws_url) as ws:
        start = {"type": "start", "engine": "piper", "speed": speed, "output": output}
        await ws.send(json.dumps(start))
        await ws.send(json.dumps({"type": "text", "text": text}, ensure_ascii=False))
        await ws.send(json.dumps({"type": "end"}))
        try:
            async with asyncio.timeout(CASE_TIMEOUT_S):
                async for msg in ws:
                    if isinstance(msg, bytes):
                        out["frames"].append(msg)
                    else:
                        out["events"].append(json.loads(msg))
        except websockets.ConnectionClosed:
            pass
        except TimeoutError:
            out["timeout"] = True
        out["close"] = ws.close_code
    out["seconds"] = time.monotonic() - t0
    return out


def _per_process(srv: ServerProcess) -> dict[int, int]:
    """RSS in MiB of the server and each engine process (for a failure message)."""
    pids = [srv.pid]
    for task in Path(f"/proc/{srv.pid}/task").iterdir():
        with contextlib.suppress(OSError):
            pids += [int(c) for c in (task / "children").read_text().split()]
    return {pid: tree_rss(pid) // 2**20 if pid != srv.pid else 0 for pid in pids}


def _health(srv: ServerProcess) -> str:
    if srv.proc.poll() is not None:
        return f"the server exited with {srv.proc.returncode}"
    try:
        status = httpx.get(srv.http + "/health", timeout=10).status_code
    except httpx.HTTPError as exc:
        return f"/health: {exc!r}"
    return "" if status == 200 else f"/health answered {status}"


@pytest.fixture(scope="module")
def corpus(piper_server: ServerProcess, baseline_rss: int) -> dict[str, dict[str, Any]]:
    """Every text spoken, CONCURRENCY sessions at a time (the engine's threads), each
    followed by a health check; the tests below judge one text each."""

    async def one(name: str, text: str, gate: asyncio.Semaphore) -> tuple[str, dict[str, Any]]:
        async with gate:
            try:
                got = await _speak(piper_server, text, "pcm_s16le", CORPUS_SPEED)
            except (OSError, websockets.WebSocketException) as exc:
                got = {"failed": repr(exc)}
            got["health"] = await asyncio.to_thread(_health, piper_server)
            return name, got

    async def run() -> dict[str, dict[str, Any]]:
        gate = asyncio.Semaphore(CONCURRENCY)
        return dict(await asyncio.gather(*(one(n, t, gate) for n, t in CASES)))

    return asyncio.run(run())


@pytest.mark.parametrize(("name", "text"), CASES, ids=[n for n, _ in CASES])
def test_hostile_text_over_websocket(
    piper_server: ServerProcess, corpus: dict[str, dict[str, Any]], name: str, text: str
) -> None:
    assert len(text) <= MAX_CHARS
    got = corpus[name]
    # the text did not take the server down
    assert not got["health"], f"{got['health']}; log:\n{piper_server.logs()[-3000:]}"
    assert "failed" not in got, got["failed"]
    assert not got.get("timeout"), f"no close within {CASE_TIMEOUT_S} s: {got['events'][-3:]}"
    audio_s = sum(len(f) for f in got["frames"]) / 2 / RATE
    errors = [e for e in got["events"] if e["type"] == "error"]
    RESULTS[name] = {"audio_s": round(audio_s, 1), "wall_s": round(got["seconds"], 1)}
    RESULTS[name]["errors"] = [e.get("code") for e in errors]
    for e in errors:  # a clear, non-fatal error: the session goes on to 'done'
        assert isinstance(e.get("code"), str) and e["code"], e
        assert isinstance(e.get("message"), str) and e["message"].strip(), e
        assert e.get("fatal") is False, e
    done = [e for e in got["events"] if e["type"] == "done"]
    assert got["close"] == 1000 and len(done) == 1, (got["close"], got["events"][-3:])
    assert done[0]["frames"] == len(got["frames"])
    # no more audio than the text of each chunk may take (the server's bound)
    segments = [e for e in got["events"] if e["type"] == "segment"]
    bound = sum(audio_budget_s(seg["text"], CORPUS_SPEED) for seg in segments)
    bound += FRAME_MS / 1000
    assert audio_s <= bound, f"{audio_s:.1f} s of audio for {len(text)} characters"


@pytest.mark.parametrize(("name", "text"), HTTP_SAMPLE, ids=[n for n, _ in HTTP_SAMPLE])
async def test_hostile_text_over_http(piper_server: ServerProcess, name: str, text: str) -> None:
    _alive(piper_server)
    body = {
        "model": "piper",
        "input": text,
        "voice": "alloy",
        "response_format": "pcm",
        "speed": CORPUS_SPEED,
    }
    async with httpx.AsyncClient(timeout=CASE_TIMEOUT_S) as client:
        async with asyncio.timeout(CASE_TIMEOUT_S):
            r = await client.post(piper_server.http + "/v1/audio/speech", json=body)
    _alive(piper_server)
    if r.status_code != 200:  # a refusal must be a clear OpenAI-style error, not a crash
        assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
        assert r.json()["error"]["message"], r.text
        return
    audio_s = len(r.content) / 2 / 24000  # raw 24 kHz s16le
    # the text's bound, plus the base of every further chunk it may have been cut into
    bound = audio_budget_s(text, CORPUS_SPEED) + len(text) / 40
    assert audio_s <= bound, f"{audio_s:.1f} s of audio for {len(text)} characters"


def test_after_the_corpus(piper_server: ServerProcess, baseline_rss: int) -> None:
    """Memory is back within bounds and an ordinary session is intelligible."""
    _alive(piper_server)
    piper_server.wait_idle()
    time.sleep(2.0)  # an engine process being replaced comes back at its usual size
    after = tree_rss(piper_server.pid)
    per = _per_process(piper_server)
    slow = sorted(RESULTS.items(), key=lambda kv: -kv[1]["audio_s"])[:8]
    print(f"\ncorpus: rss {baseline_rss / 2**20:.0f} -> {after / 2**20:.0f} MiB {per}; {slow}")
    server_rss = rss_bytes(piper_server.pid)
    assert server_rss <= SERVER_BASELINE[0] + SERVER_RSS_GROWTH_BYTES, (SERVER_BASELINE, per)
    engines = {pid: mib for pid, mib in per.items() if pid != piper_server.pid}
    assert engines and all(mib << 20 <= ENGINE_RSS_BOUND_BYTES for mib in engines.values()), per
    got = asyncio.run(_speak(piper_server, NORMAL_TEXT, "opus"))
    assert got["close"] == 1000 and not [e for e in got["events"] if e["type"] == "error"]
    heard = transcribe(decode_opus(got["frames"]), 48000)
    assert word_recall(NORMAL_TEXT, heard) >= 0.6, heard
