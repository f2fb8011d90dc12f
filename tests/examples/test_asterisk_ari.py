"""The Asterisk ExternalMedia example against a simulated Asterisk: ARI's REST calls and
event WebSocket as Asterisk documents them (a Starlette app in a real uvicorn), and a
UDP port standing in for the ExternalMedia channel's RTP address. What arrives there
is decoded by ffmpeg (µ-law) and must be the greeting, in PCMU packets at real time."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import time
from collections.abc import Iterator

import pytest
from asterisk import ari_tts
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from tests.examples.serving import serving
from tests.rtp.capture import Packet, listen
from tests.support import ServerProcess, decode_mulaw_ffmpeg, transcribe, word_recall

SENTENCE = "Our meeting with the bank has moved to Thursday afternoon."
AUTH = "Basic " + base64.b64encode(b"voxwire:secret").decode()


class FakeAsterisk:
    """Just what the example uses of ARI, checked as Asterisk would check it."""

    def __init__(self, rtp_port: int) -> None:
        self.rtp_port = rtp_port
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self.hangup = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.app = Starlette(
            routes=[
                WebSocketRoute("/ari/events", self.events),
                Route("/ari/{path:path}", self.rest, methods=["POST", "DELETE"]),
            ]
        )

    async def events(self, ws: WebSocket) -> None:
        assert ws.headers.get("authorization") == AUTH
        assert ws.query_params.get("app") == "voxwire"
        self.loop = asyncio.get_running_loop()
        await ws.accept()
        caller = {"id": "caller-1", "name": "PJSIP/alice-00000001", "state": "Ring"}
        await ws.send_json({"type": "StasisStart", "application": "voxwire", "channel": caller})
        await self.hangup.wait()
        await ws.send_json({"type": "StasisEnd", "application": "voxwire", "channel": caller})
        await asyncio.sleep(0.5)
        await ws.close()

    async def rest(self, request: Request) -> Response:
        if request.headers.get("authorization") != AUTH:
            return Response(status_code=401)
        path, params = request.path_params["path"], dict(request.query_params)
        self.calls.append((request.method, path, params))
        if request.method == "DELETE" or path.endswith(("/answer", "/addChannel")):
            return Response(status_code=204)
        if path == "bridges":
            return JSONResponse({"id": params["bridgeId"], "bridge_type": params["type"]})
        if path == "channels/externalMedia":
            return JSONResponse(
                {
                    "id": "media-1",
                    "name": f"UnicastRTP/{params['external_host']}-0000001",
                    "state": "Up",
                    "channelvars": {
                        "UNICASTRTP_LOCAL_ADDRESS": "127.0.0.1",
                        "UNICASTRTP_LOCAL_PORT": str(self.rtp_port),
                    },
                }
            )
        return Response(status_code=404)


@pytest.fixture(scope="module")
def rtp_server() -> Iterator[ServerProcess]:
    s = ServerProcess(rtp_allowed_destinations="127.0.0.1/32")
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


async def _quiet(packets: list[Packet], for_s: float, timeout: float) -> None:
    """Until packets have arrived and then stopped for ``for_s``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if packets and time.monotonic() - packets[-1].at > for_s:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"RTP did not finish within {timeout} s ({len(packets)} packets)")


async def test_a_call_hears_the_greeting_over_rtp(rtp_server: ServerProcess) -> None:
    async with listen() as (rtp_port, packets):
        fake = FakeAsterisk(rtp_port)
        with serving(fake.app, "the fake Asterisk") as ari_url:
            cfg = ari_tts.Config(
                ari_url=ari_url,
                ari_user="voxwire",
                ari_password="secret",
                voxwire_url=rtp_server.ws_url,
                greeting=SENTENCE,
            )
            app_task = asyncio.create_task(ari_tts.run(cfg))
            try:
                await _quiet(packets, 1.0, 60)
                assert fake.loop is not None
                fake.loop.call_soon_threadsafe(fake.hangup.set)  # the caller hangs up
                await asyncio.wait_for(app_task, 10)
            finally:
                app_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await app_task
    # The ARI dance: answer, a mixing bridge, ExternalMedia in µ-law, both bridged, and
    # the ExternalMedia channel and bridge torn down at hang-up.
    ops = [(m, path.split("/")[0] if "/" in path else path) for m, path, _ in fake.calls]
    assert ops[:4] == [("POST", "channels"), ("POST", "bridges"), ("POST", "channels"),
                       ("POST", "bridges")]  # fmt: skip
    media = next(params for _, path, params in fake.calls if path == "channels/externalMedia")
    assert media["format"] == "ulaw" and media["app"] == "voxwire"
    added = next(params for _, path, params in fake.calls if path.endswith("/addChannel"))
    assert added["channel"] == "caller-1,media-1"
    assert ("DELETE", "channels/media-1") in [(m, path) for m, path, _ in fake.calls]
    # PCMU at real time, one stream, consecutive sequence numbers
    assert {pkt.payload_type for pkt in packets} == {0}
    assert {len(pkt.payload) for pkt in packets} == {160}
    assert all((b.seq - a.seq) % 65536 == 1 for a, b in itertools.pairwise(packets))
    span = packets[-1].at - packets[0].at
    assert span >= len(packets) * 0.02 - 0.2, (span, len(packets))
    pcm = decode_mulaw_ffmpeg([pkt.payload for pkt in packets], 8000)
    heard = transcribe(pcm, 8000)
    assert word_recall(SENTENCE, heard) >= 0.5, heard
