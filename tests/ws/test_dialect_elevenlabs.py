"""ElevenLabs' stream-input and multi-stream-input against a real server, with a raw
WebSocket client: every message type, the output formats, the errors, barge-in."""

from __future__ import annotations

import time

import pytest

from tests.dialects.wire import Got, collect, ffmpeg_decode, send
from tests.support import ServerProcess, connect, transcribe, word_recall

VOICE = "en_US-joe-medium"
SENTENCE = "Our meeting with the bank has moved to Thursday afternoon."
LONG = " ".join(
    [
        "The train to the city leaves at noon from the second platform.",
        "My brother bought a new red bicycle for his long ride to work.",
        "We planted tomatoes and green beans in the garden last spring.",
    ]
    * 4
)
BIG = (LONG + " ") * 20  # ~15,000 characters: two of them are over max_buffered_chars


def url(server: ServerProcess, path: str = "multi-stream-input", **query: str) -> str:
    q = "&".join(f"{k}={v}" for k, v in {"output_format": "pcm_16000", **query}.items())
    return f"ws://127.0.0.1:{server.port}/v1/text-to-speech/{VOICE}/{path}?{q}"


def final(ctx: str | None = None):  # type: ignore[no-untyped-def]
    return lambda m: m.get("isFinal") is True and (ctx is None or m.get("contextId") == ctx)


def heard(pcm: bytes, text: str, rate: int = 16000) -> float:
    x, r = ffmpeg_decode(pcm, "s16le", rate)
    return word_recall(text, transcribe(x, r))


async def test_single_context_speaks_then_final_and_closes(server: ServerProcess) -> None:
    async with await connect(url(server, "stream-input")) as ws:
        await send(
            ws,
            text=" ",
            voice_settings={"stability": 0.5, "similarity_boost": 0.8},
            # documented as ignored: accepted, and the speech still comes
            generation_config={"chunk_length_schedule": [120, 160, 250, 290]},
        )
        for word in SENTENCE.split(" "):  # an LLM's tokens
            await send(ws, text=word + " ", try_trigger_generation=True)
        await send(ws, text="")  # end of input
        got = await collect(ws, Got())
    assert got.close_code == 1000
    assert got.msgs[-1] == {"isFinal": True}
    assert all("contextId" not in m for m in got.msgs)
    assert heard(got.audio(), SENTENCE) >= 0.5


async def test_multi_context_flush_then_close_context_speaks_it_all(server: ServerProcess) -> None:
    """Pipecat's end of a reply: the text, a flush, and close_context at once."""
    async with await connect(url(server, auto_mode="true")) as ws:
        await send(ws, text=" ", context_id="r1", voice_settings={"speed": 1.0})
        await send(ws, text=SENTENCE, context_id="r1")
        await send(ws, flush=True, context_id="r1")
        await send(ws, close_context=True, context_id="r1")
        got = await collect(ws, Got(), until=final("r1"))
        assert {m.get("contextId") for m in got.msgs} == {"r1"}
        assert heard(got.audio(ctx="r1"), SENTENCE) >= 0.5
        # keep-alives (with and without a context) end nothing
        await send(ws, text="", context_id="r1")
        await send(ws, text="")
        await send(ws, text=" ", context_id="r2")
        await send(ws, text="Thank you, goodbye.", context_id="r2", flush=True)
        more = await collect(ws, Got(), until=lambda m: bool(m.get("audio")), timeout=30)
        assert more.msgs[-1]["contextId"] == "r2"
        await send(ws, close_socket=True)
        rest = await collect(ws, more)
    assert rest.close_code == 1000
    assert final("r2")(rest.msgs[-1])


async def test_close_context_mid_reply_stops_its_audio_at_once(server: ServerProcess) -> None:
    """An interruption: close_context without a flush stops the audio; isFinal follows
    at once and the next context is spoken."""
    async with await connect(url(server)) as ws:
        await send(ws, text=" ", context_id="a")
        await send(ws, text=LONG, context_id="a")
        got = await collect(ws, Got(), until=lambda m: bool(m.get("audio")), timeout=30)
        t0 = time.monotonic()
        await send(ws, close_context=True, context_id="a")
        await collect(ws, got, until=final("a"), timeout=10)
        stop_s = time.monotonic() - t0
        audio_a = len(got.audio(ctx="a"))
        await send(ws, text=" ", context_id="b")
        await send(ws, text=SENTENCE, context_id="b", flush=True)
        await send(ws, close_context=True, context_id="b")
        await collect(ws, got, until=final("b"))
        after = [m for m in got.msgs[got.msgs.index({"isFinal": True, "contextId": "a"}) :]]
    # no audio of "a" after its final; far less than the whole text was spoken
    assert all(m.get("contextId") != "a" for m in after[1:])
    assert audio_a / 32000 < 15
    assert heard(got.audio(ctx="b"), SENTENCE) >= 0.5
    assert stop_s < 1.0, stop_s  # not a timing test: the chunk runs far longer


async def test_two_contexts_at_once_keep_their_audio_apart(server: ServerProcess) -> None:
    a, b = SENTENCE, "Open the window because the kitchen is getting very hot."
    async with await connect(url(server)) as ws:
        for ctx, text in (("a", a), ("b", b)):
            await send(ws, text=" ", context_id=ctx)
            await send(ws, text=text, context_id=ctx, flush=True)
            await send(ws, close_context=True, context_id=ctx)
        got = await collect(ws, Got(), until=final("a"))
        if not final("b")(got.msgs[-1]) and not any(final("b")(m) for m in got.msgs):
            await collect(ws, got, until=final("b"))
    assert heard(got.audio(ctx="a"), a) >= 0.5
    assert heard(got.audio(ctx="b"), b) >= 0.5


async def test_a_sixth_context_is_refused_with_1008(server: ServerProcess) -> None:
    async with await connect(url(server)) as healthy:
        await send(healthy, text=" ", context_id="h")
        await send(healthy, text=SENTENCE, context_id="h", flush=True)
        async with await connect(url(server)) as ws:
            for n in range(5):
                await send(ws, text=" ", context_id=f"c{n}")
            await send(ws, text=" ", context_id="c5")
            got = await collect(ws, Got(), timeout=20)
        await send(healthy, close_context=True, context_id="h")
        ok = await collect(healthy, Got(), until=final("h"))
    err = [m for m in got.msgs if "error" in m]
    assert err and err[0]["error"] == "max_active_conversations" and err[0]["code"] == 1008
    assert "at most 5 contexts" in err[0]["message"]
    assert got.close_code == 1008
    assert heard(ok.audio(ctx="h"), SENTENCE) >= 0.5


@pytest.mark.parametrize(
    ("fmt", "raw", "rate"),
    [
        ("pcm_8000", "s16le", 8000),
        ("pcm_22050", "s16le", 22050),
        ("pcm_24000", "s16le", 24000),
        ("pcm_44100", "s16le", 44100),
        ("pcm_48000", "s16le", 48000),
        ("ulaw_8000", "mulaw", 8000),
        ("alaw_8000", "alaw", 8000),
        ("mp3_44100_128", None, None),
        ("mp3_22050_32", None, None),
        ("opus_48000_64", None, None),
    ],
)
async def test_output_formats_decode_with_ffmpeg(
    server: ServerProcess, fmt: str, raw: str | None, rate: int | None
) -> None:
    async with await connect(url(server, "stream-input", output_format=fmt)) as ws:
        await send(ws, text=" ")
        await send(ws, text=SENTENCE)
        await send(ws, text="")
        got = await collect(ws, Got())
    assert got.close_code == 1000
    x, r = ffmpeg_decode(got.audio(), raw, rate)
    assert 2.0 < len(x) / r < 8.0
    assert word_recall(SENTENCE, transcribe(x, r)) >= 0.5


async def test_alignment_times_the_characters_sent(server: ServerProcess) -> None:
    async with await connect(url(server, "stream-input", output_format="pcm_16000")) as ws:
        await send(ws, text=" ")
        await send(ws, text=SENTENCE)
        await send(ws, text="")
        got = await collect(ws, Got())
    aligns = [m["alignment"] for m in got.msgs if m.get("alignment")]
    assert aligns, "no alignment"
    assert all(m["normalizedAlignment"] == m["alignment"] for m in got.msgs if m.get("audio"))
    chars = "".join(c for a in aligns for c in a["chars"])
    assert chars.strip() == SENTENCE
    # times add up the way clients add them (each alignment restarts at 0): increasing,
    # and ending near the end of the audio
    t, ends = 0.0, []
    for a in aligns:
        assert len(a["chars"]) == len(a["charStartTimesMs"]) == len(a["charDurationsMs"])
        starts = a["charStartTimesMs"]
        assert starts == sorted(starts)
        ends.append(t + (starts[-1] + a["charDurationsMs"][-1]) / 1000)
        t = ends[-1]
    audio_s = len(got.audio()) / 32000
    assert audio_s - 1.0 < t <= audio_s + 0.05, (t, audio_s)


async def test_bad_input_gets_the_dialect_error_with_a_healthy_session_beside(
    server: ServerProcess,
) -> None:
    async with await connect(url(server, "stream-input")) as healthy:
        await send(healthy, text=" ")
        await send(healthy, text=SENTENCE)
        cases: list[tuple[str, dict[str, str], str | bytes, str, int]] = [
            ("stream-input", {"output_format": "wav_9"}, "", "invalid_output_format", 1008),
            ("stream-input", {}, "{not json", "invalid_json", 1008),
            ("stream-input", {}, "[1, 2]", "invalid_message", 1008),
            ("stream-input", {}, '{"text": 5}', "invalid_field", 1008),
            ("multi-stream-input", {}, '{"text": " ", "voice_settings": 1}', "invalid_field", 1008),
            ("stream-input", {}, b"\x00\x01", "binary_not_allowed", 1003),
            ("stream-input", {"inactivity_timeout": "500"}, "", "invalid_inactivity_timeout", 1008),
        ]
        for path, query, message, code, close in cases:
            async with await connect(url(server, path, **query)) as ws:
                if message:
                    await ws.send(message)
                got = await collect(ws, Got(), timeout=20)
            # the error itself closes (not a liveness rule later): one error, its code
            errs = [m for m in got.msgs if "error" in m]
            assert [m["error"] for m in errs] == [code], (message, got.msgs)
            assert errs[0]["message"] and errs[0]["code"] == close, (message, errs)
            assert got.close_code == close, (message, got.close_code)
        # an oversize message: the WebSocket layer closes with 1009, naming the limit
        async with await connect(url(server, "stream-input")) as ws:
            await ws.send('{"text": "' + "a" * 100_000 + '"}')
            got = await collect(ws, Got(), timeout=20)
        assert got.close_code == 1009 and "65536" in got.close_reason
        assert not got.msgs
        await send(healthy, text="")
        ok = await collect(healthy, Got())
    assert ok.close_code == 1000 and heard(ok.audio(), SENTENCE) >= 0.5


@pytest.mark.parametrize("first", [{"text": " "}, None], ids=["after-a-context", "silent"])
async def test_inactivity_timeout_closes_an_idle_connection(
    server: ServerProcess, first: dict[str, str] | None
) -> None:
    """ElevenLabs' rule, counted from the connection: one that never speaks gets the
    same close (there is no 'start' to wait for)."""
    async with await connect(url(server, "stream-input", inactivity_timeout="1")) as ws:
        t0 = time.monotonic()
        if first is not None:
            await send(ws, **first)
        got = await collect(ws, Got(), timeout=10)
    assert got.close_code == 1008 and 0.9 < time.monotonic() - t0 < 5
    errs = [m for m in got.msgs if "error" in m]
    assert [m["error"] for m in errs] == ["idle_timeout"] and "1 s" in errs[0]["message"]


async def test_unknown_voice_is_named_in_the_error(server: ServerProcess) -> None:
    u = url(server, "stream-input").replace(VOICE, "no-such-voice")
    async with await connect(u) as ws:
        await send(ws, text=" ")
        got = await collect(ws, Got(), timeout=20)
    [err] = [m for m in got.msgs if "error" in m]
    assert err["error"] == "unknown_voice" and "no-such-voice" in err["message"]
    assert got.close_code == 1008


def _error(m: dict[str, object]) -> bool:
    return "error" in m


@pytest.mark.parametrize(
    ("query", "messages", "code", "close"),
    [
        # over max_buffered_chars: that text is dropped, the rest is still spoken
        ({}, [{"text": " "}, {"text": BIG}, {"text": BIG}], "text_buffer_full", None),
        # text after the end of input: dropped, the context is spoken to its end
        (
            {},
            [{"text": " "}, {"text": SENTENCE}, {"text": ""}, {"text": "No."}],
            "session_ending",
            1000,
        ),
        ({"language_code": "xx"}, [{"text": " "}], "unsupported_language", 1008),
    ],
    ids=["text_buffer_full", "session_ending", "unsupported_language"],
)
async def test_documented_errors(
    server: ServerProcess,
    query: dict[str, str],
    messages: list[dict[str, str]],
    code: str,
    close: int | None,
) -> None:
    async with await connect(url(server, "stream-input", **query)) as ws:
        for m in messages:
            await send(ws, **m)
        got = await collect(ws, Got(), until=_error, timeout=20)
        err = got.msgs[-1]
        assert err.get("error") == code and err["message"], got.msgs[-3:]
        if close != 1008:
            assert "code" not in err, err  # the connection goes on
        if close is None:  # its audio keeps coming
            n = len(got.msgs)
            await collect(ws, got, until=lambda m: bool(m.get("audio")), timeout=30)
            assert len(got.msgs) > n
        else:
            got = await collect(ws, got, timeout=60)
    if close is not None:
        assert got.close_code == close
    if code == "session_ending":
        assert got.msgs[-1] == {"isFinal": True} and heard(got.audio(), SENTENCE) >= 0.5
