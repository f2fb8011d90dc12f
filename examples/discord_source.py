"""A discord.py ``AudioSource`` that speaks a voxwire session: a bot talks in a voice channel.

Discord's voice wants 20 ms Opus packets of 48 kHz stereo, and voxwire sends exactly that
(output opus, 48000 Hz, frame_ms 20, channels 2), so discord.py sends each packet as it is:
no decoding, no re-encoding (``is_opus()`` is True).

discord.py calls ``read()`` from its player thread every 20 ms, while the voxwire client runs
on the bot's event loop; a bounded thread-safe queue carries the packets from one to the
other. voxwire paces the frames at real time (``lead_ms`` ahead), so the queue holds about
the lead and never fills while the player plays.

In a bot (an async command handler, on the bot's loop)::

    source = VoxwireSource("Hello everyone, the build is green.")
    voice_client.play(source, after=lambda err: print("finished", err or source.error))
    ...
    voice_client.stop()  # barge-in: discord.py calls source.cleanup(), which cancels the speech

``text`` may also be an async iterator of pieces (an LLM's tokens): they are spoken as they
come. ``python examples/discord_source.py`` runs a bot that says a sentence in a channel
(DISCORD_TOKEN, DISCORD_CHANNEL_ID; needs ``discord.py[voice]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections.abc import AsyncIterable

from server.protocol import OutputFormat, Pacing
from voxwire.client import Audio, Session, connect

try:
    from discord import AudioSource as _AudioSource
except ImportError:  # discord.py is optional (the `examples` extra): duck-typed without it

    class _AudioSource:  # type: ignore[no-redef]
        def cleanup(self) -> None:
            pass


VOXWIRE_URL = os.environ.get("VOXWIRE_URL", "ws://127.0.0.1:8000/v1/stream")
FRAME_S = 0.020
# One 20 ms Opus frame of silence: the packet discord.py itself sends between sounds.
OPUS_SILENCE = b"\xf8\xff\xfe"


class VoxwireSource(_AudioSource):
    """Plays what a voxwire session says about ``text``, then ends (``read()`` → b"")."""

    _live = False  # a session runs, for cleanup() to stop (False if __init__ failed)

    def __init__(
        self,
        text: str | AsyncIterable[str],
        *,
        url: str = VOXWIRE_URL,
        api_key: str | None = None,
        voice: str | None = None,
        lead_ms: int = 400,  # what voxwire may send ahead: the queue's usual fill
        buffer_ms: int = 1000,  # the queue's bound; above the lead, so only a pause fills it
        loop: asyncio.AbstractEventLoop | None = None,  # the bot's; default: the running one
    ) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._stopping = threading.Event()  # cleanup() was called: drop the rest
        self._produced = threading.Event()  # the session is over: no packet will follow
        self.error: Exception | None = None  # why the speech ended early, if it did
        self._current_error: Exception | None = None
        self._url, self._api_key, self._voice, self._lead_ms = url, api_key, voice, lead_ms
        self._packets: queue.Queue[bytes] = queue.Queue(maxsize=max(1, buffer_ms // 20))
        self._ended = False  # read() has returned b""
        self.session: Session | None = None  # once open: its `ready` names it
        self._feeder: asyncio.Task[None] | None = None
        self._end_sent = False
        self._cancel_sent = False
        self._live = True
        # from the loop's thread or any other: the session runs on the bot's loop.
        # `closed` is done when the session is over (a bot may wait for it before leaving).
        self.closed = asyncio.run_coroutine_threadsafe(self._run(text), self._loop)

    # ------------------------------------------------------------------ player thread

    def is_opus(self) -> bool:
        return True

    def read(self) -> bytes:
        """The next 20 ms Opus packet; b"" at the end. Never blocks for more than a frame:
        discord.py's player keeps time by its own clock and would send what follows a long
        wait in a burst, so while voxwire has nothing (its first audio is on the way) the
        player gets silence."""
        if self._ended:
            return b""
        try:
            return self._packets.get(timeout=FRAME_S)
        except queue.Empty:
            if self._produced.is_set() and self._packets.empty():
                self._ended = True  # every packet the session made was played
                return b""
            return OPUS_SILENCE

    def cleanup(self) -> None:
        """discord.py calls this when playing stops (the end, ``stop()``, a disconnect)."""
        if self._live and not self._stopping.is_set():
            self._stopping.set()
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing runs now
                self._loop.call_soon_threadsafe(self._stop_soon)

    # ------------------------------------------------------------------ the bot's loop

    async def _run(self, text: str | AsyncIterable[str]) -> None:
        output = OutputFormat(
            encoding="opus",
            sample_rate=48000,
            frame_ms=20,
            channels=2,
            pacing=Pacing(mode="realtime", lead_ms=self._lead_ms),
        )
        try:
            async with connect(
                self._url, api_key=self._api_key, voice=self._voice, output=output
            ) as session:
                self.session = session
                self._feeder = asyncio.create_task(self._feed(session, text))
                if self._stopping.is_set():  # stopped while the session was opening
                    await self._stop()
                async for item in session:  # until voxwire's `done`
                    if isinstance(item, Audio) and not self._stopping.is_set():
                        await self._put(item.data)
        except Exception as exc:  # the player ends the playback and hands this to `after`
            self.error = self._current_error = exc  # (discord.py reads `_current_error`)
        finally:
            if self._feeder is not None:
                self._feeder.cancel()
            self._live = False
            self._produced.set()

    async def _feed(self, session: Session, text: str | AsyncIterable[str]) -> None:
        if isinstance(text, str):
            await session.text(text)
        else:
            async for piece in text:
                await session.text(piece)
        self._end_sent = True
        await session.end()  # speak the rest, then `done`

    async def _put(self, packet: bytes) -> None:
        """Into the queue, waiting (without blocking the loop) while it is full: the player
        is paused, so voxwire's own flow control holds the rest."""
        while not self._stopping.is_set():
            try:
                self._packets.put_nowait(packet)
                return
            except queue.Full:
                await asyncio.sleep(FRAME_S)

    def _stop_soon(self) -> None:
        self._stopper = self._loop.create_task(self._stop())  # held: tasks are weakly kept

    async def _stop(self) -> None:
        """Cancel the speech: voxwire drops what is unsaid, then ends the session."""
        session = self.session
        if session is None or self._cancel_sent:
            return  # still connecting (_run stops it once it is open), or done already
        self._cancel_sent = True
        if self._feeder is not None:
            self._feeder.cancel()
        with contextlib.suppress(Exception):  # the session may have ended meanwhile
            await session.cancel()
            if not self._end_sent:
                self._end_sent = True
                await session.end()  # after `end`, voxwire answers `cancelled`, `done`


async def _demo() -> None:
    """A bot that joins DISCORD_CHANNEL_ID, says one sentence and leaves."""
    import discord

    client = discord.Client(intents=discord.Intents.default())

    @client.event
    async def on_ready() -> None:
        channel = client.get_channel(int(os.environ["DISCORD_CHANNEL_ID"]))
        assert isinstance(channel, discord.VoiceChannel)
        voice_client: discord.VoiceClient = await channel.connect()
        finished = asyncio.Event()
        source = VoxwireSource("Hello from voxwire. This voice was made as you heard it.")
        voice_client.play(source, after=lambda _err: client.loop.call_soon_threadsafe(finished.set))
        await finished.wait()
        await voice_client.disconnect()
        await client.close()

    await client.start(os.environ["DISCORD_TOKEN"])


if __name__ == "__main__":
    asyncio.run(_demo())
