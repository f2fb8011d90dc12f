"""F5 outside the server's process (issue 11): with ``engine_isolation=process`` the
model runs in a supervised generation host. A real server on the tiny model: the host
is another process (the server itself never loads torch); a host killed in the middle
of an utterance, or one that hangs past its deadline, costs the batch in flight, whose
session goes on on Piper (``engine_fallback``); the server keeps serving and a new
host comes up, counted in ``voxwire_engine_restarts_total{engine="f5"}``."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import signal
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.engines.f5.conftest import F5Files
from tests.engines.f5.test_f5_stream import metrics, speak
from tests.prom import delta, scrape
from tests.support import (
    Received,
    ServerProcess,
    connect,
    decode_file,
    decode_opus,
    get_json,
    recv_until,
    rms,
    send,
    transcribe,
)

OUT = {"encoding": "opus", "sample_rate": 48000}
TEXT = (
    "The lighthouse keeper climbed the stairs every evening at dusk, slowly, one step "
    "after another. From the top he could see the fishing boats coming home, their "
    "lamps swinging in the dark. He counted them and wrote the number in his book. "
    "Then he went down again and made himself a cup of tea in the kitchen."
)
TAIL = "Then he went down again and made himself a cup of tea in the kitchen."


@pytest.fixture(scope="module")
def host_server(f5_files: F5Files) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        engine_isolation="process",
        max_session_s=600,
        # Tight for the hang test, loose for a tiny model's batches on a busy machine.
        f5_deadline_s=3.0,
        f5_deadline_per_audio_s=0.25,
        language_voices="en-GB=alice",  # an F5 voice: en-GB goes to F5 (test below)
        **f5_files.settings(),
    )
    try:
        srv.wait_ready(timeout=180)
        yield srv
    finally:
        srv.stop()


def host_pid(srv: ServerProcess) -> int:
    """The current generation host, from the server's log."""
    ready = srv.log_events("f5_host_ready")
    assert ready, "no generation host came up"
    return int(ready[-1]["pid"])


def restarts(srv: ServerProcess, reason: str) -> float:
    key = f'voxwire_engine_restarts_total{{engine="f5",reason="{reason}"}}'
    return metrics(srv).get(key, 0.0)


def children(pid: int) -> set[int]:
    return {
        int(c)
        for t in Path(f"/proc/{pid}/task").iterdir()
        for c in (t / "children").read_text().split()
    }


def maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


async def wait_busy(pid: int, first: Callable[[], bool], timeout: float = 30.0) -> None:
    """Until ``first`` holds and then ``pid`` is computing (a batch is on it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_ticks(pid)
        await asyncio.sleep(0.05)
        if first() and cpu_ticks(pid) > before:
            return
    raise AssertionError("the generation host never got busy")


async def wait_new_host(srv: ServerProcess, old: int, timeout: float = 90.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = metrics(srv)
        if m.get('voxwire_engine_processes{engine="f5"}') == 1 and host_pid(srv) != old:
            return host_pid(srv)
        await asyncio.sleep(0.2)
    raise AssertionError("no new generation host came up")


async def speak_and(srv: ServerProcess, action: signal.Signals, pid: int) -> Received:
    """Speak TEXT on F5 and, once the host is computing, send it ``action``."""
    async with await connect(srv.ws_url) as ws:
        await send(ws, type="start", engine="f5", voice="alice", output=OUT)
        rec = await recv_until(ws, Received(), stop="ready")
        await send(ws, type="text", text=TEXT)
        await send(ws, type="end")
        # Keep reading: a client that stops taking audio pauses its session's work.
        reader = asyncio.create_task(recv_until(ws, rec, timeout=120))
        await wait_busy(pid, lambda: bool(rec.frames))
        os.kill(pid, action)
        return await reader


def assert_went_on_on_piper(rec: Received, code: str) -> None:
    assert rec.close_code == 1000 and rec.of("done"), rec.events
    (err,) = rec.of("error")
    assert err["code"] == "engine_fallback" and err["fatal"] is False
    # The batch in flight failed (or, between two batches, the next found no host).
    assert code in err["message"] or "engine_unavailable" in err["message"], err
    assert "'piper'" in err["message"]
    after = rec.order.index(("event", err))
    piper = [rec.frames[n] for kind, n in rec.order[after:] if kind == "frame"]
    heard = transcribe(decode_opus(piper), 48000)
    tail = set(re.findall(r"[a-z]+", TAIL.lower()))
    assert len(tail & set(heard.split())) >= 5, heard  # the rest is spoken, by Piper


async def test_f5_generates_in_a_child_process(host_server: ServerProcess) -> None:
    srv = host_server
    pid = host_pid(srv)
    assert pid != srv.pid
    assert pid in children(srv.pid)
    # The model is there, and not in the server.
    assert "libtorch" in maps(pid) and "libtorch" not in maps(srv.pid)
    before = cpu_ticks(pid)
    rec = await speak(srv.ws_url, "Hello from the generation host.", engine="f5", voice="alice")
    assert not rec.of("error") and rec.frames and rec.close_code == 1000
    assert cpu_ticks(pid) > before  # it generated the audio


async def test_a_host_killed_mid_batch_fails_over_and_is_replaced(
    host_server: ServerProcess,
) -> None:
    srv = host_server
    old = host_pid(srv)
    crashes = restarts(srv, "crash")
    rec = await speak_and(srv, signal.SIGKILL, old)
    assert_went_on_on_piper(rec, "engine_crashed")
    assert get_json(srv.http + "/health")[0] == 200
    new = await wait_new_host(srv, old)
    assert restarts(srv, "crash") == crashes + 1
    back = await speak(srv.ws_url, "Back on a new host.", engine="f5", voice="alice")
    assert not back.of("error") and back.frames, back.events
    assert host_pid(srv) == new


async def _speech_ends(srv: ServerProcess, seen: int, n: int) -> list[dict[str, Any]]:
    """The server's ``speech_end`` lines after the first ``seen``, once there are ``n``
    (a line follows the body's last byte by a moment)."""
    deadline = time.monotonic() + 10
    while True:
        ends = srv.log_events("speech_end")[seen:]
        if len(ends) >= n or time.monotonic() > deadline:
            return ends
        await asyncio.sleep(0.05)


async def test_a_language_configured_for_an_f5_voice_is_spoken_by_f5(
    host_server: ServerProcess,
) -> None:
    """language_voices "en-GB=alice" names an F5 voice: a request that names that
    language and neither an engine (an OpenAI model name) nor a voice (an OpenAI voice
    name) is spoken by F5 with alice; one that names Piper stays on Piper (with its en
    voice), and a language without an entry stays on the server's engine."""
    srv = host_server

    async def spoken_by(model: str, language: str) -> str:
        seen = len(srv.log_events("speech_end"))
        body = {"model": model, "voice": "alloy", "input": "Routed by its language."}
        async with httpx.AsyncClient(base_url=srv.http, timeout=120) as client:
            r = await client.post(
                "/v1/audio/speech", json={**body, "language": language, "response_format": "wav"}
            )
        assert r.status_code == 200 and len(r.content) > 10_000, r.text
        (end,) = await _speech_ends(srv, seen, 1)
        assert end["completed"] is True, end
        return str(end["engine"])

    f5_made = {"engine": "f5", "model": "default"}
    before = scrape(srv.http)
    assert await spoken_by("tts-1", "en-GB") == "f5"
    after = scrape(srv.http)
    # F5 made it (not Piper after a fallback, which would end on "piper" anyway)
    assert delta(before, after, "voxwire_engine_audio_seconds_total", **f5_made) > 0.5
    assert await spoken_by("piper", "en-GB") == "piper"  # an engine named: its own voice
    assert await spoken_by("tts-1", "en") == "piper"
    assert delta(after, scrape(srv.http), "voxwire_engine_audio_seconds_total", **f5_made) == 0

    # A WebSocket session that names a language and no engine or voice: the same rule.
    rec = await speak(srv.ws_url, "Hello.", language="en-GB")
    ready = rec.of("ready")[0]
    assert (ready["engine"], ready["voice"]) == ("f5", "alice"), ready
    rec = await speak(srv.ws_url, "Hello.", language="en-GB", engine="piper")
    assert rec.of("ready")[0]["engine"] == "piper"


def _tail_heard(audio: np.ndarray) -> set[str]:
    """The words of TAIL heard in the last 4 s of 16 kHz ``audio`` (the recognizer takes
    about real time here, and much longer on F5's noise: a short window of Piper's)."""
    heard = transcribe(audio[-4 * 16000 :], 16000)
    return set(re.findall(r"[a-z]+", TAIL.lower())) & set(heard.split())


async def test_a_host_killed_mid_speech_request_goes_on_on_piper(
    host_server: ServerProcess,
) -> None:
    """POST /v1/audio/speech runs on the same core as a session: a host killed while two
    requests are generating costs their batch, and both go on on Piper. The streamed
    body completes (200, headers long gone) with the rest spoken by Piper; the
    ``stream: false`` one is a complete file."""
    srv = host_server
    old = await wait_new_host(srv, 0)  # (up, after the tests before)
    crashes = restarts(srv, "crash")
    seen = len(srv.log_events("speech_end"))
    body = {"model": "f5", "voice": "alice", "input": TEXT}
    async with httpx.AsyncClient(base_url=srv.http, timeout=120) as client:
        whole = asyncio.create_task(
            client.post(
                "/v1/audio/speech", json={**body, "response_format": "wav", "stream": False}
            )
        )
        streamed = bytearray()
        async with client.stream(
            "POST", "/v1/audio/speech", json={**body, "response_format": "pcm"}
        ) as r:
            assert r.status_code == 200
            chunks = r.aiter_bytes()
            streamed += await anext(chunks)  # F5's first audio: both are on the host
            await wait_busy(old, lambda: True)
            os.kill(old, signal.SIGKILL)
            async for data in chunks:
                streamed += data
        file = await whole
    ends = await _speech_ends(srv, seen, 2)
    # both completed, on Piper (the engine a request ends on)
    assert sorted((e["format"], e["engine"], e["completed"]) for e in ends) == [
        ("pcm", "piper", True),
        ("wav", "piper", True),
    ], ends
    assert restarts(srv, "crash") == crashes + 1
    audio = decode_file(bytes(streamed), "pcm")
    assert len(audio) / 16000 > 10.0  # four sentences, not a body cut at the kill
    assert len(_tail_heard(audio)) >= 5  # the rest is spoken, by Piper
    assert file.status_code == 200, file.text
    assert int(file.headers["content-length"]) == len(file.content)
    with wave.open(io.BytesIO(file.content)) as w:  # the stdlib's reader: a whole file
        assert w.getnframes() / w.getframerate() > 10.0
    assert rms(decode_file(file.content, "wav")[-3 * 16000 :]) > 0.02  # it ends in speech


async def test_a_hung_host_is_killed_at_its_deadline(host_server: ServerProcess) -> None:
    srv = host_server
    old = await wait_new_host(srv, 0)  # (up, after the test before)
    timeouts = restarts(srv, "timeout")
    try:
        rec = await speak_and(srv, signal.SIGSTOP, old)  # a hang: it makes no progress
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(old, signal.SIGKILL)  # (if the test failed before the supervisor did)
    assert_went_on_on_piper(rec, "engine_timeout")
    assert restarts(srv, "timeout") == timeouts + 1
    assert get_json(srv.http + "/health")[0] == 200
