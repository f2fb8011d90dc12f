"""Voices and languages on a real server (issue 17): Piper voices from
``piper_voices_dir``, language routing (``language_voices``), ``GET /v1/engines``
capabilities, ``GET /v1/voices`` filters, per-stream ``engine_options`` over the
WebSocket and the speech API (the OpenAI SDK's ``extra_body``), and ``stream: false``."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from tests.engines.piper_voice_files import (
    BOB_SLOWER,
    GERMAN,
    LOW,
    TWO,
    add_two_speaker_voice,
    voices_folder,
)
from tests.prom import scrape
from tests.support import (
    Received,
    ServerProcess,
    connect,
    get_json,
    recv_until,
    send,
    transcribe,
    word_recall,
)

JOE = "en_US-joe-medium"
TEXT = "Our meeting with the bank has moved to Thursday afternoon."
QUIET = {"noise_scale": 0.0, "noise_w": 0.0}  # Piper repeats itself exactly


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = voices_folder(tmp_path_factory.mktemp("voices"))
    add_two_speaker_voice(folder)
    srv = ServerProcess(piper_voices_dir=str(folder), language_voices=f"en-GB={LOW}")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def test_engines_list_languages_voices_options_and_outputs(server: ServerProcess) -> None:
    status, body = get_json(server.http + "/v1/engines")
    assert status == 200
    (piper,) = body["engines"]
    assert piper["languages"] == ["de", "en"]
    assert sorted(piper["voices"]) == sorted([JOE, GERMAN, LOW, TWO])
    assert set(piper["options"]) == {"noise_scale", "noise_w", "speaker"}
    assert piper["clones"] is False and piper["word_timings"] == "aligned"
    ranges = {o["name"]: o for o in body["options"]}
    assert (ranges["noise_scale"]["min"], ranges["noise_scale"]["max"]) == (0.0, 2.0)
    assert ranges["nfe_steps"]["type"] == "integer"
    assert "opus" in body["outputs"]["encodings"] and body["outputs"]["max_rate"] == 48000


def _ids(server: ServerProcess, query: str) -> list[str]:
    status, body = get_json(server.http + "/v1/voices" + query)
    assert status == 200
    return sorted(v["id"] for v in body["voices"])


def test_voices_filter_by_language_locale_and_engine(server: ServerProcess) -> None:
    assert _ids(server, "?language=de") == [GERMAN]
    assert _ids(server, "?language=en") == [LOW, JOE, TWO]
    assert _ids(server, "?language=en_GB") == [LOW]
    assert _ids(server, "?language=EN-us&engine=piper") == [JOE, TWO]
    assert _ids(server, "?engine=f5") == []
    assert _ids(server, "?language=fr") == []
    status, voice = get_json(server.http + f"/v1/voices/{LOW}")
    assert status == 200
    assert (voice["locale"], voice["quality"], voice["sample_rate"]) == ("en_GB", "low", 16000)


async def _session(server: ServerProcess, text: str = TEXT, **start: Any) -> Received:
    async with await connect(server.ws_url) as ws:
        out = {"encoding": "pcm_s16le", "sample_rate": 16000}
        await send(ws, type="start", output=out, **start)
        # a refused start is not fatal (the socket waits for another start): stop there
        rec = await recv_until(ws, Received(), stop=("ready", "error"), timeout=30)
        if rec.of("error"):
            return rec
        await send(ws, type="text", text=text)
        await send(ws, type="end")
        return await recv_until(ws, rec, timeout=60)


@pytest.mark.parametrize(
    ("language", "voice"),
    [("de", GERMAN), ("de-AT", GERMAN), ("en-GB", LOW), ("en", JOE), (None, JOE)],
)
async def test_a_language_without_a_voice_picks_that_languages_voice(
    server: ServerProcess, language: str | None, voice: str
) -> None:
    start = {} if language is None else {"language": language}
    rec = await _session(server, "Hello.", **start)
    assert rec.of("ready")[0]["voice"] == voice
    assert rec.of("done") and rec.frames


async def test_an_unsupported_language_lists_the_ones_there_are(server: ServerProcess) -> None:
    rec = await _session(server, language="fr")
    err = rec.of("error")[0]
    assert err["code"] == "unsupported_language"
    assert "'fr'" in err["message"] and "de, en" in err["message"]


async def test_the_voice_the_language_picked_is_the_one_heard(server: ServerProcess) -> None:
    """The "low" voice is the same model read as 16 kHz: resampled, its audio lasts
    22050/16000 as long as the default voice's, and it still says the sentence."""
    en = await _session(server, engine_options=QUIET)
    gb = await _session(server, language="en-GB", engine_options=QUIET)
    n_en, n_gb = (sum(len(f) for f in r.frames) for r in (en, gb))
    assert n_gb / n_en == pytest.approx(22050 / 16000, rel=0.03)
    pcm = b"".join(gb.frames)
    audio = np.frombuffer(pcm, "<i2").astype(np.float32) / np.float32(32768)
    # played 22050/16000 faster (as the model made it), the recognizer hears the words
    assert word_recall(TEXT, transcribe(audio, 22050)) >= 0.5


async def test_engine_options_reach_the_engine_process(server: ServerProcess) -> None:
    a = await _session(server, engine_options=QUIET)
    b = await _session(server, engine_options=QUIET)
    assert a.frames and b"".join(a.frames) == b"".join(b.frames)
    c = await _session(server)
    d = await _session(server)
    assert b"".join(c.frames) != b"".join(d.frames)  # the voice's own noise, every time


async def test_a_multi_speaker_voice_speaks_the_speaker_chosen(server: ServerProcess) -> None:
    """engine_options.speaker names one of the voice's speakers (its speaker_id_map):
    Piper runs the model with that speaker id. The test voice's speaker "bob" (id 1)
    speaks with BOB_SLOWER times the length scale of "ann" (id 0, the default)."""
    status, voice = get_json(server.http + f"/v1/voices/{TWO}")
    assert status == 200 and voice["speakers"] == ["ann", "bob"]

    async def pcm(**options: Any) -> bytes:
        rec = await _session(server, voice=TWO, engine_options={**QUIET, **options})
        assert rec.of("done") and not rec.of("error"), rec.events
        return b"".join(rec.frames)

    ann, bob = await pcm(speaker="ann"), await pcm(speaker="bob")
    assert await pcm() == ann  # no speaker named: the voice's default, id 0
    assert 1.3 < len(bob) / len(ann) <= BOB_SLOWER
    audio = np.frombuffer(bob, "<i2").astype(np.float32) / np.float32(32768)
    assert word_recall(TEXT, transcribe(audio, 16000)) >= 0.5  # slower, the same words


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"cfg_strength": 2.0}, "engine_options.cfg_strength: engine 'piper' has no such option"),
        ({"speaker": "zoe"}, "engine_options.speaker: voice 'en_US-joe-medium' has no speaker"),
        ({"noise_scale": 9}, "noise_scale"),
        ({"loudness": 1}, "loudness"),
    ],
)
async def test_bad_engine_options_are_named(
    server: ServerProcess, options: dict[str, Any], named: str
) -> None:
    rec = await _session(server, engine_options=options)
    err = rec.of("error")[0]
    assert named in err["message"], err


def _client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.http + "/v1", api_key="not-needed", max_retries=0)


def test_speech_api_language_and_engine_options_through_extra_body(server: ServerProcess) -> None:
    def say(**extra: Any) -> bytes:
        return (
            _client(server)
            .audio.speech.create(
                model="tts-1", voice="alloy", input=TEXT, response_format="wav", extra_body=extra
            )
            .content
        )

    assert say(engine_options=QUIET) == say(engine_options=QUIET)
    gb, us = say(language="en-GB", engine_options=QUIET), say(engine_options=QUIET)
    assert len(gb) / len(us) == pytest.approx(22050 / 16000, rel=0.03)
    with pytest.raises(openai.BadRequestError) as exc:
        say(language="fr")
    assert exc.value.body["param"] == "language"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as exc:
        say(engine_options={"nfe_steps": 8})
    assert exc.value.body["param"] == "engine_options"  # type: ignore[index]


def test_stream_false_returns_one_file_with_its_length(server: ServerProcess) -> None:
    body = {"model": "tts-1", "voice": "alloy", "input": TEXT, "response_format": "wav"}
    r = httpx.post(server.http + "/v1/audio/speech", json={**body, "stream": False}, timeout=60)
    assert r.status_code == 200
    assert int(r.headers["content-length"]) == len(r.content)
    with wave.open(io.BytesIO(r.content)) as w:  # the stdlib's reader, not ours
        assert w.getnframes() / w.getframerate() > 2.0
    streamed = httpx.post(server.http + "/v1/audio/speech", json=body, timeout=60)
    assert "content-length" not in streamed.headers
    bad = httpx.post(
        server.http + "/v1/audio/speech",
        json={**body, "stream": False, "stream_format": "sse"},
        timeout=60,
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "stream"


async def test_resident_voices_are_reported_from_the_engine_processes(
    server: ServerProcess,
) -> None:
    """Each engine process says how many voices it holds; the gauge is their sum."""
    for start in ({"language": "de"}, {"language": "en-GB"}, {}):
        assert (await _session(server, "Hello.", **start)).frames
    live = scrape(server.http)
    resident = live.total("voxwire_engine_resident_voices", engine="piper")
    processes = live.total("voxwire_engine_processes", engine="piper")
    # At least the three spoken here (in one process or across the pool); at most each
    # process holding every voice this module speaks (these three and TWO).
    assert 3 <= resident <= processes * 4, (resident, processes)


async def test_piper_hears_what_espeak_misreads_written_out_and_timings_keep_the_text(
    server: ServerProcess,
) -> None:
    """text_normalization (on by default): Piper is given "three pounds and twenty
    pence" for "£3.20" (espeak-ng alone says "pound three point two zero"), and the
    word timings still name what the client wrote."""
    text = "It costs £3.20 now."
    rec = await _session(server, text, timings="word", engine_options=QUIET)
    words = [w["text"] for ev in rec.of("words") for w in ev["words"]]
    assert "£3.20" in words, words
    audio = np.frombuffer(b"".join(rec.frames), "<i2").astype(np.float32) / np.float32(32768)
    assert "three pounds and twenty pence" in transcribe(audio, 16000)
