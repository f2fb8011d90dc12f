"""An asyncio client for the native protocol (``/v1/stream``) that resumes by itself.

::

    async with connect("ws://127.0.0.1:8765/v1/stream") as session:
        await session.text("Hello there. ")
        await session.end()
        async for item in session:
            if isinstance(item, Audio):
                play(item.frame, item.data)

When the connection drops (a network error, a node that died or drains), the
session reconnects to the same URL or the next one of a list and resumes
(docs/protocol.md, "Resume"): the user sees every frame once and in order, and
text, ``flush``, ``end`` and ``cancel`` sent meanwhile are sent again where the
server does not have them. Errors that end the session raise ``VoxwireError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import websockets
from websockets.asyncio.client import ClientConnection

from server.protocol import (
    Ack,
    Cancel,
    Cancelled,
    Done,
    End,
    Error,
    Flush,
    Flushed,
    OutputFormat,
    Ready,
    Segment,
    Start,
    Text,
    Words,
)
from voxwire._ledger import Kind, Ledger, Op
from voxwire._reconnect import first_connection, resume_connection
from voxwire._wire import CLIENT_FAULT_CLOSES, ClientMessage, Dial, VoxwireError, decode, send

__all__ = ["Audio", "Item", "Session", "VoxwireError", "connect"]

# Code points per text message: even at 6 bytes each (a JSON-escaped control character)
# a piece stays under the server's default 64 KiB message limit.
_PIECE = 8192
# Items waiting for the user's loop. When it falls this far behind, the client stops
# reading the socket, so the server's flow control (max_unsent_audio_s, slow_consumer)
# sees a slow reader instead of this process buffering without end.
_QUEUE_ITEMS = 1024


@dataclass(frozen=True, slots=True)
class Audio:
    """One binary frame: ``frame`` is its number in the session (from 0, across
    resumes), ``at`` its arrival (``time.perf_counter()``)."""

    frame: int
    data: bytes
    at: float


Item = Audio | Segment | Words | Flushed | Cancelled | Done | Error


class Session:
    """A session on one or more nodes. Use ``connect()`` to open one."""

    ready: Ready  # the newest ``ready`` (a resume brings a new one)

    def __init__(
        self,
        urls: Sequence[str],
        start: Start,
        dial: Dial,
        resume: bool,
        max_reconnect_s: float,
    ) -> None:
        if not urls:
            raise ValueError("connect() needs at least one URL")
        self.resumes = 0  # how many times the session was resumed after a drop
        self.close_code: int | None = None  # of the last connection, once it closed
        self.frames = 0  # binary frames received (the next frame's number)
        self._urls = list(urls)
        self._url = 0
        self._start = start
        self._dial = dial
        self._resume = resume
        self._max_reconnect_s = max_reconnect_s
        self._ws: ClientConnection | None = None
        self._live = False  # sends go straight out; else they wait in the ledger
        self._lock = asyncio.Lock()  # a resume's re-send and user sends keep their order
        self._ledger = Ledger()
        self._items: asyncio.Queue[Item | VoxwireError] = asyncio.Queue(_QUEUE_ITEMS)
        self._task: asyncio.Task[None] | None = None
        self._skip = 0  # frames a resume sends again that we already have
        self._segment = -1  # newest segment index given to the user
        self._words: set[tuple[int, int]] = set()
        self._ended = False  # the user called end()
        self._done = False  # ``done`` arrived
        self._finished = False  # iteration is over
        self._fatal: VoxwireError | None = None  # a fatal error; its close comes next
        self._error: VoxwireError | None = None  # the session is over with this

    # ------------------------------------------------------------------ state

    @property
    def session_id(self) -> str:
        return self.ready.session_id

    @property
    def connected(self) -> bool:
        """True while a connection is up and sends go out at once."""
        return self._live

    @property
    def url(self) -> str:
        """The URL of the current (or last) connection."""
        return self._urls[self._url]

    # ------------------------------------------------------------------ sending

    async def text(self, text: str) -> None:
        """Send text (any size; it may end mid-word)."""
        self._check("text")
        for i in range(0, len(text), _PIECE):
            await self._send("text", text[i : i + _PIECE])

    async def flush(self) -> None:
        self._check("flush")
        await self._send("flush")

    async def end(self) -> None:
        """No more text: iteration finishes after ``done``."""
        self._check("end")
        self._ended = True
        await self._send("end")

    async def cancel(self) -> None:
        """Barge-in: the server drops queued text and unsent audio, then ``cancelled``."""
        self._check("cancel")
        await self._send("cancel")

    async def ack(self, frame: int) -> None:
        """Playback progress (optional). Not repeated after a resume: the resume names
        its first frame itself."""
        self._check("ack")
        async with self._lock:
            if self._live and self._ws is not None:
                with contextlib.suppress(websockets.ConnectionClosed):
                    await send(self._ws, Ack(frame=frame))

    def _check(self, what: str) -> None:
        if self._error is not None:
            raise self._error
        if self._ended and what in ("text", "flush", "end"):
            raise VoxwireError("session_ending", f"'{what}' after 'end'")

    async def _send(self, kind: Kind, text: str = "") -> None:
        async with self._lock:
            op = self._ledger.text(text) if kind == "text" else self._ledger.mark(kind)
            if self._live and self._ws is not None:
                # A send into a connection that just dropped is not lost: the ledger
                # still has it, and the resume sends what the server lacks.
                with contextlib.suppress(websockets.ConnectionClosed):
                    await send(self._ws, _message(op))

    # ------------------------------------------------------------------ receiving

    def __aiter__(self) -> Session:
        return self

    async def __anext__(self) -> Item:
        if self._finished:
            raise StopAsyncIteration
        if self._error is not None and self._items.empty():
            self._finished = True
            raise self._error
        item = await self._items.get()
        if isinstance(item, VoxwireError):
            self._finished = True
            raise item
        if isinstance(item, Done):
            self._finished = True
        return item

    async def _open(self) -> None:
        self._url, self._ws, self.ready = await first_connection(
            self._urls, self._dial, self._start
        )
        self._live = True
        self._task = asyncio.create_task(self._run(), name=f"voxwire-{self.ready.session_id}")

    async def _run(self) -> None:
        """Read every connection in turn until ``done``; reconnect after a drop."""
        try:
            while True:
                code = await self._pump()
                self._live = False
                self.close_code = code
                if self._done:
                    return
                if self._fatal is not None:
                    self._fatal.close_code = code
                    raise self._fatal
                if not self._can_resume() or code in CLIENT_FAULT_CLOSES:
                    raise VoxwireError(
                        "connection_lost", f"the connection closed ({code}) before 'done'", code
                    )
                await self._reconnect()
        except VoxwireError as exc:
            self._stop(exc)
        except Exception as exc:  # a bug here must end the iteration, not hang it
            self._stop(VoxwireError("client_error", repr(exc)))
            raise

    def _stop(self, exc: VoxwireError) -> None:
        self._live = False
        self._error = exc
        with contextlib.suppress(asyncio.QueueFull):  # else __anext__ finds _error
            self._items.put_nowait(exc)

    def _can_resume(self) -> bool:
        return self._resume and self.ready.resume_token is not None

    async def _pump(self) -> int:
        """Hand one connection's messages on; its close code when it ends."""
        ws = self._ws
        assert ws is not None
        try:
            while True:
                raw = await ws.recv()
                item = self._audio(raw) if isinstance(raw, bytes) else self._event(raw)
                if item is not None:
                    await self._items.put(item)  # waits while the user's loop is behind
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else 1006

    def _audio(self, data: bytes) -> Audio | None:
        self._ledger.other()
        if self._skip:  # a replay from before what we hold: never twice to the user
            self._skip -= 1
            return None
        self.frames += 1
        return Audio(self.frames - 1, data, time.perf_counter())

    def _event(self, raw: str) -> Item | None:
        msg = decode(raw)
        if msg is None or isinstance(msg, Ready):  # unknown (newer) events are skipped
            return None
        if isinstance(msg, Flushed | Cancelled):
            answered = self._ledger.answer("flush" if isinstance(msg, Flushed) else "cancel")
            return msg if answered else None
        self._ledger.other()
        if isinstance(msg, Segment):
            if msg.index <= self._segment:
                return None  # announced again with a replayed frame
            self._segment = msg.index
        elif isinstance(msg, Words):
            key = (msg.segment, msg.words[0].char if msg.words else -1)
            if key in self._words:
                return None
            self._words.add(key)
        elif isinstance(msg, Done):
            self._done = True
            self._ledger.done()
        elif isinstance(msg, Error) and not self._user_error(msg):
            return None
        return msg

    def _user_error(self, err: Error) -> bool:
        """Whether the user sees this error; a fatal one ends the session after its close."""
        if err.fatal:
            if not (err.code == "server_draining" and self._can_resume()):
                self._fatal = VoxwireError(err.code, err.message)
            return False  # a drain: the session goes on at the next node
        if err.code == "session_ending" and self._ended:
            # after end() no user text/flush/end leaves this client: it is a mark a
            # resume sent again that the server had already
            return False
        if err.code == "server_draining" and self._can_resume():
            return False  # refused while the node drains: sent again after the resume
        if err.code in ("text_buffer_full", "session_text_limit"):
            self._ledger.text_dropped(err.message)
        return True

    # ------------------------------------------------------------------ resume

    async def _reconnect(self) -> None:
        try:
            self._url, ws, ready = await resume_connection(
                self._urls, self._url, self._dial, self.ready, self.frames, self._max_reconnect_s
            )
        except VoxwireError as exc:
            exc.close_code = exc.close_code or self.close_code
            raise
        await self._resumed(ws, ready)

    async def _resumed(self, ws: ClientConnection, ready: Ready) -> None:
        if not ready.resumed or ready.next_frame > self.frames:
            await ws.close()
            raise VoxwireError(
                "resume_gap",
                f"the server resumed at frame {ready.next_frame}, but {self.frames} were received",
            )
        self._skip = self.frames - ready.next_frame
        self.ready = ready
        self.resumes += 1
        async with self._lock:  # no user send may pass the re-sent part
            self._ws = ws
            self._live = True
            with contextlib.suppress(websockets.ConnectionClosed):
                for op in self._ledger.resend(ready.chars_accepted):
                    await send(ws, _message(op))

    # ------------------------------------------------------------------ closing

    async def aclose(self) -> None:
        """Close the connection (after ``done``: once the server has closed it)."""
        task = self._task
        if task is not None:
            if self._done and not task.done():
                await asyncio.wait({task}, timeout=2)  # the server's close follows 'done'
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        ws = self._ws
        self._live = False
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
            if self.close_code is None:
                self.close_code = ws.close_code


def _message(op: Op) -> ClientMessage:
    if op.kind == "text":
        return Text(text=op.text)
    if op.kind == "flush":
        return Flush()
    if op.kind == "end":
        return End()
    return Cancel()


@contextlib.asynccontextmanager
async def connect(
    url: str | Sequence[str],
    *,
    api_key: str | None = None,
    voice: str | None = None,
    engine: str | None = None,
    language: str | None = None,
    speed: float | None = None,
    output: OutputFormat | None = None,
    timings: bool = False,
    resume: bool = True,
    max_reconnect_s: float = 30.0,
    open_timeout: float = 10.0,
    ping_interval: float | None = 20.0,
) -> AsyncIterator[Session]:
    """Open a session (``start`` → ``ready``) on ``url``, or on the first of a list of
    URLs that takes it; after a drop, ``resume`` tries them in turn from the next one.

    ``api_key`` goes as ``Authorization: Bearer``. Raises ``VoxwireError`` when no URL
    can be reached or the server refuses the start (``unknown_voice``, ...).
    ``ping_interval`` (None: off) is how often a silent dead link is checked for.
    """
    urls = [url] if isinstance(url, str) else list(url)
    start = Start(
        voice=voice,
        engine=engine,
        language=language,
        speed=1.0 if speed is None else speed,
        output=output,
        timings="word" if timings else None,
    )
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    session = Session(
        urls, start, Dial(headers, open_timeout, ping_interval), resume, max_reconnect_s
    )
    await session._open()
    try:
        yield session
    finally:
        await session.aclose()
