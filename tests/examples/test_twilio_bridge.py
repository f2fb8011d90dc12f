"""examples/twilio_bridge.py against a real voxwire server and a simulated Twilio.

The bridge runs in a real uvicorn (a thread of this process, so the test can read what it
recorded of each call); the Twilio side is a websockets client that speaks Media Streams as
Twilio documents it: ``connected``, ``start`` (custom parameters carry the text), the
caller's audio as ``media`` every 20 ms, each ``mark`` echoed once the audio before it has
been played, and ``stop``. It plays what it receives on a virtual clock, so it knows at each
moment how much audio it holds, which voxwire's pacing is to bound.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
import twilio_bridge
import websockets
from websockets.asyncio.client import ClientConnection

from tests.examples.serving import serving
from tests.support import (
    ServerProcess,
    decode_mulaw_ffmpeg,
    have,
    logged,
    transcribe,
    word_recall,
)

pytestmark = pytest.mark.skipif(not have("ffmpeg"), reason="needs ffmpeg")

SENTENCE = "Our meeting with the bank has moved to Thursday afternoon."
LONG = " ".join(
    [
        "The train to the city leaves at noon from the second platform.",
        "My brother bought a new red bicycle for his long ride to work.",
    ]
    * 4
)  # about 25 s of speech: still talking when the caller interrupts
LEAD_S = 0.200
FRAME_S = 0.020
# The bridge, this peer and the server's Piper share two CPU cores: an arrival stamped late
# by a busy loop makes the frames after it look early against the playout clock (it had
# started late). 60 ms is three frames of such slack; a pacing bug shows as seconds.
SLACK_S = 0.060


@dataclass
class Bridge:
    url: str  # http://127.0.0.1:PORT
    app: Any

    def call(self, stream_sid: str) -> twilio_bridge.Call:
        calls = [c for c in self.app.state.calls if c.stream_sid == stream_sid]
        assert len(calls) == 1, calls
        call: twilio_bridge.Call = calls[0]
        return call


@pytest.fixture(scope="module")
def bridge(server: ServerProcess) -> Iterator[Bridge]:
    """The example app, pointed at the test server, in a real uvicorn on a free port."""
    config = twilio_bridge.Config(voxwire_url=server.ws_url, lead_ms=int(LEAD_S * 1000))
    app = twilio_bridge.create_app(config)
    with serving(app, "the bridge") as url:
        yield Bridge(url, app)


def tone_mulaw(seconds: float) -> bytes:
    """A 440 Hz tone (a caller's voice, as far as an energy detector knows), µ-law encoded
    by ffmpeg."""
    return subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
         f"sine=frequency=440:sample_rate=8000:duration={seconds}",
         "-f", "mulaw", "-ar", "8000", "-ac", "1", "pipe:1"],
        capture_output=True,
        check=True,
    ).stdout  # fmt: skip


@dataclass
class TwilioPeer:
    """Twilio's end of a bidirectional Media Stream."""

    ws: ClientConnection
    stream_sid: str = "MZ00000000000000000000000000000001"
    call_sid: str = "CA00000000000000000000000000000001"
    caller: bytes = b""  # µ-law the caller says next, 160 bytes a frame; silence after it
    media: list[bytes] = field(default_factory=list)  # outbound payloads, decoded
    held: list[float] = field(default_factory=list)  # s of audio held after each arrival
    playout_end: float = 0.0  # when what was received so far will have been played
    pending: list[tuple[float, str]] = field(default_factory=list)  # (due, mark name)
    played: list[str] = field(default_factory=list)  # marks echoed as played
    discarded: list[str] = field(default_factory=list)  # marks echoed because of a clear
    clears: list[tuple[float, float, int]] = field(default_factory=list)  # (at, held, media)
    caller_loud_at: float | None = None  # when the first loud frame left
    seq: int = 0

    async def send(self, event: str, **fields: Any) -> None:
        self.seq += 1
        msg = {"event": event, "sequenceNumber": str(self.seq), "streamSid": self.stream_sid}
        await self.ws.send(json.dumps({**msg, **fields}))

    async def open(self, text: str) -> None:
        await self.ws.send(
            json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        )
        start = {
            "accountSid": "AC00000000000000000000000000000001",
            "streamSid": self.stream_sid,
            "callSid": self.call_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"text": text},
        }
        await self.send("start", start=start)

    async def receive(self) -> None:
        """What the bridge sends, until the socket closes."""
        async for raw in self.ws:
            msg = json.loads(raw)
            assert msg["streamSid"] == self.stream_sid, msg
            now = time.monotonic()
            if msg["event"] == "media":
                self.media.append(base64.b64decode(msg["media"]["payload"]))
                self.playout_end = max(self.playout_end, now) + FRAME_S  # one 160-byte frame
                self.held.append(self.playout_end - now)
            elif msg["event"] == "mark":  # echoed when the audio before it is played
                self.pending.append((max(self.playout_end, now), msg["mark"]["name"]))
            elif msg["event"] == "clear":  # drop the audio held; echo every pending mark
                self.clears.append((now, max(0.0, self.playout_end - now), len(self.media)))
                self.playout_end = now
                dropped, self.pending = self.pending, []
                for _, name in dropped:
                    self.discarded.append(name)
                    await self.send("mark", mark={"name": name})

    async def talk(self) -> None:
        """The caller's side: one inbound frame every 20 ms (silence unless ``caller`` has
        audio), on a steady clock like a phone; and the marks that are due."""
        t0 = time.monotonic()
        for chunk in range(1, 1_000_000):
            frame, self.caller = self.caller[:160], self.caller[160:]
            if frame and self.caller_loud_at is None:
                self.caller_loud_at = time.monotonic()
            media = {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(chunk * 20),
                "payload": base64.b64encode(frame.ljust(160, b"\xff")).decode(),
            }
            await self.send("media", media=media)
            now = time.monotonic()
            for due, name in [p for p in self.pending if p[0] <= now]:
                self.pending.remove((due, name))
                self.played.append(name)
                await self.send("mark", mark={"name": name})
            await asyncio.sleep(max(0.0, t0 + chunk * FRAME_S - time.monotonic()))

    async def stop(self) -> None:
        stop = {"accountSid": "AC00000000000000000000000000000001", "callSid": self.call_sid}
        await self.send("stop", stop=stop)


async def until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)


def ws_url(bridge: Bridge) -> str:
    return bridge.url.replace("http://", "ws://") + "/twilio"


def assert_paced(peer: TwilioPeer) -> None:
    """At no arrival did the peer hold more than the lead and the frame just received."""
    worst = max(peer.held)
    assert worst <= LEAD_S + FRAME_S + SLACK_S, f"held {worst * 1000:.0f} ms"


async def test_call_hears_the_reply_paced_with_marks_acked(
    bridge: Bridge, server: ServerProcess
) -> None:
    async with websockets.connect(ws_url(bridge), open_timeout=20) as ws:
        peer = TwilioPeer(ws)
        await peer.open(SENTENCE)
        receiver = asyncio.create_task(peer.receive())
        talker = asyncio.create_task(peer.talk())
        await until(
            lambda: any(c.stream_sid == peer.stream_sid for c in bridge.app.state.calls),
            20,
            "no call",
        )
        call = bridge.call(peer.stream_sid)
        # played out: voxwire flushed the reply, and Twilio echoed its last mark
        await until(
            lambda: call.forwarded > 0 and not call.speaking and not call.marks,
            60,
            "the reply was not played",
        )
        await asyncio.sleep(0.3)  # nothing more comes
        talker.cancel()
        await peer.stop()
        await asyncio.wait_for(receiver, 10)  # the bridge hangs up: the socket closes

    assert peer.media and all(len(m) == 160 for m in peer.media), {len(m) for m in peer.media}
    assert call.forwarded == len(peer.media)
    heard = transcribe(decode_mulaw_ffmpeg(peer.media, 8000), 8000)
    assert word_recall(SENTENCE, heard) >= 0.5, heard
    assert_paced(peer)

    # every mark came back as played, and the bridge acked exactly those frames, the last
    # one the last frame of the reply; voxwire took every ack (an `invalid_ack` would be here)
    assert peer.played and not peer.discarded and not peer.pending
    assert call.acked == [int(name.removeprefix("frame-")) for name in peer.played]
    assert call.acked[-1] == len(peer.media) - 1
    assert call.errors == [] and call.barge_ins == []  # silence on the line is not a barge-in

    sid = call.session.ready.session_id
    [end] = await logged(server, "session_end", lambda e: e.get("session_id") == sid)
    assert end["frames_sent"] == len(peer.media) and end["close_code"] == 1000, end


async def test_barge_in_clears_twilio_and_cancels_voxwire(bridge: Bridge) -> None:
    tone = tone_mulaw(0.4)
    async with websockets.connect(ws_url(bridge), open_timeout=20) as ws:
        peer = TwilioPeer(ws, stream_sid="MZ00000000000000000000000000000002")
        await peer.open(LONG)
        receiver = asyncio.create_task(peer.receive())
        talker = asyncio.create_task(peer.talk())
        # the first segment was played (and acked); the second one's audio has all been
        # sent, its mark waits for the playout: the caller talks over the bot now, so the
        # clear throws that mark away (Twilio then echoes it at once)
        await until(lambda: bool(peer.played), 60, "no segment played")
        await until(lambda: bool(peer.pending), 60, "no second segment")
        peer.caller = tone
        await until(lambda: bool(peer.clears), 5, "no clear after the caller talked")
        await asyncio.sleep(1.0)  # what still comes of the reply after the clear
        call = bridge.call(peer.stream_sid)
        assert not call.dropping  # voxwire answered `cancelled`
        talker.cancel()
        await peer.stop()
        await asyncio.wait_for(receiver, 10)

    clear_at, held_at_clear, media_at_clear = peer.clears[0]
    assert len(peer.clears) == 1 and len(call.barge_ins) == 1
    # the detector wants three loud frames; the rest is this machine's scheduling
    assert peer.caller_loud_at is not None
    assert clear_at - peer.caller_loud_at <= 3 * FRAME_S + 0.2
    # Twilio held at most the lead (+ the frame in hand): that is what the caller still heard
    assert held_at_clear <= LEAD_S + FRAME_S + SLACK_S, held_at_clear
    # after the clear, at most 100 ms of the cancelled reply (in flight) reaches Twilio
    late = len(peer.media) - media_at_clear
    assert late * FRAME_S <= 0.100, f"{late} frames after the clear"
    assert len(peer.media) * FRAME_S < 15  # far from the reply's 25 s
    assert all(len(m) == 160 for m in peer.media)
    assert_paced(peer)
    # marks the clear threw away came back at once, and were not acked as played
    assert peer.played and call.acked == [int(n.removeprefix("frame-")) for n in peer.played]
    assert not set(peer.discarded) & set(peer.played)
    assert call.errors == []


def test_mulaw_table_matches_ffmpeg() -> None:
    """The bridge's own µ-law decoding (for its speech detector) agrees with ffmpeg's."""
    ours = twilio_bridge.MULAW.astype(np.float32) / 32768.0
    theirs = decode_mulaw_ffmpeg([bytes(range(256))], 8000)
    assert np.array_equal(ours, theirs)


def test_twiml_points_twilio_at_the_stream(bridge: Bridge) -> None:
    r = httpx.post(
        bridge.url + "/twiml",
        params={"text": "Hi & welcome"},
        headers={"host": "abc.example.ngrok.app"},
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(r.text)
    stream = root.find("./Connect/Stream")
    assert root.tag == "Response" and stream is not None
    assert stream.get("url") == "wss://abc.example.ngrok.app/twilio"
    param = stream.find("Parameter")
    assert param is not None and param.attrib == {"name": "text", "value": "Hi & welcome"}
