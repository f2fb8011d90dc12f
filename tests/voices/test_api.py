"""The voices API over HTTP against real servers (uvicorn, F5 on the tiny random-weight
model, a private Redis): upload → list → get → preview → delete, and every refusal
with its status and code. Audio coming back is decoded by ffmpeg."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import httpx
import numpy as np
import pytest

from server.engines.base import Audio
from server.openapi import document
from tests.support import ServerProcess
from tests.voices.conftest import (
    AUTH,
    TRANSCRIPT,
    WAV_ARGS,
    Nodes,
    encode,
    extensible,
    riff_wav,
)

ID = re.compile(r"v_[A-Za-z0-9_-]{16}")


def upload(
    srv: ServerProcess,
    data: bytes,
    filename: str = "me.ogg",
    headers: dict[str, str] | None = None,
    **fields: str,
) -> httpx.Response:
    form = {"name": "Alice", "transcript": TRANSCRIPT, "language": "en", "engine": "f5"}
    form.update(fields)
    return httpx.post(
        srv.http + "/v1/voices",
        data=form,
        files={"audio": (filename, data, "application/octet-stream")},
        headers=AUTH if headers is None else headers,
        timeout=60,
    )


def error_of(r: httpx.Response) -> tuple[int, str, str]:
    body = r.json()["error"]
    return r.status_code, body["code"], body["message"]


def ffmpeg_decode(data: bytes) -> Audio:
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            "pipe:0",
            "-f",
            "f32le",
            "-ac",
            "1",
            "-ar",
            "24000",
            "pipe:1",
        ],
        input=data,
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, dtype="<f4")


def test_listing_offers_uploads_where_f5_runs(nodes: Nodes, server: ServerProcess) -> None:
    r = httpx.get(nodes.a.http + "/v1/voices", headers=AUTH)
    body = r.json()
    schema = document()["components"]["schemas"]["VoicesResponse"]
    assert set(schema["required"]) <= set(body) <= set(schema["properties"])
    up = body["upload"]
    assert up["engine"] == "f5" and up["max_bytes"] == 1_000_000
    assert (up["min_s"], up["max_s"]) == (3.0, 30.0)
    assert {"wav", "flac", "mp3", "ogg", "webm"} <= set(up["formats"])
    assert set(up["languages"]) == {"en", "de"}
    ids = {v["id"] for v in body["voices"]}
    assert {"en_US-joe-medium", "f5_basic_en", "alice"} <= ids
    # A node without F5 offers no upload (the demo page then hides its control).
    assert "upload" not in httpx.get(server.http + "/v1/voices").json()


def test_upload_list_get_preview_delete(nodes: Nodes, samples: dict[str, bytes]) -> None:
    a = nodes.a
    r = upload(a, samples["ogg-opus"], name="  Alice   Liddell ")
    assert r.status_code == 201, r.text
    voice = r.json()
    vid = voice["id"]
    assert ID.fullmatch(vid) and r.headers["location"] == f"/v1/voices/{vid}"
    assert voice["name"] == "Alice Liddell" and voice["engine"] == "f5"
    assert voice["transcript"] == TRANSCRIPT and voice["builtin"] is False
    assert voice["duration_s"] == pytest.approx(6.0, abs=0.3) and voice["sample_rate"] == 24000

    listed = httpx.get(a.http + "/v1/voices", headers=AUTH).json()["voices"]
    mine = [v for v in listed if v["id"] == vid]
    assert mine == [
        {
            "id": vid,
            "name": "Alice Liddell",
            "engine": "f5",
            "language": "en",
            "sample_rate": 24000,
            "builtin": False,
        }
    ]
    assert httpx.get(f"{a.http}/v1/voices/{vid}", headers=AUTH).json() == voice

    # The preview: Ogg Opus that ffmpeg decodes, of a plausible length for the text.
    text = "Hello there, this is how the new voice sounds."
    r = httpx.post(
        f"{a.http}/v1/voices/{vid}/preview", json={"text": text}, headers=AUTH, timeout=120
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("audio/ogg")
    assert r.content[:4] == b"OggS"
    pcm = ffmpeg_decode(r.content)
    per_char = voice["duration_s"] / len(TRANSCRIPT)
    assert 0.4 * per_char * len(text) < len(pcm) / 24000 < 2.5 * per_char * len(text)
    assert float(np.sqrt(np.mean(pcm**2))) > 1e-3  # not silence (random weights: noise)
    # Too long a preview text is refused, naming the limit.
    r = httpx.post(f"{a.http}/v1/voices/{vid}/preview", json={"text": "x" * 301}, headers=AUTH)
    assert error_of(r)[:2] == (422, "text_too_long") and "at most 300" in error_of(r)[2]

    r = httpx.delete(f"{a.http}/v1/voices/{vid}", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"id": vid, "deleted": True}
    for method, path in (("GET", ""), ("DELETE", ""), ("POST", "/preview")):
        r = httpx.request(method, f"{a.http}/v1/voices/{vid}{path}", headers=AUTH)
        assert error_of(r)[:2] == (404, "voice_not_found"), (method, path)
    assert vid not in {
        v["id"] for v in httpx.get(a.http + "/v1/voices", headers=AUTH).json()["voices"]
    }


def test_builtin_voices(nodes: Nodes) -> None:
    a = nodes.a
    r = httpx.get(a.http + "/v1/voices/f5_basic_en", headers=AUTH)
    assert r.json() == {
        "id": "f5_basic_en",
        "name": "f5_basic_en",
        "engine": "f5",
        "language": "en",
        "sample_rate": 24000,
        "builtin": True,
    }
    r = httpx.delete(a.http + "/v1/voices/en_US-joe-medium", headers=AUTH)
    assert error_of(r)[:2] == (409, "voice_not_deletable")
    r = httpx.get(a.http + "/v1/voices/v_nope", headers=AUTH)
    assert error_of(r)[:2] == (404, "voice_not_found")
    r = httpx.post(a.http + "/v1/voices/en_US-joe-medium/preview", headers=AUTH, timeout=60)
    assert r.status_code == 200 and len(ffmpeg_decode(r.content)) > 24000


def _big_body() -> Any:
    yield b"x" * 600_000
    yield b"x" * 600_000


@pytest.mark.parametrize(
    ("case", "status", "code", "words"),
    [
        ("no_key", 401, "missing_api_key", "API key is required"),
        ("json_body", 400, "form_invalid", "multipart/form-data"),
        ("no_audio", 400, "audio_missing", "field 'audio'"),
        ("content_length", 413, "audio_too_large", "1000000 bytes of audio"),
        ("chunked", 413, "audio_too_large", "1000000 bytes of audio"),
        ("m4a", 415, "unsupported_format", "accepted formats: WAV (PCM), FLAC, MP3"),
        ("damaged", 422, "audio_undecodable", "does not decode"),
        ("short", 422, "audio_too_short", "at least 3 s"),
        ("long", 422, "audio_too_long", "at most 30 s"),
        ("silent", 422, "audio_silent", "below the -50 dBFS threshold"),
        ("no_name", 422, "name_invalid", "needs a name"),
        ("long_name", 422, "name_invalid", "65 characters; at most 64"),
        ("no_transcript", 422, "transcript_missing", "transcript is empty"),
        ("long_transcript", 422, "transcript_too_long", "at most 1000"),
        ("wrong_transcript", 422, "reference_unusable", "does not match"),
        ("language", 422, "unknown_language", "'fr' is not spoken by engine 'f5'"),
        ("piper", 422, "engine_cannot_clone", "upload with engine 'f5'"),
        ("engine", 422, "unknown_engine", "no engine 'bark'"),
    ],
)
def test_every_upload_error(
    case: str,
    status: int,
    code: str,
    words: str,
    nodes: Nodes,
    samples: dict[str, bytes],
    speech: tuple[Audio, int],
) -> None:
    a = nodes.a
    audio, rate = speech
    ogg = samples["ogg-opus"]
    url = a.http + "/v1/voices"
    if case == "no_key":
        r = upload(a, ogg, headers={})
    elif case == "json_body":
        r = httpx.post(url, json={"name": "A"}, headers=AUTH)
    elif case == "no_audio":
        r = httpx.post(
            url, data={"name": "A", "transcript": "Hi."}, files={"x": ("a", b"1")}, headers=AUTH
        )
    elif case == "content_length":
        r = upload(a, b"\0" * 1_200_000)
    elif case == "chunked":
        body = _big_body()
        r = httpx.post(
            url, content=body, headers={**AUTH, "Content-Type": "multipart/form-data; boundary=b"}
        )
        assert "content-length" not in {k.lower() for k in r.request.headers}
    elif case == "m4a":
        r = upload(
            a,
            encode(
                audio, rate, ["-c:a", "aac", "-movflags", "frag_keyframe+empty_moov", "-f", "mp4"]
            ),
            "me.ogg",
        )
    elif case == "damaged":
        r = upload(a, samples["wav"][:44], "me.wav")
    elif case == "short":
        r = upload(a, encode(audio[: int(1.5 * rate)], rate, WAV_ARGS), "me.wav")
    elif case == "long":
        r = upload(a, encode(np.tile(audio, 6), rate, ACCEPTED_OPUS), "me.ogg")
    elif case == "silent":
        r = upload(a, encode(np.zeros(rate * 5, dtype=np.float32), rate, ACCEPTED_OPUS))
    elif case == "no_name":
        r = upload(a, ogg, name=" ")
    elif case == "long_name":
        r = upload(a, ogg, name="n" * 65)
    elif case == "no_transcript":
        r = upload(a, ogg, transcript="")
    elif case == "long_transcript":
        r = upload(a, ogg, transcript="word " * 300)
    elif case == "wrong_transcript":
        r = upload(a, ogg, transcript="Hi.")
    elif case == "language":
        r = upload(a, ogg, language="fr")
    elif case == "piper":
        r = upload(a, ogg, engine="piper")
    else:
        r = upload(a, ogg, engine="bark")
    got = error_of(r)
    assert got[:2] == (status, code), got
    assert words in got[2]


ACCEPTED_OPUS = ["-c:a", "libopus", "-b:a", "32k", "-f", "ogg"]


def test_no_f5_on_this_node(server: ServerProcess, samples: dict[str, bytes]) -> None:
    got = error_of(upload(server, samples["ogg-opus"]))
    assert got[:2] == (422, "engine_not_enabled") and "f5_enabled" in got[2]


def test_delete_needs_the_key(nodes: Nodes) -> None:
    r = httpx.delete(nodes.a.http + "/v1/voices/v_AAAAAAAAAAAAAAAA")
    assert error_of(r)[:2] == (401, "missing_api_key")


def test_store_limit(nodes: Nodes, samples: dict[str, bytes]) -> None:
    made = []
    try:
        for _ in range(7):
            r = upload(nodes.a, samples["flac"], "me.flac")
            if r.status_code != 201:
                break
            made.append(r.json()["id"])
        got = error_of(r)
        assert got[:2] == (507, "voice_limit_reached") and "limit is 6" in got[2]
        assert len(made) <= 6
    finally:
        for vid in made:
            httpx.delete(f"{nodes.a.http}/v1/voices/{vid}", headers=AUTH)


# WAV files built byte by byte whose streams FFmpeg has no decoder for (PyAV gives them
# no codec context): each is refused with a 4xx naming what the header says, never 500.
TAGGED = {
    "tag_0000": (dict(tag=0x0000), 415, "unsupported_format",
                 "WAV audio with format tag 0x0000 (WAVE_FORMAT_UNKNOWN"),
    "tag_1234": (dict(tag=0x1234), 415, "unsupported_format",
                 "WAV audio with format tag 0x1234 (an encoding this server has no decoder"),
    "tag_fffe": (dict(tag=0xFFFE), 422, "audio_undecodable",
                 "format tag is 0xFFFE (WAVE_FORMAT_EXTENSIBLE), but its fmt chunk is 16 bytes"),
    "tag_ffff": (dict(tag=0xFFFF), 415, "unsupported_format",
                 "WAV audio with format tag 0xFFFF (WAVE_FORMAT_DEVELOPMENT"),
    "fffe_sub_1234": (dict(tag=0xFFFE, extension=extensible(0x1234)), 415,
                      "unsupported_format", "0xFFFE (WAVE_FORMAT_EXTENSIBLE) with sub-format "
                      "0x1234"),
    "float_16_bits": (dict(tag=0x0003), 422, "audio_undecodable",
                      "format tag 0x0003 (IEEE float) with 16 bits per sample"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(TAGGED))
def test_wav_format_tags_without_a_decoder_are_4xx(
    case: str, nodes: Nodes, speech_pcm: tuple[bytes, int]
) -> None:
    pcm, rate = speech_pcm
    header, status, code, words = TAGGED[case]
    r = upload(nodes.a, riff_wav(pcm=pcm, rate=rate, **header), "me.wav")  # type: ignore[arg-type]
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code and body["error"]["param"] == "audio"
    assert words in body["error"]["message"], body["error"]["message"]
    if status == 415:  # what would be accepted instead
        assert "WAV must hold PCM" in body["error"]["message"]
        assert "accepted formats: WAV (PCM), FLAC" in body["error"]["message"]
    assert httpx.get(nodes.a.http + "/health").status_code == 200


def test_the_same_bytes_as_pcm_are_a_voice(nodes: Nodes, speech_pcm: tuple[bytes, int]) -> None:
    """The control for the format-tag cases: the builder's file with tag 0x0001 (PCM),
    and with 0xFFFE and a PCM sub-format, is a good upload."""
    pcm, rate = speech_pcm
    for data in (
        riff_wav(0x0001, pcm, rate),
        riff_wav(0xFFFE, pcm, rate, extension=extensible(0x0001)),
    ):
        r = upload(nodes.a, data, "me.wav")
        assert r.status_code == 201, r.text
        assert r.json()["duration_s"] == pytest.approx(len(pcm) / 2 / rate, abs=0.02)
        assert httpx.delete(f"{nodes.a.http}/v1/voices/{r.json()['id']}", headers=AUTH).is_success
