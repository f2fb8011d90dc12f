"""The rules every dialect shares with the native protocol, on one server with keys on
and tight limits: keys in each dialect's own place, browser tokens, the Origin check,
the key's session limit, ``max_session_chars``, no start deadline, model ids as
``GET /v1/models`` lists them, and metrics and log lines named by protocol."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from websockets.asyncio.client import ClientConnection

from tests.dialects.wire import Got, collect, send
from tests.support import ServerProcess, connect, logged, ws_refused

KEY = "vw_test_key_dialects_0123456789"
VOICE = "en_US-joe-medium"
DIALECTS = ["elevenlabs", "deepgram", "cartesia"]
# each dialect's own place for the key
HEADERS = {
    "elevenlabs": {"xi-api-key": KEY},
    "deepgram": {"Authorization": f"Token {KEY}"},
    "cartesia": {"X-API-Key": KEY},
}
OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
PCM16 = {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 16000}


@pytest.fixture(scope="module")
def secured() -> Iterator[ServerProcess]:
    # replay is the default engine, so a model id that picks "the default engine" is
    # told apart from one that is ignored (the voice's engine: piper)
    srv = ServerProcess(
        api_keys=KEY,
        key_max_sessions=1,
        start_timeout_s=1,
        max_session_chars=300,
        replay_engine=True,
        engine="replay",
    )
    srv.wait_ready()
    yield srv
    srv.stop()


def el(srv: ServerProcess) -> str:
    return (
        f"ws://127.0.0.1:{srv.port}/v1/text-to-speech/{VOICE}/stream-input?output_format=pcm_16000"
    )


def dial(
    srv: ServerProcess, dialect: str, model: str | None = None, token: str | None = None
) -> str:
    """A dialect's URL (a multi-context one for ElevenLabs)."""
    q: dict[str, str] = {}
    if dialect == "elevenlabs":
        path = f"/v1/text-to-speech/{VOICE}/multi-stream-input"
        q["output_format"] = "pcm_16000"
        if model:
            q["model_id"] = model
    elif dialect == "deepgram":
        path = "/v1/speak"
        q.update(model=model or VOICE, encoding="linear16", sample_rate="16000")
    else:
        path = "/tts/websocket"
    if token:
        q["token"] = token
    return f"ws://127.0.0.1:{srv.port}{path}" + ("?" + urlencode(q) if q else "")


def cartesia_request(text: str, model: str | None, more: bool = True) -> dict[str, Any]:
    m = {"context_id": "c", "transcript": text, "continue": more, "output_format": PCM16}
    m["voice"] = {"mode": "id", "id": VOICE}
    return {**m, "model_id": model} if model else m


async def say(ws: ClientConnection, dialect: str, text: str, model: str | None = None) -> Got:
    """``text`` spoken in one context, then the connection ended: all it got."""
    if dialect == "elevenlabs":
        await send(ws, text=" ", context_id="c")
        await send(ws, text=text, context_id="c", flush=True)
        await send(ws, close_socket=True)
        return await collect(ws, Got())
    if dialect == "deepgram":
        await send(ws, type="Speak", text=text)
        await send(ws, type="Close")
        return await collect(ws, Got())
    await send(ws, **cartesia_request(text, model, more=False))
    got = await collect(ws, Got(), until=lambda m: m["type"] in ("done", "error"))
    await ws.close()
    return got


def audio(got: Got, dialect: str) -> bytes:
    if dialect == "elevenlabs":
        return got.audio()
    if dialect == "deepgram":
        return b"".join(got.binary)
    return got.audio("data", "c", "context_id")


def error_of(m: dict[str, Any]) -> tuple[str | None, str]:
    """(code, message) of a dialect's error or warning message; (None, "") otherwise."""
    if "error" in m and "message" in m:  # ElevenLabs
        return m["error"], m["message"]
    if m.get("type") in ("Error", "Warning"):  # Deepgram
        return m.get("err_code") or m.get("warn_code"), m["description"]
    if m.get("type") == "error":  # Cartesia
        return m["title"], m["error"]
    return None, ""


def is_error(m: dict[str, Any]) -> bool:
    return error_of(m)[0] is not None


def is_fatal(m: dict[str, Any]) -> bool:
    """An error that closes the connection, in the dialect's own terms."""
    return (
        "code" in m if "message" in m else m.get("type") == "Error" or m.get("status_code") == 500
    )


def _get(srv: ServerProcess, path: str) -> bytes:
    req = urllib.request.Request(srv.http + path, headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        body: bytes = r.read()
        return body


def sample(srv: ServerProcess, series: str) -> float:
    """One labelled sample from /metrics (0 when absent)."""
    for line in _get(srv, "/metrics").decode().splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def mint(srv: ServerProcess) -> str:
    req = urllib.request.Request(
        srv.http + "/v1/tokens",
        data=b"{}",
        method="POST",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        token: str = json.loads(r.read())["token"]
        return token


async def settled(srv: ServerProcess, timeout: float = 10.0) -> None:
    """Every session that started has ended, so the key's one slot is free again (the
    server frees it just before it logs ``session_end``)."""
    deadline = time.monotonic() + timeout
    while True:
        started = {e["session_id"] for e in srv.log_events("session_start")}
        ended = {e["session_id"] for e in srv.log_events("session_end")}
        if started <= ended or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


async def new_line(
    srv: ServerProcess, event: str, seen: int, timeout: float = 10.0
) -> dict[str, Any]:
    """The first ``event`` line after the ``seen`` there were."""
    deadline = time.monotonic() + timeout
    while len(lines := srv.log_events(event)) <= seen:
        assert time.monotonic() < deadline, f"no new {event} line"
        await asyncio.sleep(0.05)
    return lines[seen]


# ------------------------------------------------------------------ keys


async def speak_el(ws) -> Got:  # type: ignore[no-untyped-def]
    await send(ws, text="Hello there.")
    await send(ws, text="")
    return await collect(ws, Got())


async def test_elevenlabs_key_in_the_header_or_the_first_message(secured: ServerProcess) -> None:
    await settled(secured)
    async with await connect(el(secured), additional_headers={"xi-api-key": KEY}) as ws:
        got = await speak_el(ws)
    assert got.close_code == 1000 and got.audio()
    await settled(secured)
    async with await connect(el(secured)) as ws:
        await send(ws, text=" ", xi_api_key=KEY)
        got = await speak_el(ws)
    assert got.close_code == 1000 and got.audio()
    for first, code in (
        ({"text": " "}, "missing_api_key"),
        ({"text": " ", "xi_api_key": "wrong"}, "invalid_api_key"),
    ):
        async with await connect(el(secured)) as ws:
            await send(ws, **first)
            got = await collect(ws, Got(), timeout=10)
        assert got.close_code == 1008
        assert got.msgs[-1]["error"] == code and got.msgs[-1]["code"] == 1008
        assert "xi-api-key" in got.msgs[-1]["message"] and not got.audio()
    # a wrong key in the header is refused at the handshake
    status, body = await ws_refused(el(secured), additional_headers={"xi-api-key": "nope"})
    assert status == 401 and body["error"]["code"] == "invalid_api_key"


async def test_deepgram_token_and_cartesia_x_api_key(secured: ServerProcess) -> None:
    await settled(secured)
    dg = f"ws://127.0.0.1:{secured.port}/v1/speak?model={VOICE}"
    status, _ = await ws_refused(dg)
    assert status == 401
    async with await connect(dg, additional_headers={"Authorization": f"Token {KEY}"}) as ws:
        await send(ws, type="Speak", text="Hello there.")
        await send(ws, type="Close")
        got = await collect(ws, Got())
    assert got.close_code == 1000 and got.binary
    await settled(secured)
    ca = f"ws://127.0.0.1:{secured.port}/tts/websocket"
    status, body = await ws_refused(ca + f"?api_key={KEY}")
    assert status == 400 and body["error"]["code"] == "key_in_url"
    async with await connect(ca, additional_headers={"X-API-Key": KEY}) as ws:
        voice = {"mode": "id", "id": VOICE}
        await send(ws, context_id="c", transcript="Hello.", voice=voice, output_format=PCM16)
        got = await collect(ws, Got(), until=lambda m: m["type"] == "done")
    assert got.audio("data", "c", "context_id")


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_browser_token_opens_every_dialect(secured: ServerProcess, dialect: str) -> None:
    await settled(secured)
    async with await connect(dial(secured, dialect, token=mint(secured))) as ws:
        got = await say(ws, dialect, "Hello there.")
    assert audio(got, dialect)
    status, body = await ws_refused(dial(secured, dialect, token="forged.token"))
    assert status == 401 and body["error"]["code"] == "invalid_token"


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_foreign_origin_is_refused(secured: ServerProcess, dialect: str) -> None:
    headers = {**HEADERS[dialect], "Origin": "https://evil.example"}
    status, body = await ws_refused(dial(secured, dialect), additional_headers=headers)
    assert status == 403 and body["error"]["code"] == "origin_not_allowed"


# ------------------------------------------------------------------ limits


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_the_keys_session_limit_covers_every_dialect(
    secured: ServerProcess, dialect: str
) -> None:
    await settled(secured)
    seen = len(secured.log_events("session_start"))
    headers = HEADERS[dialect]
    async with await connect(dial(secured, dialect), additional_headers=headers) as first:
        await new_line(secured, "session_start", seen)  # it holds the key's one slot
        async with await connect(dial(secured, dialect), additional_headers=headers) as second:
            got = await collect(second, Got(), timeout=10)
        assert got.close_code == 1008, got.close_code
        assert [error_of(m)[0] for m in got.msgs if is_error(m)] == ["limit_exceeded"]
        assert is_fatal(got.msgs[-1]), got.msgs[-1]
        done = await say(first, dialect, "Hello there.")
    assert audio(done, dialect)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_session_text_limit_drops_the_text_and_the_context_goes_on(
    secured: ServerProcess, dialect: str
) -> None:
    """max_session_chars is 300 here: 250 characters are taken, 100 more are not, and
    the context is still spoken to its end."""
    text = "word " * 50
    await settled(secured)
    async with await connect(
        dial(secured, dialect, model="replay"), additional_headers=HEADERS[dialect]
    ) as ws:
        if dialect == "elevenlabs":
            await send(ws, text=" ", context_id="c")
            for part in (text, text[:100]):
                await send(ws, text=part, context_id="c")
        elif dialect == "deepgram":
            for part in (text, text[:100]):
                await send(ws, type="Speak", text=part)
        else:
            for part in (text, text[:100]):
                await send(ws, **cartesia_request(part, "replay"))
        got = await collect(ws, Got(), until=is_error, timeout=20)
        code, message = error_of(got.msgs[-1])
        assert code == "session_text_limit" and "max_session_chars" in message
        assert not is_fatal(got.msgs[-1]), got.msgs[-1]
        # the same context goes on to its end
        if dialect == "elevenlabs":
            await send(ws, flush=True, context_id="c")
            await send(ws, close_context=True, context_id="c")
            await collect(ws, got, until=lambda m: m.get("isFinal") is True, timeout=30)
        elif dialect == "deepgram":
            await send(ws, type="Flush")
            await collect(ws, got, until=lambda m: m.get("type") == "Flushed", timeout=30)
        else:
            await send(ws, **cartesia_request("", "replay", more=False))
            await collect(ws, got, until=lambda m: m["type"] in ("done", "error"), timeout=30)
            assert got.msgs[-1]["type"] == "done", got.msgs[-1]
    assert len([m for m in got.msgs if is_error(m)]) == 1
    assert len(audio(got, dialect)) / 32000 > 5  # the 250 characters, spoken


@pytest.mark.parametrize("dialect", ["elevenlabs", "cartesia"])
async def test_a_connection_may_wait_for_its_first_context(
    secured: ServerProcess, dialect: str
) -> None:
    """start_timeout_s is 1 s here, and it does not apply: a client (Pipecat) connects
    before its first reply and may only send keep-alives until then."""
    await settled(secured)
    async with await connect(dial(secured, dialect), additional_headers=HEADERS[dialect]) as ws:
        for _ in range(3):
            if dialect == "elevenlabs":
                await send(ws, text="")  # a keep-alive: it opens no context
            await asyncio.sleep(0.75)
        got = await say(ws, dialect, "Hello there.")
    assert not [m for m in got.msgs if is_error(m)] and audio(got, dialect)


# ------------------------------------------------------------------ models


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_model_ids_pick_the_engine_v1_models_names(
    secured: ServerProcess, dialect: str
) -> None:
    """An engine's name picks it; OpenAI's ids the default engine (replay here), as on
    POST /v1/audio/speech; a vendor's own id is ignored (the voice's engine, piper)."""
    listed = [m["id"] for m in json.loads(_get(secured, "/v1/models"))["data"]]
    assert {"piper", "replay", *OPENAI_MODELS} <= set(listed)
    want = {m: "replay" if m in OPENAI_MODELS else m for m in listed}
    vendor = {"elevenlabs": "eleven_flash_v2_5", "cartesia": "sonic-2"}.get(dialect)
    if vendor is not None:  # (Deepgram refuses a model it does not know)
        want[vendor] = "piper"
    picked: dict[str, str] = {}
    for model in want:
        await settled(secured)
        seen = len(secured.log_events("context_start"))
        url = dial(secured, dialect, model=model)
        async with await connect(url, additional_headers=HEADERS[dialect]) as ws:
            got = await say(ws, dialect, "Hi.", model)
        assert audio(got, dialect), (model, got.msgs[-3:])
        picked[model] = (await new_line(secured, "context_start", seen))["engine"]
    assert picked == want


# ------------------------------------------------------------------ metrics and logs


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_metrics_and_log_lines_name_the_protocol(
    secured: ServerProcess, dialect: str
) -> None:
    await settled(secured)
    labels = f'engine="piper",protocol="{dialect}"'
    streams = f"voxwire_sessions_total{{{labels}}}"
    ttfa = f"voxwire_time_to_first_audio_seconds_count{{{labels}}}"
    active = f'voxwire_active_connections{{protocol="{dialect}"}}'
    before, ttfa_before = sample(secured, streams), sample(secured, ttfa)
    seen = len(secured.log_events("session_start"))
    async with await connect(dial(secured, dialect), additional_headers=HEADERS[dialect]) as ws:
        start = await new_line(secured, "session_start", seen)
        assert sample(secured, active) == 1
        got = await say(ws, dialect, "Hello there.")
    assert audio(got, dialect)
    sid = start["session_id"]
    [end] = await logged(secured, "session_end", lambda e: e["session_id"] == sid)
    assert start["protocol"] == end["protocol"] == dialect
    assert end["contexts"] == 1 and end["audio_s"] > 0.3 and end["chars"] > 0
    contexts = [e for e in secured.log_events("context_start") if e["session_id"] == f"{sid}.c"]
    if dialect == "deepgram":  # its one stream is context "0"
        contexts = [e for e in secured.log_events("context_start") if e["session_id"] == f"{sid}.0"]
    assert [(e["protocol"], e["engine"]) for e in contexts] == [(dialect, "piper")]
    assert sample(secured, streams) == before + 1
    assert sample(secured, ttfa) == ttfa_before + 1
    assert sample(secured, active) == 0
