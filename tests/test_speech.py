"""OpenAI-compatible ``POST /v1/audio/speech``, driven by the official ``openai`` SDK."""

from __future__ import annotations

import base64
import json
import time

import httpx
import openai
import pytest

from server.streaming.containers import MEDIA_TYPES
from tests.support import ServerProcess, decode_file, rms, transcribe, word_recall

TEXT = (
    "Thank you for calling the city library. Our opening hours today are nine to five, "
    "and the reading room closes at four."
)


def _client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.http + "/v1", api_key="not-needed", max_retries=0)


FORMATS = ["mp3", "opus", "aac", "flac", "wav", "pcm"]
MAGIC = {
    "mp3": (b"ID3", b"\xff\xf3", b"\xff\xfb", b"\xff\xf2"),
    "opus": (b"OggS",),
    "aac": (b"\xff\xf1", b"\xff\xf9"),
    "flac": (b"fLaC",),
    "wav": (b"RIFF",),
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_response_format_decodes_to_the_spoken_text(server: ServerProcess, fmt: str) -> None:
    resp = _client(server).audio.speech.create(
        model="tts-1",
        voice="alloy",
        input=TEXT,
        response_format=fmt,  # type: ignore[arg-type]
    )
    data = resp.content
    if fmt in MAGIC:
        assert data.startswith(MAGIC[fmt]), data[:8]
    audio = decode_file(data, fmt)
    seconds = len(audio) / 16000
    assert 4.0 < seconds < 12.0, seconds
    assert rms(audio) > 0.02
    assert word_recall(TEXT, transcribe(audio, 16000)) >= 0.5


@pytest.mark.parametrize("fmt", FORMATS)
def test_streaming_body_arrives_sentence_by_sentence(server: ServerProcess, fmt: str) -> None:
    arrivals: list[tuple[float, int]] = []
    t0 = time.monotonic()
    with _client(server).audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="nova",
        input=TEXT,
        response_format=fmt,  # type: ignore[arg-type]
    ) as resp:
        assert resp.http_response.headers["content-type"].startswith(MEDIA_TYPES[fmt].split(";")[0])
        body = b""
        for chunk in resp.iter_bytes():
            arrivals.append((time.monotonic() - t0, len(chunk)))
            body += chunk
    # the first sentence's audio left before the last sentence was done
    assert len(arrivals) >= 2
    assert arrivals[0][0] < arrivals[-1][0]
    first_bytes = arrivals[0][1]
    assert first_bytes < len(body) / 2
    assert word_recall(TEXT, transcribe(decode_file(body, fmt), 16000)) >= 0.5


def test_sse_stream_format(server: ServerProcess) -> None:
    with httpx.stream(
        "POST",
        server.http + "/v1/audio/speech",
        timeout=60,
        json={
            "model": "tts-1",
            "voice": "alloy",
            "input": TEXT,
            "response_format": "mp3",
            "stream_format": "sse",
        },
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: ")]
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert len(deltas) >= 2 and events[-1]["type"] == "speech.audio.done"
    assert events[-1]["usage"]["input_tokens"] > 0
    audio = decode_file(b"".join(base64.b64decode(e["audio"]) for e in deltas), "mp3")
    assert word_recall(TEXT, transcribe(audio, 16000)) >= 0.5


def test_voice_as_object_speed_and_instructions(server: ServerProcess) -> None:
    client = _client(server)
    normal = client.audio.speech.create(
        model="piper", voice="en_US-joe-medium", input=TEXT, response_format="pcm"
    )
    fast = client.audio.speech.create(
        model="tts-1",
        voice={"id": "en_US-joe-medium"},
        input=TEXT,
        response_format="pcm",
        speed=2.0,
        instructions="Speak cheerfully.",
    )
    ratio = len(fast.content) / len(normal.content)
    assert 0.4 < ratio < 0.7, ratio


def test_models_lists_engines_and_aliases(server: ServerProcess) -> None:
    ids = [m.id for m in _client(server).models.list()]
    assert ids[0] == "piper" and {"tts-1", "tts-1-hd", "gpt-4o-mini-tts"} <= set(ids)


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "tts-1", "voice": "alloy", "input": "x" * 4097}, 400, "input"),
        ({"model": "tts-1", "voice": "alloy", "input": ""}, 400, "input"),
        ({"model": "tts-1", "voice": "alloy", "input": "hi", "speed": 5}, 400, "speed"),
        (
            {"model": "tts-1", "voice": "alloy", "input": "hi", "response_format": "ogg"},
            400,
            "response_format",
        ),
        ({"model": "tts-1", "voice": "nobody", "input": "hi"}, 400, "voice"),
        ({"model": "tts-9", "voice": "alloy", "input": "hi"}, 404, "model"),
        ({"voice": "alloy", "input": "hi"}, 400, "model"),
        ({"model": "tts-1", "voice": "alloy", "input": "hi", "colour": 1}, 400, None),
    ],
)
def test_errors_use_openai_shape(
    server: ServerProcess, body: dict[str, object], status: int, param: str | None
) -> None:
    r = httpx.post(server.http + "/v1/audio/speech", json=body, timeout=30)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    assert err["param"] == param
    # and the SDK maps it to its exception types (for bodies the SDK can send)
    if "model" in body and "colour" not in body:
        exc = openai.NotFoundError if status == 404 else openai.BadRequestError
        with pytest.raises(exc) as info:
            _client(server).audio.speech.create(**body)  # type: ignore[arg-type]
        assert info.value.status_code == status


def test_invalid_json_body(server: ServerProcess) -> None:
    r = httpx.post(
        server.http + "/v1/audio/speech",
        content=b"{nope",
        timeout=30,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]


def test_client_disconnect_cancels_the_work(server: ServerProcess) -> None:
    long_text = " ".join([TEXT] * 12)
    with httpx.stream(
        "POST",
        server.http + "/v1/audio/speech",
        timeout=60,
        json={"model": "tts-1", "voice": "alloy", "input": long_text, "response_format": "pcm"},
    ) as resp:
        next(resp.iter_bytes())  # first audio, then hang up
    deadline = time.monotonic() + 20
    ends: list[dict[str, object]] = []
    while time.monotonic() < deadline and not ends:
        ends = [
            e
            for e in server.log_events("speech_end")
            if e["chars"] == len(long_text) and e["completed"] is False
        ]
        time.sleep(0.1)
    assert ends, "the server did not stop the request"
    metrics = httpx.get(server.http + "/metrics").text
    depth = [
        ln
        for ln in metrics.splitlines()
        if ln.startswith('voxwire_engine_queue_depth{engine="piper"}')
    ]
    assert depth and float(depth[0].split()[-1]) == 0.0


def test_input_over_the_text_buffer_gets_a_clear_error_and_the_server_goes_on() -> None:
    """The HTTP route takes the same text limits as a session (the conversation core):
    an input past max_buffered_chars is refused with a 400 naming the limit (it was an
    unhandled 500), and the next request is served."""
    srv = ServerProcess(max_buffered_chars=120)
    try:
        srv.wait_ready()
        body = {"model": "tts-1", "voice": "alloy", "response_format": "pcm"}
        r = httpx.post(srv.http + "/v1/audio/speech", json={**body, "input": "Word " * 40})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "text_buffer_full" and "the limit is 120" in err["message"]
        ok = httpx.post(srv.http + "/v1/audio/speech", json={**body, "input": "Still here."})
        assert ok.status_code == 200 and len(ok.content) > 24000  # over half a second
    finally:
        srv.stop()
