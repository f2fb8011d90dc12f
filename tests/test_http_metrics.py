"""HTTP metrics (server/http_metrics.py) on a real server: real requests, then /metrics
read with prometheus_client's parser, and the counters must have moved by exactly what
the client saw, with bounded labels."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from server.http_metrics import protocol_of
from tests.prom import delta, scrape
from tests.support import ServerProcess, decode_file, speaks

SPEECH = "/v1/audio/speech"
TEXT = (
    "The morning train leaves at seven. It stops at every station along the coast. "
    "Passengers for the islands change at the harbour, where the ferry waits for them."
)
REQUESTS = "voxwire_http_requests_total"


def _speech(http: str, fmt: str, text: str = TEXT) -> tuple[bytes, float, float]:
    """A streamed speech request: its body, and when its first and last bytes came."""
    body = {"model": "tts-1", "voice": "alloy", "input": text, "response_format": fmt}
    chunks: list[bytes] = []
    t_first = 0.0
    with (
        httpx.Client(timeout=120) as client,
        client.stream("POST", http + SPEECH, json=body) as r,
    ):
        assert r.status_code == 200, r.read()
        for chunk in r.iter_raw():
            if chunk and not chunks:
                t_first = time.monotonic()
            chunks.append(chunk)
    return b"".join(chunks), t_first, time.monotonic()


@pytest.mark.parametrize("fmt", ["pcm", "mp3", "opus"])
def test_a_speech_request_is_counted_and_timed_to_its_last_byte(
    server: ServerProcess, fmt: str
) -> None:
    before = scrape(server.http)
    body, t_first, t_last = _speech(server.http, fmt)
    after = scrape(server.http)

    labels = {"route": SPEECH, "method": "POST", "status": "200", "protocol": "openai"}
    assert delta(before, after, REQUESTS, **labels) == 1
    assert delta(before, after, "voxwire_http_request_duration_seconds_count", route=SPEECH) == 1
    assert delta(before, after, "voxwire_http_time_to_first_byte_seconds_count", route=SPEECH) == 1
    # Bytes out are the bytes the client got, to the last one.
    assert delta(before, after, "voxwire_http_response_bytes_total", route=SPEECH) == len(body)
    # The response streamed: the request's time covers its whole body, not only the
    # handler's return (which comes before the first audio is made).
    took = delta(before, after, "voxwire_http_request_duration_seconds_sum", route=SPEECH)
    first = delta(before, after, "voxwire_http_time_to_first_byte_seconds_sum", route=SPEECH)
    assert t_last - t_first > 0.05, "the body came at once: nothing to tell apart"
    assert took >= t_last - t_first - 0.01, (took, t_last - t_first)
    assert 0 < first < took
    # Audio seconds out: what the decoded file holds (MP3 and Opus pad a little).
    audio_s = delta(before, after, "voxwire_http_audio_seconds_total", route=SPEECH)
    assert audio_s == pytest.approx(
        len(decode_file(body, fmt)) / 16000, abs=0.021 if fmt == "pcm" else 0.1
    )
    assert after.total("voxwire_http_requests_in_progress", protocol="openai") == 0


def test_labels_are_route_templates_and_known_values(server: ServerProcess) -> None:
    voice = "no-such-voice-" + uuid.uuid4().hex
    path = "/no/such/" + uuid.uuid4().hex
    before = scrape(server.http)
    with httpx.Client(base_url=server.http, timeout=30) as c:
        assert c.get(f"/v1/voices/{voice}").status_code == 404
        assert c.get(path).status_code == 404
        assert c.request("BREW", "/health").status_code == 405
        bad = c.post(SPEECH, content=b"{", headers={"content-type": "application/json"})
        assert bad.status_code == 400
    after = scrape(server.http)

    def moved(**labels: str) -> float:
        return delta(before, after, REQUESTS, **labels)

    assert moved(route="/v1/voices/{voice_id}", method="GET", status="404", protocol="voices") == 1
    assert moved(route="unmatched", method="GET", status="404", protocol="other") == 1
    assert moved(route="/health", method="other", status="405", protocol="health") == 1
    assert moved(route=SPEECH, method="POST", status="400", protocol="openai") == 1
    # Nothing a client chose became a label value.
    assert voice not in after.text and path not in after.text and "BREW" not in after.text


async def test_websockets_pass_through(server: ServerProcess) -> None:
    before = scrape(server.http)
    rec = await speaks(server.ws_url, "A WebSocket session is not an HTTP request.")
    assert rec.close_code == 1000 and rec.frames
    after = scrape(server.http)
    assert delta(before, after, "voxwire_sessions_total", protocol="native") == 1
    for labels, _ in after.samples(REQUESTS):
        if labels["route"] != "/metrics":  # (the scrape before this one)
            assert delta(before, after, REQUESTS, **labels) == 0, labels
    assert not any(labels["route"] == "/v1/stream" for labels, _ in after.samples(REQUESTS))


KEY = "metrics-test-key-" + "x" * 24


@pytest.fixture(scope="module")
def keyed() -> Iterator[ServerProcess]:
    srv = ServerProcess(api_keys=KEY, engine_isolation="thread")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def test_requests_refused_before_routing_are_counted_by_their_route(
    keyed: ServerProcess,
) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    before = scrape(keyed.http, auth)
    with httpx.Client(base_url=keyed.http, timeout=30) as c:
        assert c.post(SPEECH, json={"model": "tts-1"}).status_code == 401
        assert c.get("/v1/voices/abc").status_code == 401
        assert c.get("/metrics").status_code == 401
    after = scrape(keyed.http, auth)

    def moved(route: str, protocol: str, method: str = "GET") -> float:
        return delta(
            before, after, REQUESTS, route=route, method=method, status="401", protocol=protocol
        )

    assert moved(SPEECH, "openai", "POST") == 1
    assert moved("/v1/voices/{voice_id}", "voices") == 1
    assert moved("/metrics", "metrics") == 1
    assert after.total("voxwire_http_requests_in_progress") == 1  # this scrape


@pytest.mark.parametrize(
    ("path", "protocol"),
    [
        ("/v1/audio/speech", "openai"),
        ("/v1/models", "openai"),
        ("/v1/voices", "voices"),
        ("/v1/voices/v_1/preview", "voices"),
        ("/v1/voicesx", "other"),
        ("/v1/engines", "engines"),
        ("/v1/tokens", "tokens"),
        ("/health", "health"),
        ("/metrics", "metrics"),
        ("/", "pages"),
        ("/demo/app.js", "pages"),
        ("/docs", "pages"),
        ("/openapi.json", "pages"),
        ("/v1/stream", "other"),
        ("/wp-admin", "other"),
    ],
)
def test_protocol_families(path: str, protocol: str) -> None:
    assert protocol_of(path) == protocol


def test_piper_in_the_servers_own_process_reports_its_resident_voices(
    keyed: ServerProcess,
) -> None:
    """engine_isolation=thread: the Piper engine itself says how many voices it holds
    (with engine processes, their host does)."""
    auth = {"Authorization": f"Bearer {KEY}"}
    assert scrape(keyed.http, auth).total("voxwire_engine_resident_voices", engine="piper") == 1
