"""Speak into Asterisk calls with voxwire over RTP, through ARI's ExternalMedia.

A call enters the Stasis application (``Stasis(voxwire)`` in the dialplan). This app
answers it, puts it in a mixing bridge with an ExternalMedia channel, and starts a
voxwire session whose ``output.transport`` is that channel's RTP address: voxwire
sends µ-law (PCMU, payload type 0) RTP, paced at real time, straight to Asterisk,
and Asterisk mixes it into the call. The app keeps the session's WebSocket for text,
``cancel`` (barge-in) and events; no audio passes through it.

    VOXWIRE_URL=ws://voxwire:8765/v1/stream ARI_URL=http://asterisk:8088 \\
    ARI_USER=voxwire ARI_PASSWORD=secret python examples/asterisk/ari_tts.py

voxwire must allow Asterisk's RTP range: ``VOXWIRE_RTP_ALLOWED_DESTINATIONS=
10.0.0.7/32:10000-20000`` (rtp.conf's rtpstart-rtpend). See examples/asterisk/README.md
for the Asterisk side (ari.conf, http.conf, extensions.conf).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import uuid
from dataclasses import dataclass, field

import httpx
import websockets

from server import protocol as p
from server.protocol import Done
from voxwire.client import Session, connect

APP = "voxwire"
GREETING = "Hello, you are speaking with the voxwire assistant. How can I help you today?"


@dataclass
class Config:
    ari_url: str = os.environ.get("ARI_URL", "http://127.0.0.1:8088")
    ari_user: str = os.environ.get("ARI_USER", "voxwire")
    ari_password: str = os.environ.get("ARI_PASSWORD", "voxwire")
    voxwire_url: str = os.environ.get("VOXWIRE_URL", "ws://127.0.0.1:8765/v1/stream")
    # Where Asterisk sends the caller's audio (ExternalMedia is two-way). Point it at
    # your speech recognizer; this example does not listen to the caller.
    media_sink: str = os.environ.get("MEDIA_SINK", "127.0.0.1:4000")
    lead_ms: int = int(os.environ.get("VOXWIRE_LEAD_MS", "60"))
    greeting: str = os.environ.get("GREETING", GREETING)


@dataclass
class Call:
    channel: str
    bridge: str = ""
    media_channel: str = ""
    speaking: asyncio.Task[None] | None = None
    sessions: list[Session] = field(default_factory=list)


class AriTts:
    """One ARI application: a voxwire session per call."""

    def __init__(self, cfg: Config, http: httpx.AsyncClient) -> None:
        self.cfg = cfg
        self.http = http
        self.calls: dict[str, Call] = {}

    async def _post(self, path: str, **params: str) -> dict[str, object]:
        r = await self.http.post(f"/ari{path}", params=params)
        r.raise_for_status()
        return r.json() if r.content else {}

    async def on_event(self, ev: dict[str, object]) -> None:
        kind = ev.get("type")
        chan = ev.get("channel")
        if not isinstance(chan, dict):
            return
        cid = str(chan["id"])
        if kind == "StasisStart" and not str(chan.get("name", "")).startswith("UnicastRTP/"):
            await self.answer(cid)
        elif kind == "StasisEnd" and cid in self.calls:
            await self.hang_up(self.calls.pop(cid))

    async def answer(self, channel: str) -> None:
        call = Call(channel)
        self.calls[channel] = call
        await self._post(f"/channels/{channel}/answer")
        bridge = await self._post("/bridges", type="mixing", bridgeId=uuid.uuid4().hex)
        call.bridge = str(bridge["id"])
        media = await self._post(
            "/channels/externalMedia",
            app=APP,
            external_host=self.cfg.media_sink,
            format="ulaw",
            encapsulation="rtp",
            transport="udp",
            direction="both",
        )
        call.media_channel = str(media["id"])
        await self._post(
            f"/bridges/{call.bridge}/addChannel", channel=f"{channel},{call.media_channel}"
        )
        # Asterisk says where it takes RTP for this channel in the channel's variables.
        var = media.get("channelvars")
        assert isinstance(var, dict), "Asterisk 16.6+ returns channelvars with externalMedia"
        host, port = str(var["UNICASTRTP_LOCAL_ADDRESS"]), int(var["UNICASTRTP_LOCAL_PORT"])
        call.speaking = asyncio.create_task(self.speak(call, host, port, self.cfg.greeting))

    async def speak(self, call: Call, host: str, port: int, text: str) -> None:
        """A bot would feed its LLM's tokens here; the demo speaks one greeting."""
        output = p.OutputFormat(
            encoding="mulaw",
            sample_rate=8000,
            frame_ms=20,
            pacing=p.Pacing(mode="realtime", lead_ms=self.cfg.lead_ms),
            transport=p.RtpTransport(host=host, port=port, payload_type=0),
        )
        async with connect(self.cfg.voxwire_url, output=output) as session:
            call.sessions.append(session)
            await session.text(text)
            await session.end()
            async for item in session:
                if isinstance(item, Done):
                    break

    async def barge_in(self, channel: str) -> None:
        """The caller spoke (your recognizer says so): stop talking at once."""
        call = self.calls.get(channel)
        if call is not None:
            for s in call.sessions:
                await s.cancel()

    async def hang_up(self, call: Call) -> None:
        if call.speaking is not None:
            call.speaking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call.speaking
        with contextlib.suppress(httpx.HTTPError):
            if call.media_channel:
                await self.http.delete(f"/ari/channels/{call.media_channel}")
            if call.bridge:
                await self.http.delete(f"/ari/bridges/{call.bridge}")


async def run(cfg: Config) -> None:
    auth = (cfg.ari_user, cfg.ari_password)
    events = cfg.ari_url.replace("http", "ws", 1) + f"/ari/events?app={APP}"
    async with httpx.AsyncClient(base_url=cfg.ari_url, auth=auth, timeout=10) as http:
        app = AriTts(cfg, http)
        basic = base64.b64encode(f"{cfg.ari_user}:{cfg.ari_password}".encode()).decode()
        headers = {"Authorization": f"Basic {basic}"}
        async with websockets.connect(events, additional_headers=headers) as ws:
            async for msg in ws:
                await app.on_event(json.loads(msg))


if __name__ == "__main__":
    asyncio.run(run(Config()))
