"""Deepgram's /v1/speak against a real server, with a raw WebSocket client."""

from __future__ import annotations

import time
import urllib.request

import pytest

from tests.dialects.wire import Got, collect, ffmpeg_decode, send
from tests.support import ServerProcess, connect, transcribe, word_recall, ws_refused

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


def url(server: ServerProcess, **query: str) -> str:
    q = {"model": VOICE, "encoding": "linear16", "sample_rate": "16000", **query}
    return f"ws://127.0.0.1:{server.port}/v1/speak?" + "&".join(f"{k}={v}" for k, v in q.items())


def of(kind: str):  # type: ignore[no-untyped-def]
    return lambda m: m.get("type") == kind


def heard(got: Got, text: str, fmt: str = "s16le", rate: int = 16000) -> float:
    x, r = ffmpeg_decode(b"".join(got.binary), fmt, rate)
    return word_recall(text, transcribe(x, r))


async def test_speak_flush_clear_close(server: ServerProcess) -> None:
    async with await connect(url(server)) as ws:
        got = await collect(ws, Got(), until=of("Metadata"), timeout=10)
        meta = got.msgs[0]
        assert meta["type"] == "Metadata" and meta["request_id"] and meta["model_name"] == VOICE
        # Pipecat's way: a sentence per Speak (trailing space), Flush at the reply's end
        await send(ws, type="Speak", text=SENTENCE + " ")
        await send(ws, type="Flush")
        first = await collect(ws, Got(), until=of("Flushed"))
        assert first.msgs[-1] == {"type": "Flushed", "sequence_id": 0}
        assert heard(first, SENTENCE) >= 0.5
        # barge-in: Clear stops the audio, Cleared says so; nothing of it comes after
        await send(ws, type="Speak", text=LONG)
        cut = await collect(ws, Got(), binary=5, timeout=30)
        t0 = time.monotonic()
        await send(ws, type="Clear")
        await collect(ws, cut, until=of("Cleared"), timeout=10)
        clear_s = time.monotonic() - t0
        assert cut.msgs[-1] == {"type": "Cleared", "sequence_id": 1}
        await send(ws, type="Speak", text=SECOND + " ")
        await send(ws, type="Flush")
        second = await collect(ws, Got(), until=of("Flushed"))
        assert second.msgs[-1] == {"type": "Flushed", "sequence_id": 1}
        assert heard(second, SECOND) >= 0.5
        await send(ws, type="Speak", text="Goodbye for now. ")
        await send(ws, type="Close")
        last = await collect(ws, Got())
    assert last.close_code == 1000 and len(last.binary) > 0  # Close speaks the rest
    assert len(b"".join(cut.binary)) / 32000 < 15  # far less than the whole LONG text
    assert clear_s < 1.0, clear_s  # not a timing test: a chunk runs far longer


@pytest.mark.parametrize(
    ("encoding", "rate", "raw"),
    [
        ("linear16", "8000", "s16le"),
        ("linear16", "24000", "s16le"),
        ("linear16", "32000", "s16le"),
        ("linear16", "48000", "s16le"),
        ("mulaw", "8000", "mulaw"),
        ("mulaw", "16000", "mulaw"),
        ("alaw", "8000", "alaw"),
        ("alaw", "16000", "alaw"),
    ],
)
async def test_encodings_decode_with_ffmpeg(
    server: ServerProcess, encoding: str, rate: str, raw: str
) -> None:
    async with await connect(url(server, encoding=encoding, sample_rate=rate)) as ws:
        await send(ws, type="Speak", text=SENTENCE)
        await send(ws, type="Close")
        got = await collect(ws, Got())
    assert got.close_code == 1000
    assert heard(got, SENTENCE, raw, int(rate)) >= 0.5


async def test_bad_settings_refuse_the_handshake_with_dg_error(server: ServerProcess) -> None:
    for query, code in [
        ({"encoding": "flac"}, "UNSUPPORTED_ENCODING"),
        ({"sample_rate": "44100"}, "UNSUPPORTED_SAMPLE_RATE"),
        ({"encoding": "mulaw", "sample_rate": "24000"}, "UNSUPPORTED_SAMPLE_RATE"),
        ({"container": "wav"}, "UNSUPPORTED_CONTAINER"),
    ]:
        status, body = await ws_refused(url(server, **query))
        assert status == 400 and body["err_code"] == code, (query, body)


async def test_unknown_messages_warn_and_the_session_goes_on(server: ServerProcess) -> None:
    async with await connect(url(server)) as ws:
        await collect(ws, Got(), until=of("Metadata"), timeout=10)
        await send(ws, type="Shout", text="hi")
        await send(ws, type="Speak")
        await ws.send("{nope")
        got = Got()
        for _ in range(2):
            await collect(ws, got, until=of("Warning"), timeout=10)
        codes = [m["warn_code"] for m in got.msgs if m["type"] == "Warning"]
        assert codes == ["UNKNOWN_MESSAGE_TYPE", "MISSING_TEXT"]
        err = await collect(ws, got, timeout=10)  # invalid JSON is fatal: Error, then 1008
    errors = [m for m in err.msgs if m["type"] == "Error"]
    assert errors and errors[0]["err_code"] == "invalid_json" and err.close_code == 1008


async def test_bad_input_gets_the_dialect_error_with_a_healthy_session_beside(
    server: ServerProcess,
) -> None:
    """A fatal error is an ``Error`` and the close; a message the session skips is a
    ``Warning`` and the connection goes on (its Close then ends it normally)."""
    cases: list[tuple[str | bytes, str, str, int | None]] = [
        ("{not json", "Error", "invalid_json", 1008),
        ("[1, 2]", "Error", "invalid_message", 1008),
        (b"\x00\x01", "Error", "binary_not_allowed", 1003),
        ('{"type": "Shout"}', "Warning", "UNKNOWN_MESSAGE_TYPE", None),
        ('{"type": 5}', "Warning", "invalid_field", None),
        ('{"type": "Speak"}', "Warning", "MISSING_TEXT", None),
    ]
    async with await connect(url(server)) as healthy:
        await send(healthy, type="Speak", text=SENTENCE)
        for message, kind, code, close in cases:
            async with await connect(url(server)) as ws:
                await ws.send(message)
                got = await collect(ws, Got(), until=of(kind), timeout=20)
                if close is None:
                    await send(ws, type="Close")
                got = await collect(ws, got, timeout=20)
            errs = [m for m in got.msgs if m["type"] in ("Warning", "Error")]
            key = "warn_code" if kind == "Warning" else "err_code"
            assert [(m["type"], m[key]) for m in errs] == [(kind, code)], (message, got.msgs)
            assert errs[0]["description"], errs
            assert got.close_code == (close or 1000), (message, got.close_code)
        # an oversize message: the WebSocket layer closes with 1009, naming the limit
        async with await connect(url(server)) as ws:
            await collect(ws, Got(), until=of("Metadata"), timeout=10)
            await send(ws, type="Speak", text="a" * 70_000)
            got = await collect(ws, Got(), timeout=20)
        assert got.close_code == 1009 and "65536" in got.close_reason and not got.msgs
        await send(healthy, type="Flush")
        ok = await collect(healthy, Got(), until=of("Flushed"))
        await send(healthy, type="Close")
        await collect(healthy, Got())
    assert heard(ok, SENTENCE) >= 0.5


async def test_a_model_that_is_no_voice_or_engine_is_refused_naming_it(
    server: ServerProcess,
) -> None:
    status, body = await ws_refused(url(server, model="aura-2-nobody-en"))
    assert status == 400 and body["err_code"] == "UNKNOWN_MODEL"
    assert "aura-2-nobody-en" in body["err_msg"]
    # an engine's name is a model too: its default voice speaks
    async with await connect(url(server, model="piper")) as ws:
        await send(ws, type="Speak", text=SENTENCE)
        await send(ws, type="Close")
        got = await collect(ws, Got())
    assert heard(got, SENTENCE) >= 0.5


def sample(server: ServerProcess, series: str) -> float:
    """One labelled sample from /metrics (0 when absent)."""
    with urllib.request.urlopen(server.http + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(series + " "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_are_labelled_by_protocol(server: ServerProcess) -> None:
    started = 'voxwire_sessions_total{engine="piper",protocol="deepgram"}'
    ttfa = 'voxwire_time_to_first_audio_seconds_count{engine="piper",protocol="deepgram"}'
    before, ttfa_before = sample(server, started), sample(server, ttfa)
    async with await connect(url(server)) as ws:
        await collect(ws, Got(), until=of("Metadata"), timeout=10)
        assert sample(server, 'voxwire_active_connections{protocol="deepgram"}') >= 1
        await send(ws, type="Speak", text=SENTENCE)
        await send(ws, type="Close")
        await collect(ws, Got())
    assert sample(server, started) == before + 1
    assert sample(server, ttfa) == ttfa_before + 1
