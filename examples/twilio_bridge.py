"""A phone call that hears a voxwire bot and can interrupt it: Twilio Media Streams ⇄ voxwire.

Twilio fetches the TwiML at ``POST /twiml``, which tells it to ``<Connect><Stream>`` the call
to this app's WebSocket at ``/twilio``. For each call the bridge opens one voxwire session in
Twilio's own format (G.711 µ-law, 8 kHz, 20 ms frames) with voxwire's real-time pacing, so it
forwards every frame as it comes: Twilio plays whatever it is sent, and since voxwire sends
at most ``lead_ms`` ahead of the caller's ear, a barge-in silences the bot within that lead.

    Twilio → bridge   connected, start, media (the caller's voice), mark (played), stop
    bridge → Twilio   media (the bot's voice), mark (after each segment), clear (barge-in)
    bridge → voxwire  start, text, flush, cancel (barge-in), ack (a mark came back), end

Run it (see examples/README.md for the Twilio side):

    export VOXWIRE_URL=ws://127.0.0.1:8000/v1/stream
    uvicorn twilio_bridge:app --app-dir examples --port 8080

A real bot replaces ``reply_text`` with its LLM's tokens, and starts a new reply with
``call.say(...)`` when its speech recognizer has heard the caller out.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np
import numpy.typing as npt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from server.protocol import Cancelled, Done, Error, Flushed, OutputFormat, Pacing, Segment
from voxwire.client import Audio, Session, connect

VOXWIRE_URL = os.environ.get("VOXWIRE_URL", "ws://127.0.0.1:8000/v1/stream")
VOXWIRE_API_KEY = os.environ.get("VOXWIRE_API_KEY")
LEAD_MS = int(os.environ.get("VOXWIRE_LEAD_MS", "200"))
FRAME_MS = 20  # Twilio's own frame: 160 µ-law bytes
GREETING = "Hello! This is voxwire speaking on the phone. Say something and I will stop talking."


def _mulaw_table() -> npt.NDArray[np.int16]:
    """G.711 µ-law byte → 16-bit sample, for all 256 bytes. (audioop.ulaw2lin did this, but
    audioop is deprecated since Python 3.11 and gone in 3.13.)"""
    u = ~np.arange(256, dtype=np.int32) & 0xFF  # µ-law bytes are sent inverted
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - magnitude, magnitude - 0x84).astype(np.int16)


MULAW = _mulaw_table()


@dataclass
class SpeechDetector:
    """Says when the caller starts talking: ``frames`` 20 ms frames in a row louder than
    ``threshold`` (RMS, 16-bit scale). Crude on purpose: a real bot would use its speech
    recognizer's voice activity events, which also tell a word from a door slam."""

    threshold: float = 800.0  # about -32 dBFS: speech is louder, a quiet line far quieter
    frames: int = 3  # 60 ms: a single click or pop is not speech
    _loud: int = 0

    def feed(self, mulaw: bytes) -> bool:
        """True once, on the frame that completes a loud run."""
        pcm = MULAW[np.frombuffer(mulaw, dtype=np.uint8)].astype(np.float32)
        loud = pcm.size > 0 and float(np.sqrt(np.mean(pcm * pcm))) > self.threshold
        self._loud = self._loud + 1 if loud else 0
        return self._loud == self.frames


@dataclass
class Call:
    """One phone call: its Twilio socket, its voxwire session, and what the bridge did
    (``acked``, ``barge_ins``, ``errors``: for logs, and for the tests)."""

    twilio: WebSocket
    stream_sid: str
    parameters: dict[str, str]
    session: Session
    last_frame: int = -1  # the newest voxwire frame forwarded to Twilio
    marked: int = -1  # the newest frame a mark follows (or a clear threw away)
    marks: dict[str, int] = field(default_factory=dict)  # sent, not yet played: name → frame
    dropping: bool = False  # from our cancel to voxwire's `cancelled`: frames of a dead reply
    speaking: bool = False  # a reply's text is going to voxwire, or its audio still is
    hung_up: bool = False  # Twilio sent `stop` or closed: nothing more goes to it
    reply: asyncio.Task[None] | None = None
    detector: SpeechDetector = field(default_factory=SpeechDetector)
    forwarded: int = 0
    acked: list[int] = field(default_factory=list)
    barge_ins: list[float] = field(default_factory=list)  # time.monotonic() of each
    errors: list[Error] = field(default_factory=list)

    async def send(self, event: str, **fields: Any) -> None:
        if not self.hung_up:
            msg = {"event": event, "streamSid": self.stream_sid, **fields}
            await self.twilio.send_text(json.dumps(msg))

    def say(self, text: AsyncIterator[str]) -> None:
        """Speak a reply whose text arrives piece by piece (an LLM's tokens)."""
        self.reply = asyncio.create_task(self._speak(text))

    async def _speak(self, text: AsyncIterator[str]) -> None:
        self.speaking = True
        async for piece in text:  # any size, cut anywhere: voxwire finds the sentences
            await self.session.text(piece)
        await self.session.flush()  # the reply is complete: speak its last words now

    async def mark(self) -> None:
        """Ask Twilio to tell us when the audio sent so far has been played."""
        if self.last_frame > self.marked:
            self.marked = self.last_frame
            name = f"frame-{self.last_frame}"
            self.marks[name] = self.last_frame
            await self.send("mark", mark={"name": name})

    async def played(self, name: str) -> None:
        """Twilio echoed a mark: its audio has been heard. Marks thrown away by a clear come
        back too (Twilio echoes them at once); they are not in ``marks`` any more."""
        frame = self.marks.pop(name, None)
        if frame is not None:
            await self.session.ack(frame)  # a resume after a dropped connection starts here
            self.acked.append(frame)

    async def barge_in(self) -> None:
        """The caller talks over the bot: stop the reply at voxwire and in Twilio's buffer."""
        self.barge_ins.append(time.monotonic())
        self.dropping = True  # from now on nothing of this reply is forwarded
        self.speaking = False
        self.marks.clear()  # their audio is discarded, not played: never ack it
        self.marked = self.last_frame  # and no new mark for audio sent before the clear
        if self.reply is not None:
            self.reply.cancel()  # no more LLM text for a reply nobody listens to
        await self.session.cancel()  # voxwire drops its text, its queue and unsent audio
        await self.send("clear")  # Twilio drops what it holds: at most the pacing lead


async def reply_text(call: Call) -> AsyncIterator[str]:
    """What the bot says: the hook for a real bot, which yields its LLM's tokens as they
    come. The demo says the call's ``text`` parameter (``<Parameter name="text">`` in the
    TwiML), a word at a time as if it were being generated."""
    for word in (call.parameters.get("text") or GREETING).split():
        yield word + " "


async def forward_audio(call: Call) -> None:
    """voxwire → Twilio, until voxwire's ``done``."""
    async for item in call.session:
        if isinstance(item, Audio):
            if call.dropping:
                continue
            payload = base64.b64encode(item.data).decode("ascii")
            await call.send("media", media={"payload": payload})
            call.last_frame = item.frame  # numbered per session, across replies
            call.forwarded += 1
        elif isinstance(item, Segment | Flushed | Done):
            await call.mark()  # the previous segment's audio has all been sent
            if isinstance(item, Flushed):
                call.speaking = False  # its audio is covered by the mark just sent
        elif isinstance(item, Cancelled):
            call.dropping = False  # no frame of the cancelled reply follows `cancelled`
        elif isinstance(item, Error):
            call.errors.append(item)  # non-fatal (a fatal one raises VoxwireError)


async def listen(call: Call) -> None:
    """Twilio → bridge, until Twilio's ``stop`` (the call hung up) or the socket closes."""
    while True:
        try:
            msg = json.loads(await call.twilio.receive_text())
        except WebSocketDisconnect:
            return
        event = msg.get("event")
        if event == "media" and msg["media"].get("track", "inbound") == "inbound":
            heard = call.detector.feed(base64.b64decode(msg["media"]["payload"]))
            if heard and (call.speaking or call.marks):
                await call.barge_in()
        elif event == "mark":
            await call.played(msg["mark"]["name"])
        elif event == "stop":
            return


async def twilio_stream(ws: WebSocket) -> None:
    """One call: Twilio's ``connected`` and ``start``, then a voxwire session until ``stop``."""
    await ws.accept()
    start: dict[str, Any] = {}
    while not start:  # `connected` comes first; `start` names the stream and the call
        try:
            msg = json.loads(await ws.receive_text())
        except WebSocketDisconnect:
            return
        start = msg.get("start", {}) if msg.get("event") == "start" else {}
    config: Config = ws.app.state.config
    output = OutputFormat(
        encoding="mulaw",
        sample_rate=8000,
        frame_ms=FRAME_MS,
        pacing=Pacing(mode="realtime", lead_ms=config.lead_ms),
    )
    async with connect(config.voxwire_url, api_key=config.api_key, output=output) as session:
        call = Call(ws, start["streamSid"], dict(start.get("customParameters") or {}), session)
        ws.app.state.calls.append(call)
        listener = asyncio.create_task(listen(call))
        forwarder = asyncio.create_task(forward_audio(call))
        call.say(reply_text(call))
        try:  # until the call ends, or voxwire does (a fatal error: hang up then)
            await asyncio.wait([listener, forwarder], return_when=asyncio.FIRST_COMPLETED)
        finally:
            call.hung_up = call.dropping = True
            with contextlib.suppress(Exception):  # Twilio may have closed first
                await ws.close()
            for task in (listener, call.reply):
                if task is not None:
                    task.cancel()
            if not forwarder.done():
                with contextlib.suppress(Exception):
                    await session.cancel()
                    await session.end()  # voxwire: `cancelled`, `done`, close
            await forwarder  # its exception, if voxwire failed, is the call's


async def twiml(request: Request) -> Response:
    """The TwiML Twilio fetches when the call comes in: stream it to ``/twilio``. Twilio only
    streams to ``wss://``; behind a tunnel the Host header is the public name."""
    stream_url = os.environ.get("TWILIO_STREAM_URL") or f"wss://{request.headers['host']}/twilio"
    text = request.query_params.get("text", GREETING)
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Connect><Stream url={quoteattr(stream_url)}>"
        f'<Parameter name="text" value={quoteattr(text)}/>'
        "</Stream></Connect></Response>"
    )
    return Response(body, media_type="application/xml")


@dataclass(frozen=True)
class Config:
    voxwire_url: str = VOXWIRE_URL
    api_key: str | None = VOXWIRE_API_KEY
    lead_ms: int = LEAD_MS  # what Twilio may hold, so how late a barge-in can be heard


def create_app(config: Config | None = None) -> Starlette:
    routes = [Route("/twiml", twiml, methods=["POST"]), WebSocketRoute("/twilio", twilio_stream)]
    app = Starlette(routes=routes)
    app.state.config = config or Config()
    app.state.calls = deque(maxlen=100)  # recent calls, for a look in a debugger or a test
    return app


app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="0.0.0.0", port=int(os.environ.get("PORT", "8080")))
