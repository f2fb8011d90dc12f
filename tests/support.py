"""Test support: a real voxwire server in a subprocess, a WebSocket client, and
audio checks with decoders we did not write (libopus, ffmpeg) and an offline
recognizer (pocketsphinx, which ships its English model)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import websockets
from websockets.asyncio.client import ClientConnection

from loadtests.serverproc import RedisServer, VoxwireServer
from loadtests.serverproc import _env_value as _env_value

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


class ServerProcess(VoxwireServer):
    """``python -m server serve`` on a free port, with settings as VOXWIRE_* variables
    (the benchmarks' launcher, without CPU pinning).

    One engine process unless a test asks for more: the default (one per CPU, and a
    spare) would start three Piper processes for each of the suite's servers, on a
    2-core CI machine that also runs the clients and the recognizer. Tests of the
    default pass ``engine_threads=0``."""

    def __init__(self, **settings: Any) -> None:
        settings.setdefault("engine_threads", 1)
        super().__init__(**settings)

    def rss_bytes(self) -> int:
        return self.rss()


async def logged(
    srv: VoxwireServer,
    event: str,
    where: Any = None,
    timeout: float = 10.0,
) -> list[dict[str, Any]]:
    """The server's log lines for ``event`` (those ``where`` accepts), waiting until at
    least one is there: the server writes ``session_end`` after the close frame, so a
    client that has just seen the close may read the log a moment before the line."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in srv.log_events(event) if where is None or where(e)]
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


# ------------------------------------------------------------------ client


@dataclass
class Received:
    """Everything a client got on one connection, in order."""

    events: list[dict[str, Any]] = field(default_factory=list)
    frames: list[bytes] = field(default_factory=list)
    order: list[tuple[str, Any]] = field(default_factory=list)  # ("frame", n) / ("event", ev)
    close_code: int | None = None
    close_reason: str = ""
    first_frame_at: float | None = None
    frame_times: list[float] = field(default_factory=list)  # monotonic arrival of each frame

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]


async def connect(url: str, **kw: Any) -> ClientConnection:
    return await websockets.connect(url, max_size=None, open_timeout=20, **kw)


async def recv_until(
    ws: ClientConnection,
    rec: Received,
    stop: str | tuple[str, ...] | None = None,
    timeout: float = 60.0,
    frames: int | None = None,
) -> Received:
    """Read messages into ``rec`` until an event of type ``stop`` (or one of them),
    ``rec`` holds ``frames`` frames, or the close."""
    deadline = time.monotonic() + timeout
    stops = (stop,) if isinstance(stop, str) else (stop or ())
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {stop!r} within {timeout} s; got {rec.events[-5:]}")
            msg = await asyncio.wait_for(ws.recv(), left)
            if isinstance(msg, bytes):
                if rec.first_frame_at is None:
                    rec.first_frame_at = time.monotonic()
                rec.frame_times.append(time.monotonic())
                rec.order.append(("frame", len(rec.frames)))
                rec.frames.append(msg)
                if frames is not None and len(rec.frames) >= frames:
                    return rec
            else:
                ev = json.loads(msg)
                rec.events.append(ev)
                rec.order.append(("event", ev))
                if ev["type"] in stops:
                    return rec
    except websockets.ConnectionClosed as exc:
        rec.close_code = exc.rcvd.code if exc.rcvd else 1006
        rec.close_reason = exc.rcvd.reason if exc.rcvd else ""
    return rec


async def send(ws: ClientConnection, **msg: Any) -> None:
    await ws.send(json.dumps(msg))


async def new_session(url: str, timeout: float = 10.0) -> Received:
    """A new session's first answer: ``ready`` (then closed), or a refusal and its close
    (the server may refuse before it reads the ``start``)."""
    ws = await connect(url)
    with contextlib.suppress(websockets.ConnectionClosed):
        await send(ws, type="start")
    rec = await recv_until(ws, Received(), stop="ready", timeout=timeout)
    if rec.close_code is None:
        await ws.close()
    return rec


async def ws_refused(url: str, **kw: Any) -> tuple[int, dict[str, Any]]:
    """A WebSocket handshake the server refuses: (HTTP status, JSON body)."""
    try:
        ws = await connect(url, **kw)
    except websockets.InvalidStatus as exc:
        resp = exc.response
        return resp.status_code, json.loads(resp.body or b"{}")
    await ws.close()
    raise AssertionError(f"the handshake to {url} was accepted")


async def speaks(url: str, text: str, **kw: Any) -> Received:
    """A short session (8 kHz PCM) that says ``text`` and ends: all it received."""
    async with await connect(url, **kw) as ws:
        await send(ws, type="start", output={"encoding": "pcm_s16le", "sample_rate": 8000})
        rec = await recv_until(ws, Received(), stop="ready")
        await send(ws, type="text", text=text)
        await send(ws, type="end")
        return await recv_until(ws, rec)


def keys_cli(*args: str) -> str:
    """``voxwire keys ARGS…`` (a real subprocess): what it printed."""
    made = subprocess.run(
        [sys.executable, "-m", "server", "keys", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return made.stdout.strip()


async def stream_tokens(
    ws: ClientConnection,
    text: str,
    rng: np.random.Generator,
    min_words: int = 1,
    max_words: int = 4,
    gap: tuple[float, float] = (0.02, 0.05),
) -> None:
    """Send ``text`` the way an LLM does: 1–4 words at a time, 20–50 ms apart,
    pieces cut anywhere (a word may straddle two pieces)."""
    words = re.findall(r"\S+\s*", text)
    i = 0
    while i < len(words):
        n = int(rng.integers(min_words, max_words + 1))
        piece = "".join(words[i : i + n])
        i += n
        if len(piece) > 3 and rng.random() < 0.3:  # split mid-word sometimes
            cut = int(rng.integers(1, len(piece) - 1))
            await send(ws, type="text", text=piece[:cut])
            piece = piece[cut:]
        await send(ws, type="text", text=piece)
        await asyncio.sleep(float(rng.uniform(*gap)))


# ------------------------------------------------------------------ audio checks

Samples = npt.NDArray[np.float32]


def decode_opus(frames: Iterable[bytes], rate: int = 48000) -> Samples:
    """Decode raw Opus packets with libopus (through opuslib_next)."""
    import opuslib_next

    dec = opuslib_next.Decoder(rate, 1)
    out = []
    for f in frames:
        pcm = dec.decode(f, rate * 120 // 1000)  # max frame size
        out.append(np.frombuffer(pcm, dtype="<i2"))
    if not out:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(out).astype(np.float32) / 32768.0


def decode_file(data: bytes, fmt: str) -> Samples:
    """A speech API body (``response_format`` ``fmt``; ``pcm`` is raw 24 kHz s16le),
    decoded by ffmpeg (an outside decoder) to 16 kHz mono float."""
    args = ["ffmpeg", "-v", "error"]
    if fmt == "pcm":
        args += ["-f", "s16le", "-ar", "24000", "-ac", "1"]
    out = subprocess.run(
        [*args, "-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", "16000", "pipe:1"],
        input=data,
        capture_output=True,
        check=True,
    )
    return np.frombuffer(out.stdout, "<i2").astype(np.float32) / np.float32(32768)


def decode_pcm(frames: Iterable[bytes]) -> Samples:
    return np.frombuffer(b"".join(frames), dtype="<i2").astype(np.float32) / 32768.0


def decode_mulaw_ffmpeg(frames: Iterable[bytes], rate: int) -> Samples:
    """µ-law decoded by ffmpeg, an implementation we did not write."""
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "mulaw",
            "-ar",
            str(rate),
            "-ac",
            "1",
            "-i",
            "pipe:0",
            "-f",
            "s16le",
            "pipe:1",
        ],
        input=b"".join(frames),
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


def rms(x: Samples) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def transcribe(x: Samples, rate: int) -> str:
    """Offline speech recognition with pocketsphinx's bundled US English model."""
    import soxr
    from pocketsphinx import Decoder

    y = soxr.resample(x, rate, 16000) if rate != 16000 else x
    pcm = (np.clip(y, -1, 1) * 32767).astype("<i2").tobytes()
    d = Decoder(samprate=16000, loglevel="FATAL")
    d.start_utt()
    d.process_raw(pcm, full_utt=True)
    d.end_utt()
    hyp = d.hyp()
    return hyp.hypstr if hyp else ""


def word_recall(reference: str, hypothesis: str) -> float:
    """Share of reference words (in order-insensitive bag form) found in the hypothesis."""
    ref = re.findall(r"[a-z']+", reference.lower())
    hyp = re.findall(r"[a-z']+", hypothesis.lower())
    pool: dict[str, int] = {}
    for w in hyp:
        pool[w] = pool.get(w, 0) + 1
    hit = 0
    for w in ref:
        if pool.get(w, 0) > 0:
            pool[w] -= 1
            hit += 1
    return hit / max(1, len(ref))


def have(cmd: str) -> bool:
    return shutil.which(cmd) is not None


class RedisProcess(RedisServer):
    """A private redis-server on a free port (the benchmarks' launcher)."""
