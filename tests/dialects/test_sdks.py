"""The vendors' own Python SDKs against a real voxwire, pointed at it by base URL.

- deepgram-sdk (v7): its environment object names the WebSocket base
  (``DeepgramClientEnvironment(production="ws://...")``), used as
  ``{production}/v1/speak``.
- cartesia (v4): ``AsyncCartesia(websocket_base_url="ws://...")``, used as
  ``{websocket_base_url}/tts/websocket``.
- elevenlabs: not tested. Its only WebSocket text-to-speech client
  (``RealtimeTextToSpeechClient.convert_realtime``, elevenlabs 2.78) rewrites the base
  URL's scheme to ``wss`` (``urlparse(base_url)._replace(scheme="wss")``), so it cannot
  reach a plain ``ws://`` server, and the SDK has no client for ``multi-stream-input``.
  Pipecat's ElevenLabsTTSService (test_pipecat.py) covers the ElevenLabs dialect.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from cartesia import AsyncCartesia
from cartesia.types import VoiceSpecifierParam
from deepgram import AsyncDeepgramClient
from deepgram.environment import DeepgramClientEnvironment
from deepgram.speak.v1.types import SpeakV1Flushed, SpeakV1Metadata, SpeakV1Text

from tests.support import ServerProcess, decode_pcm, transcribe, word_recall

VOICE = "en_US-joe-medium"
RATE = 24000
SENTENCE = "Our meeting with the bank has moved to Thursday afternoon."


def heard(pcm: bytes, text: str) -> float:
    return word_recall(text, transcribe(decode_pcm([pcm]), RATE))


async def test_deepgram_sdk_speaks_a_sentence(server: ServerProcess) -> None:
    http, ws = f"http://127.0.0.1:{server.port}", f"ws://127.0.0.1:{server.port}"
    env = DeepgramClientEnvironment(base=http, production=ws, agent=ws, agent_rest=http)
    client = AsyncDeepgramClient(api_key="unused", environment=env)
    pcm = bytearray()
    events: list[object] = []
    async with client.speak.v1.connect(model=VOICE, encoding="linear16", sample_rate=RATE) as sock:
        await sock.send_text(SpeakV1Text(type="Speak", text=SENTENCE))
        await sock.send_flush()
        while True:
            msg = await asyncio.wait_for(sock.recv(), 30)
            if isinstance(msg, bytes):
                pcm += msg
                continue
            events.append(msg)
            if isinstance(msg, SpeakV1Flushed):
                break
        await sock.send_close()
    # the SDK parsed the server's messages into its own types
    assert isinstance(events[0], SpeakV1Metadata), events
    assert isinstance(events[-1], SpeakV1Flushed), events
    assert 2.0 < len(pcm) / (2 * RATE) < 7.0
    assert heard(bytes(pcm), SENTENCE) >= 0.5


@dataclass
class CartesiaReply:
    pcm: bytes
    kinds: list[str]  # the event types, in order
    words: list[str]
    starts: list[float]


async def cartesia_says(
    port: int, text: str, voice: VoiceSpecifierParam, timeout: float = 10.0
) -> CartesiaReply:
    """``text`` through the SDK's context helper (push, no_more_inputs, receive)."""
    client = AsyncCartesia(api_key="unused", websocket_base_url=f"ws://127.0.0.1:{port}")
    got = CartesiaReply(b"", [], [], [])
    pcm = bytearray()
    try:
        async with client.tts.websocket_connect() as conn:
            ctx = conn.context(
                model_id="sonic-3",
                voice=voice,
                output_format={"container": "raw", "encoding": "pcm_s16le", "sample_rate": RATE},
                language="en",
                add_timestamps=True,
                timeout=timeout,  # between two events
            )
            await ctx.push(text)
            await ctx.no_more_inputs()
            async for ev in ctx.receive():  # ends at "done" (or "error")
                got.kinds.append(ev.type)
                if ev.type == "chunk":
                    pcm += ev.audio or b""
                elif ev.type == "timestamps" and ev.word_timestamps is not None:
                    got.words += ev.word_timestamps.words
                    got.starts += ev.word_timestamps.start
    finally:
        await client.close()
    got.pcm = bytes(pcm)
    return got


async def test_cartesia_sdk_speaks_a_sentence_with_word_timestamps(
    server: ServerProcess,
) -> None:
    got = await cartesia_says(server.port, SENTENCE, {"id": VOICE})
    assert got.kinds[-1] == "done", got.kinds
    secs = len(got.pcm) / (2 * RATE)
    assert 2.0 < secs < 7.0, secs
    assert heard(got.pcm, SENTENCE) >= 0.5
    # WORD TIMINGS (add_timestamps): the words sent, in order, at increasing times
    assert got.words == SENTENCE.split()
    assert got.starts == sorted(got.starts) and got.starts[-1] < secs


# The SDK's README (and no_more_inputs() without a voice) sends the voice as the bare
# id string, which its VoiceSpecifierParam (str | {"id": ...}) allows.
async def test_cartesia_sdk_voice_as_a_bare_id(server: ServerProcess) -> None:
    got = await cartesia_says(server.port, SENTENCE, VOICE, timeout=4)
    assert got.kinds[-1] == "done", got.kinds
    assert heard(got.pcm, SENTENCE) >= 0.5
