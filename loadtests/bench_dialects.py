"""``voxwire bench dialects``: time to first audio through each vendor dialect minus
the native protocol's (issue 13), side by side in one run on one server.

One connection per protocol, all open at once; a turn speaks one sentence through
each of them, in an order shuffled every turn, so drift on a shared machine
hits all alike. A turn is timed from sending its text to the first audio byte and
to the protocol's end-of-utterance message. The audio is 24 kHz 16-bit PCM
everywhere (base64 in JSON for ElevenLabs and Cartesia, binary for the others).
ElevenLabs and Cartesia open a new context per turn, as Pipecat does per reply.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from loadtests import report
from loadtests.serverproc import VoxwireServer

if TYPE_CHECKING:
    from loadtests.bench import Opts

PROTOCOLS = ("native", "elevenlabs", "deepgram", "cartesia")
# A pause before each turn, as between a bot's replies: a turn is timed on a server
# that has finished the last one (its close, the engine's trailing work).
_GAP_S = 0.1
VOICE = "en_US-joe-medium"
SENTENCES = [
    "Sure, I can help you with that.",
    "Your appointment is booked for Tuesday at three in the afternoon.",
    "The package left our warehouse this morning and should arrive tomorrow.",
    "Let me check the balance on your account for a moment.",
    "Would you like me to send a confirmation to your email address as well?",
]


class ProtocolResult(msgspec.Struct, kw_only=True):
    protocol: str
    turns: int
    ttfa_p50_ms: float
    ttfa_p90_ms: float
    done_p50_ms: float
    ttfa_p50_minus_native_ms: float
    barge_ins: int
    # from sending the barge-in to the last audio of the cut utterance received (0: none
    # came after it), and to the protocol's acknowledgement (Cartesia sends none: -1)
    stop_p50_ms: float
    stop_max_ms: float
    ack_p50_ms: float


class DialectsResult(msgspec.Struct, kw_only=True):
    protocols: list[ProtocolResult]


def _url(srv: VoxwireServer, protocol: str) -> str:
    base = f"ws://127.0.0.1:{srv.port}"
    return {
        "native": srv.ws_url,
        "elevenlabs": f"{base}/v1/text-to-speech/{VOICE}/multi-stream-input"
        "?output_format=pcm_24000",
        "deepgram": f"{base}/v1/speak?model={VOICE}&encoding=linear16&sample_rate=24000",
        "cartesia": f"{base}/tts/websocket",
    }[protocol]


async def _open(srv: VoxwireServer, protocol: str) -> Any:
    import websockets

    ws = await websockets.connect(_url(srv, protocol), max_size=None, open_timeout=30)
    if protocol == "native":
        out = {"encoding": "pcm_s16le", "sample_rate": 24000}
        await ws.send(json.dumps({"type": "start", "output": out}))
        while json.loads(await ws.recv())["type"] != "ready":
            pass
    elif protocol == "deepgram":
        await ws.recv()  # Metadata
    return ws


def _messages(protocol: str, text: str, turn: int) -> list[dict[str, Any]]:
    ctx = f"t{turn}"
    if protocol == "native":
        return [{"type": "text", "text": text}, {"type": "flush"}]
    if protocol == "elevenlabs":
        return [
            {"text": text, "context_id": ctx, "flush": True},
            {"close_context": True, "context_id": ctx},
        ]
    if protocol == "deepgram":
        return [{"type": "Speak", "text": text}, {"type": "Flush"}]
    fmt = {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000}
    voice = {"mode": "id", "id": VOICE}
    return [{"context_id": ctx, "transcript": text, "voice": voice, "output_format": fmt}]


LONG = " ".join(SENTENCES * 3)


def _cancel(protocol: str, turn: int) -> dict[str, Any]:
    ctx = f"t{turn}"
    cancels: dict[str, dict[str, Any]] = {
        "native": {"type": "cancel"},
        "elevenlabs": {"close_context": True, "context_id": ctx},
        "deepgram": {"type": "Clear"},
        "cartesia": {"context_id": ctx, "cancel": True},
    }
    return cancels[protocol]


def _acked(protocol: str, m: str | bytes) -> bool:
    if isinstance(m, bytes):
        return False
    d = json.loads(m)
    return d.get("type") == "cancelled" or d.get("isFinal") is True or d.get("type") == "Cleared"


async def _barge_in(ws: Any, protocol: str, turn: int) -> tuple[float, float]:
    """(last audio of the cut utterance after the barge-in, its acknowledgement) in s."""
    msgs = _messages(protocol, LONG, turn)
    if protocol == "elevenlabs":
        # still streaming: no flush yet, so close_context is the interruption
        msgs = [{"text": LONG, "context_id": f"t{turn}"}]
    if protocol == "cartesia":
        msgs[0]["continue"] = True
    for msg in msgs:
        await ws.send(json.dumps(msg))
    while _kind(protocol, await ws.recv()) != "audio":
        pass
    t0 = time.perf_counter()
    await ws.send(json.dumps(_cancel(protocol, turn)))
    last, ack = 0.0, -1.0
    wait = 0.5 if protocol == "cartesia" else 10.0  # Cartesia acknowledges nothing
    while True:
        try:
            m = await asyncio.wait_for(ws.recv(), wait)
        except TimeoutError:
            return last, ack
        now = time.perf_counter() - t0
        if _kind(protocol, m) == "audio":
            last = now
        elif _acked(protocol, m):
            ack = now
            wait = 0.5  # anything after the acknowledgement would be a leak


def _kind(protocol: str, m: str | bytes) -> str:
    """ "audio", "end" (the utterance is over) or "other"."""
    if isinstance(m, bytes):
        return "audio"
    d = json.loads(m)
    if protocol == "native":
        return "end" if d.get("type") == "flushed" else "other"
    if protocol == "elevenlabs":
        return "audio" if d.get("audio") else "end" if d.get("isFinal") else "other"
    if protocol == "deepgram":
        return "end" if d.get("type") == "Flushed" else "other"
    kind = d.get("type")
    return "audio" if kind == "chunk" else "end" if kind == "done" else "other"


async def _turn(ws: Any, protocol: str, text: str, turn: int) -> tuple[float, float]:
    msgs = _messages(protocol, text, turn)
    t0 = time.perf_counter()
    for m in msgs:
        await ws.send(json.dumps(m))
    first: float | None = None
    while True:
        kind = _kind(protocol, await ws.recv())
        if kind == "audio" and first is None:
            first = time.perf_counter() - t0
        elif kind == "end":
            total = time.perf_counter() - t0
            return (first if first is not None else total), total


Samples = dict[str, list[list[float]]]  # protocol -> [ttfa, done, stop, ack]


async def _run(srv: VoxwireServer, turns: int, barge_ins: int) -> Samples:
    conns = {p: await _open(srv, p) for p in PROTOCOLS}
    for p, ws in conns.items():  # one warm turn each, not counted
        await _turn(ws, p, SENTENCES[0], -1)
    out: Samples = {p: [[], [], [], []] for p in PROTOCOLS}
    rng = random.Random(13)
    for i in range(turns):
        for p in rng.sample(PROTOCOLS, len(PROTOCOLS)):
            await asyncio.sleep(_GAP_S)
            first, total = await _turn(conns[p], p, SENTENCES[i % len(SENTENCES)], i)
            out[p][0].append(first)
            out[p][1].append(total)
    for i in range(barge_ins):
        for p in rng.sample(PROTOCOLS, len(PROTOCOLS)):
            await asyncio.sleep(_GAP_S)
            stop, ack = await _barge_in(conns[p], p, turns + i)
            out[p][2].append(stop)
            out[p][3].append(ack)
    for ws in conns.values():
        await ws.close()
    return out


def _ms(xs: list[float], q: float) -> float:
    return round(float(np.percentile(xs, q)) * 1000, 1)


def bench_dialects(o: Opts) -> DialectsResult:
    from loadtests.bench import _finish

    turns = 4 if o.smoke else 80
    barge_ins = 2 if o.smoke else 20
    srv = VoxwireServer(o.server_cpus or None)
    try:
        srv.wait_ready()
        raw = asyncio.run(_run(srv, turns, barge_ins))
    finally:
        srv.stop()
    native = _ms(raw["native"][0], 50)
    rows = [
        ProtocolResult(
            protocol=p,
            turns=turns,
            ttfa_p50_ms=_ms(raw[p][0], 50),
            ttfa_p90_ms=_ms(raw[p][0], 90),
            done_p50_ms=_ms(raw[p][1], 50),
            ttfa_p50_minus_native_ms=round(_ms(raw[p][0], 50) - native, 1),
            barge_ins=barge_ins,
            stop_p50_ms=_ms(raw[p][2], 50),
            stop_max_ms=_ms(raw[p][2], 100),
            ack_p50_ms=_ms(raw[p][3], 50) if min(raw[p][3]) >= 0 else -1.0,
        )
        for p in PROTOCOLS
    ]
    result = DialectsResult(protocols=rows)
    md = report.md_table(
        [
            "protocol",
            "turns",
            "first audio p50 ms",
            "p90 ms",
            "end p50 ms",
            "p50 minus native ms",
            "barge-ins",
            "audio after barge-in p50 / max ms",
            "ack p50 ms",
        ],
        [
            [
                r.protocol,
                r.turns,
                r.ttfa_p50_ms,
                r.ttfa_p90_ms,
                r.done_p50_ms,
                r.ttfa_p50_minus_native_ms,
                r.barge_ins,
                f"{r.stop_p50_ms} / {r.stop_max_ms}",
                r.ack_p50_ms if r.ack_p50_ms >= 0 else "none sent",
            ]
            for r in rows
        ],
    )
    notes = [
        "One server (Piper); one connection per protocol, all open at once; each turn "
        "speaks one sentence through every protocol, in a shuffled order (fixed seed), "
        "100 ms apart.",
        "Timed from sending the turn's text to the first audio byte, and to the "
        "protocol's end of the utterance (flushed, isFinal, Flushed, done).",
        "ElevenLabs and Cartesia open a new context per turn (Pipecat's way per reply).",
        "Barge-in: a long text, and once its first audio is in, the protocol's barge-in "
        "(cancel, close_context without a flush, Clear, cancel); timed from sending it to "
        "the last audio of the cut utterance received (0 when none came after it: "
        "everything in flight had already arrived) and to the acknowledgement (cancelled, "
        "isFinal, Cleared; Cartesia sends none).",
    ]
    _finish(o, "dialects", result, [], notes, md)
    return result
