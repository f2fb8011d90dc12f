"""examples/discord_source.py against a real voxwire server, played by discord.py's own
``AudioPlayer`` thread (its real timing and its calls of ``read()`` and ``cleanup()``), with a
stand-in voice connection that keeps the packets instead of sending them to Discord."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import discord
import numpy as np
import opuslib_next
from discord.player import AudioPlayer
from discord_source import OPUS_SILENCE, VoxwireSource

from tests.support import ServerProcess, logged, transcribe, word_recall

SENTENCE = "Our meeting with the bank has moved to Thursday afternoon."
LONG = " ".join(
    ["The train to the city leaves at noon from the second platform."] * 6
)  # about 20 s of speech


class VoiceLine:
    """What ``AudioPlayer`` uses of a ``discord.VoiceClient``: where packets go, and the
    gateway's speaking state (ignored)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.packets: list[bytes] = []
        self.client = self  # AudioPlayer reaches the loop as client.client.loop
        self.ws = self
        self.loop = loop

    async def speak(self, state: Any) -> None:
        pass

    def is_connected(self) -> bool:
        return True

    def send_audio_packet(self, data: bytes, *, encode: bool = True) -> None:
        assert not encode  # an Opus source: discord.py sends its packets as they are
        self.packets.append(bytes(data))


class Played:
    """One playback: discord.py's player thread on ``source``, and how it ended."""

    def __init__(self, source: VoxwireSource) -> None:
        self.line = VoiceLine(asyncio.get_running_loop())
        self.finished = threading.Event()
        self.errors: list[Exception | None] = []
        self.player = AudioPlayer(source, cast(Any, self.line), after=self._after)
        self.player.start()

    def _after(self, error: Exception | None) -> None:
        self.errors.append(error)
        self.finished.set()

    async def wait(self, timeout: float) -> None:
        assert await asyncio.to_thread(self.finished.wait, timeout), "playback did not end"
        await asyncio.to_thread(self.player.join, 5)  # it calls source.cleanup() last


def decode_stereo(packets: list[bytes]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Each packet through libopus as 48 kHz stereo: exactly 20 ms (960 samples × 2)."""
    dec = opuslib_next.Decoder(48000, 2)
    out = []
    for pkt in packets:
        pcm = np.frombuffer(dec.decode(pkt, 5760), dtype="<i2")  # room for 120 ms
        assert pcm.size == 960 * 2, (pcm.size, pkt[:4].hex())
        out.append(pcm.reshape(960, 2))
    return np.concatenate(out).astype(np.float32) / 32768.0


async def test_discord_player_plays_the_sentence(server: ServerProcess) -> None:
    source = VoxwireSource(SENTENCE, url=server.ws_url)
    assert isinstance(source, discord.AudioSource) and source.is_opus()
    played = Played(source)
    await played.wait(60)

    assert played.errors == [None] and source.error is None
    assert source.read() == b"" and source.read() == b""  # the end stays the end
    source.closed.result(5)
    assert source.session is not None
    sid = source.session.ready.session_id
    [end] = await logged(server, "session_end", lambda e: e.get("session_id") == sid)
    assert end["close_code"] == 1000, end
    # every voxwire frame went out (besides the player's silence while the first was coming
    # and the five it sends after the end)
    assert len(played.line.packets) >= end["frames_sent"] > 0

    pcm = decode_stereo(played.line.packets)
    left, right = pcm[:, 0], pcm[:, 1]
    assert np.allclose(left, right, atol=0.05)  # the mono voice in both channels
    heard = transcribe(np.ascontiguousarray(left), 48000)
    assert word_recall(SENTENCE, heard) >= 0.5, heard


async def test_stop_cancels_the_session(server: ServerProcess) -> None:
    """``voice_client.stop()`` mid-sentence, while the text is still streaming in (an LLM's
    tokens): the player calls cleanup(), and the session is cancelled and ended at once."""

    async def tokens() -> AsyncIterator[str]:
        for piece in re.findall(r"\S+\s*", LONG):
            yield piece
            await asyncio.sleep(0.05)

    source = VoxwireSource(tokens(), url=server.ws_url)
    played = Played(source)
    await asyncio.sleep(2.0)
    played.player.stop()  # what voice_client.stop() does
    stopped_at = time.monotonic()
    await played.wait(10)
    await asyncio.wrap_future(source.closed)
    assert time.monotonic() - stopped_at < 3  # not the 20 s the text would take

    assert played.errors == [None] and source.error is None
    assert source.session is not None
    sid = source.session.ready.session_id
    [end] = await logged(server, "session_end", lambda e: e.get("session_id") == sid)
    assert end["close_code"] == 1000, end
    assert end["frames_sent"] * 0.020 < 5, end  # well short of the whole text
    assert len(played.line.packets) < 2.5 / 0.020
    decode_stereo(played.line.packets)


def test_silence_packet_is_20_ms_stereo() -> None:
    """What read() plays while voxwire's first frame is on its way is valid Opus."""
    assert decode_stereo([OPUS_SILENCE]).shape == (960, 2)
