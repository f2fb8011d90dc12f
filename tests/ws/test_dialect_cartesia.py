"""Cartesia's /tts/websocket against a real server, with a raw WebSocket client."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.dialects.wire import Got, collect, ffmpeg_decode, send
from tests.support import ServerProcess, connect, transcribe, word_recall

VOICE = "en_US-joe-medium"
SENTENCE = "Our meeting with the bank has moved to Thursday afternoon."
SECOND = "Open the window because the kitchen is getting very hot."
LONG = " ".join(
    [
        "The train to the city leaves at noon from the second platform.",
        "My brother bought a new red bicycle for his long ride to work.",
    ]
    * 6
)


def url(server: ServerProcess) -> str:
    return f"ws://127.0.0.1:{server.port}/tts/websocket?cartesia_version=2025-04-16"


def request(ctx: str, text: str, more: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "model_id": "sonic-2",
        "transcript": text,
        "continue": more,
        "context_id": ctx,
        "voice": {"mode": "id", "id": VOICE},
        "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 16000},
        "language": "en",
        **extra,
    }


def of(kind: str, ctx: str | None = None):  # type: ignore[no-untyped-def]
    return lambda m: m.get("type") == kind and (ctx is None or m.get("context_id") == ctx)


def audio(got: Got, ctx: str) -> bytes:
    return got.audio("data", ctx, "context_id")


def heard(pcm: bytes, text: str, fmt: str = "s16le", rate: int = 16000) -> float:
    x, r = ffmpeg_decode(pcm, fmt, rate)
    return word_recall(text, transcribe(x, r))


async def test_a_context_streams_text_then_done(server: ServerProcess) -> None:
    async with await connect(url(server)) as ws:
        words = SENTENCE.split(" ")
        for w in words:
            await send(ws, **request("c1", w + " ", add_timestamps=True))
        await send(ws, **request("c1", "", more=False))
        got = await collect(ws, Got(), until=of("done", "c1"))
    chunks = [m for m in got.msgs if m["type"] == "chunk"]
    assert chunks and all(m["status_code"] == 206 and m["done"] is False for m in chunks)
    assert got.msgs[-1] == {"type": "done", "context_id": "c1", "status_code": 200, "done": True}
    assert heard(audio(got, "c1"), SENTENCE) >= 0.5
    # word timestamps: the words sent, in order, times increasing within the audio
    ts = [m["word_timestamps"] for m in got.msgs if m["type"] == "timestamps"]
    assert ts, "no timestamps"
    spoken = [w for t in ts for w in t["words"]]
    assert " ".join(spoken) == SENTENCE
    starts = [s for t in ts for s in t["start"]]
    ends = [e for t in ts for e in t["end"]]
    assert starts == sorted(starts) and all(s <= e for s, e in zip(starts, ends, strict=True))
    assert ends[-1] <= len(audio(got, "c1")) / 32000 + 0.05


async def test_cancel_stops_a_context_and_others_go_on(server: ServerProcess) -> None:
    async with await connect(url(server)) as ws:
        await send(ws, **request("long", LONG))
        got = await collect(ws, Got(), until=of("chunk", "long"), timeout=30)
        t0 = time.monotonic()
        await send(ws, context_id="long", cancel=True)
        # Pipecat's sentence at a time: max_buffer_delay_ms 0 speaks each at once
        await send(ws, **request("next", SECOND, max_buffer_delay_ms=0))
        await collect(ws, got, until=of("flush_done", "next"))
        await send(ws, **request("next", "", more=False))
        await collect(ws, got, until=of("done", "next"))
        cut_at = time.monotonic() - t0
    long_msgs = [m for m in got.msgs if m.get("context_id") == "long"]
    assert all(m["type"] == "chunk" for m in long_msgs)  # no done after a cancel
    assert len(audio(got, "long")) / 32000 < 15
    assert heard(audio(got, "next"), SECOND) >= 0.5
    flush = [m for m in got.msgs if m["type"] == "flush_done"]
    assert flush[0]["flush_id"] == 1 and flush[0]["flush_done"] is True
    assert cut_at < 30


@pytest.mark.parametrize(
    ("encoding", "rate", "raw"),
    [
        ("pcm_s16le", 8000, "s16le"),
        ("pcm_s16le", 22050, "s16le"),
        ("pcm_s16le", 44100, "s16le"),
        ("pcm_s16le", 48000, "s16le"),
        ("pcm_f32le", 24000, "f32le"),
        ("pcm_mulaw", 8000, "mulaw"),
        ("pcm_alaw", 8000, "alaw"),
    ],
)
async def test_encodings_decode_with_ffmpeg(
    server: ServerProcess, encoding: str, rate: int, raw: str
) -> None:
    fmt = {"container": "raw", "encoding": encoding, "sample_rate": rate}
    async with await connect(url(server)) as ws:
        await send(ws, **request("c", SENTENCE, more=False, output_format=fmt))
        got = await collect(ws, Got(), until=of("done", "c"))
    assert heard(audio(got, "c"), SENTENCE, raw, rate) >= 0.5


async def test_bad_requests_get_errors_and_the_connection_goes_on(server: ServerProcess) -> None:
    bad_fmt = {"container": "mp3", "encoding": "mp3", "sample_rate": 44100}
    cases: list[tuple[str | dict[str, Any], str]] = [
        ("{not json", "message is not valid JSON"),
        ({"context_id": "x"}, "needs a 'transcript'"),
        (request("f", "Hi.", output_format=bad_fmt), "container 'mp3' is not supported"),
        (request("v", "Hi.", voice={"mode": "id", "id": "nobody"}), "'nobody'"),
        (request("e", "Hi.", voice={"mode": "embedding", "embedding": [0.1]}), "voice.mode"),
        ({"transcript": 5, "context_id": "t"}, "'transcript' must be str"),
    ]
    async with await connect(url(server)) as ws:
        got = Got()
        for message, says in cases:
            if isinstance(message, str):
                await ws.send(message)
            else:
                await send(ws, **message)
            await collect(ws, got, until=of("error"), timeout=20)
            err = got.msgs[-1]
            assert err["status_code"] == 400 and err["done"] is True, err
            assert says in err["error"], (says, err)
        # the same connection still speaks
        await send(ws, **request("ok", SENTENCE, more=False))
        await collect(ws, got, until=of("done", "ok"))
        # a context whose input ended takes no more
        await send(ws, **request("ok2", "Hello.", more=False))
        await send(ws, **request("ok2", "More?"))
        await collect(ws, got, until=of("error", "ok2"), timeout=20)
    assert "has ended its input" in got.msgs[-1]["error"]
    assert heard(audio(got, "ok"), SENTENCE) >= 0.5


async def test_bad_input_gets_the_dialect_error_with_a_healthy_session_beside(
    server: ServerProcess,
) -> None:
    """A refused request gets an ``error`` and the connection goes on (a context still
    opens and ends on it); a binary message closes with 1003 after its error, an
    oversize one with 1009. A bad request on an open context drops that request only."""
    cases: list[tuple[str | bytes, str, int | None]] = [
        ("{not json", "invalid_json", None),
        ("[1, 2]", "invalid_message", None),
        ('{"context_id": "x", "type": "shout"}', "invalid_request", None),  # no such message
        ('{"cancel": true}', "missing_context_id", None),
        ('{"context_id": 5, "transcript": "Hi."}', "invalid_field", None),
        (b"\x00\x01", "binary_not_allowed", 1003),
    ]
    head, tail = SENTENCE.split(" has ")
    async with await connect(url(server)) as healthy:
        await send(healthy, **request("ok", head + " has "))
        for message, title, close in cases:
            async with await connect(url(server)) as ws:
                await ws.send(message)
                got = await collect(ws, Got(), until=of("error"), timeout=20)
                if close is None:  # still usable: an empty context opens and ends
                    await send(ws, **request("probe", "", more=False))
                    await collect(ws, got, until=of("done", "probe"), timeout=20)
                else:
                    got = await collect(ws, got, timeout=20)
            errs = [m for m in got.msgs if m["type"] == "error"]
            assert [m["title"] for m in errs] == [title], (message, got.msgs)
            assert errs[0]["error"] and errs[0]["done"] is True
            assert errs[0]["status_code"] == (400 if close is None else 500), errs
            assert got.close_code == close, (message, got.close_code)
        async with await connect(url(server)) as ws:
            await ws.send(json.dumps(request("big", "a" * 70_000)))
            got = await collect(ws, Got(), timeout=20)
        assert got.close_code == 1009 and "65536" in got.close_reason and not got.msgs
        # a bad request on the open context: an error for it, and the context goes on
        await send(healthy, **request("ok", "Not this. ", flush="yes"))
        ok = await collect(healthy, Got(), until=of("error", "ok"), timeout=20)
        assert ok.msgs[-1]["title"] == "invalid_field", ok.msgs[-1]
        await send(healthy, **request("ok", tail, more=False))
        await collect(healthy, ok, until=of("done", "ok"))
    assert heard(audio(ok, "ok"), SENTENCE) >= 0.5


async def test_a_seventeenth_context_is_refused_and_the_connection_goes_on(
    server: ServerProcess,
) -> None:
    async with await connect(url(server)) as ws:
        for n in range(16):
            await send(ws, **request(f"c{n}", ""))
        await send(ws, **request("c16", SECOND, more=False))
        got = await collect(ws, Got(), until=of("error"), timeout=20)
        err = got.msgs[-1]
        assert err["title"] == "max_active_conversations" and err["context_id"] == "c16"
        assert "at most 16 contexts" in err["error"] and err["status_code"] == 400
        await send(ws, **request("c0", "", more=False))  # one ends: room for another
        await collect(ws, got, until=of("done", "c0"), timeout=20)
        await send(ws, **request("c16", SECOND, more=False))
        await collect(ws, got, until=of("done", "c16"))
    assert heard(audio(got, "c16"), SECOND) >= 0.5
