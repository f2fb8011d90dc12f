"""voxwire.client against real servers: a plain session, word timings, barge-in, and
resume by itself after a cut connection (a TCP proxy in the test kills it), a killed
node and a draining node (two nodes on one Redis), with every frame once and in order
and the speech whole."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from server.protocol import Cancelled, Done, Error, Flushed, OutputFormat, Segment, Words
from tests.support import (
    ServerProcess,
    decode_opus,
    decode_pcm,
    logged,
    rms,
    transcribe,
    word_recall,
)
from voxwire._ledger import Ledger
from voxwire._wire import decode
from voxwire.client import Audio, Item, Session, VoxwireError, connect

# Sentences pocketsphinx hears reliably (tests/test_resume.py).
FOX = "The quick brown fox jumps over the lazy dog. "
STATION = "We will meet again tomorrow morning at the station. "
JOURNEY = "A journey of a thousand miles begins with a single step. "
STELLA = "Please call Stella and ask her to bring these things with her from the store. "
LONG = STELLA + FOX + STATION + JOURNEY
PCM16 = OutputFormat(encoding="pcm_s16le", sample_rate=16000)


class Collected:
    """What one session yielded, in order."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.frames: list[Audio] = []

    def of(self, kind: type) -> list[Any]:
        return [i for i in self.items if isinstance(i, kind)]

    def segments_text(self) -> list[str]:
        return " ".join(s.text for s in self.of(Segment)).split()

    def segment_words(self) -> list[str]:
        return words(" ".join(s.text for s in self.of(Segment)))


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


async def collect(
    session: Session,
    until: type = Done,
    rec: Collected | None = None,
    on_frame: Callable[[int], Awaitable[None] | None] | None = None,
    timeout: float = 30.0,
) -> Collected:
    """Iterate ``session`` into ``rec`` until an item of type ``until``."""
    rec = rec or Collected()
    async with asyncio.timeout(timeout):
        async for item in session:
            rec.items.append(item)
            if isinstance(item, Audio):
                rec.frames.append(item)
                if on_frame is not None:
                    maybe = on_frame(item.frame)
                    if maybe is not None:
                        await maybe
            if isinstance(item, until):
                break
    return rec


def assert_every_frame_once(rec: Collected, cancelled: bool = False) -> None:
    numbers = [f.frame for f in rec.frames]
    assert numbers == list(range(len(numbers)))
    done = rec.of(Done)
    assert done and done[-1].frames == len(numbers), (done, len(numbers))
    # each segment once, in order, announced right before its first frame
    segments = rec.of(Segment)
    indices = [s.index for s in segments]
    if cancelled:  # chunks dropped before they were spoken keep their index
        assert indices == sorted(set(indices))
    else:
        assert indices == list(range(len(segments)))
    n = 0
    for item in rec.items:
        if isinstance(item, Audio):
            n += 1
        elif isinstance(item, Segment):
            assert item.first_frame == n


def assert_heard(rec: Collected, text: str, rate: int = 16000) -> None:
    # Words, not punctuation: a node that takes over after two whole chunks may say a
    # chunk's last "." once more (the server's done-text count leaves out the space
    # between chunks); every word exactly once, in order, is what the client owes.
    assert rec.segment_words() == words(text), [s.text for s in rec.of(Segment)]
    audio = decode_pcm(f.data for f in rec.frames)
    assert len(audio) == len(rec.frames) * rate // 50  # whole 20 ms frames
    heard = transcribe(audio, rate)
    assert word_recall(text, heard) >= 0.6, heard


# ------------------------------------------------------------------ a TCP proxy


class Proxy:
    """Forwards TCP connections to ``port``; ``cut()`` kills the open ones (the network
    drops), ``refuse`` turns new ones away, ``swallow`` drops what the client sends."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.refuse = False
        self.swallow = False
        self.accepted = 0
        self._open: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/v1/stream"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()

    def cut(self) -> None:
        for w in self._open:
            w.transport.abort()
        self._open.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            writer.transport.abort()
            return
        self.accepted += 1
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        self._open += [writer, up_w]
        await asyncio.gather(self._pipe(reader, up_w, True), self._pipe(up_r, writer, False))

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, up: bool) -> None:
        try:
            while data := await r.read(65536):
                if up and self.swallow:
                    continue  # lost on the way: the server never sees it
                w.write(data)
                await w.drain()
        except OSError:
            pass
        finally:
            w.transport.abort()


@pytest.fixture
async def proxy(server: ServerProcess) -> AsyncIterator[Proxy]:
    async with Proxy(server.port) as p:
        yield p


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.01)):  # polls a plain attribute: no event to wait on
        if cond():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError


# ------------------------------------------------------------------ one node


async def test_a_session_streams_numbered_frames_that_decode(server: ServerProcess) -> None:
    text = "Hello th" + "ere, how are " + "you today? " + FOX
    async with connect(server.ws_url) as session:
        assert session.ready.output.encoding == "opus" and session.ready.resume_token
        for piece in ("Hello th", "ere, how are ", "you today? ", FOX):
            await session.text(piece)
        await session.flush()
        rec = await collect(session, until=Flushed)
        await session.end()
        rec = await collect(session, rec=rec)
        assert session.resumes == 0
    assert session.close_code == 1000
    assert_every_frame_once(rec)
    assert rec.segments_text() == text.split()
    assert len(rec.of(Flushed)) == 1 and not rec.of(Error)
    audio = decode_opus(f.data for f in rec.frames)
    assert len(audio) == len(rec.frames) * 960
    assert rms(audio) > 0.02
    assert word_recall(text, transcribe(audio, 48000)) >= 0.6


async def test_word_timings_when_asked(server: ServerProcess) -> None:
    async with connect(server.ws_url, timings=True, output=PCM16) as session:
        await session.text(FOX)
        await session.end()
        rec = await collect(session)
    words = rec.of(Words)
    assert words and words[0].segment == 0
    said = [w.text.lower().strip(".") for ev in words for w in ev.words]
    assert said[:3] == ["the", "quick", "brown"]
    assert all(w.start < w.end for ev in words for w in ev.words)


async def test_cancel_then_more_text(server: ServerProcess) -> None:
    async with connect(server.ws_url, output=PCM16) as session:
        await session.text(LONG)
        await session.flush()

        async def barge_in(n: int) -> None:
            if n == 10:
                await session.cancel()

        rec = await collect(session, until=Cancelled, on_frame=barge_in)
        cut_at = len(rec.frames)
        await session.text(STATION)
        await session.end()
        rec = await collect(session, rec=rec)
    assert_every_frame_once(rec, cancelled=True)
    assert not rec.of(Flushed)  # the cancelled utterance never finished
    after = [s for s in rec.of(Segment) if s.first_frame >= cut_at]
    assert " ".join(s.text for s in after).split() == STATION.split()


async def test_a_loop_that_stops_reading_is_a_slow_consumer_not_a_growing_buffer() -> None:
    """The client holds a bounded number of items for the user's loop, then stops
    reading the socket: the server's flow control sees the slow reader and closes it,
    instead of this process buffering the whole utterance."""
    srv = ServerProcess(max_unsent_audio_s=1, slow_consumer_timeout_s=1, close_grace_s=1)
    try:
        srv.wait_ready()
        ten_ms = OutputFormat(encoding="opus", sample_rate=48000, frame_ms=10)
        async with connect(srv.ws_url, output=ten_ms, resume=False) as session:
            # The kernel's receive buffer autotunes up to tcp_rmem's maximum (32 MB on
            # these machines): minutes of Opus, now that the server writes its frames
            # in bursts. A client's own small buffer keeps the test about the client.
            assert session._ws is not None
            sock = session._ws.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
            # About six minutes of speech: far more than that buffer holds.
            await session.text(LONG * 20)
            await session.end()
            await asyncio.sleep(8)  # the loop is busy elsewhere
            got = 0
            with pytest.raises(VoxwireError) as err:
                async for item in session:
                    got += isinstance(item, Audio)
        ends = await logged(srv, "session_end", lambda e: e["close_reason"] == "slow_consumer")
        assert ends, srv.logs()[-1500:]
    finally:
        srv.stop()
    assert err.value.code in ("slow_consumer", "connection_lost"), err.value
    # The server stopped making the utterance: it sent far less than its six minutes,
    # and the client held no more than the server sent.
    sent = ends[0]["frames_sent"]
    assert ends[0]["audio_s"] < 180, ends[0]
    assert got <= sent, (got, sent)


async def test_an_unreachable_server_raises() -> None:
    srv_url = "ws://127.0.0.1:9/v1/stream"  # nothing listens: unreachable
    with pytest.raises(VoxwireError) as unreachable:
        async with connect(srv_url):
            pass
    assert unreachable.value.code == "unreachable" and srv_url in unreachable.value.message


async def test_a_refused_start_raises_with_the_servers_code(server: ServerProcess) -> None:
    with pytest.raises(VoxwireError) as err:
        async with connect(server.ws_url, voice="no-such-voice"):
            pass
    assert err.value.code == "unknown_voice" and "no-such-voice" in err.value.message


async def test_the_api_key_goes_as_a_bearer_header() -> None:
    srv = ServerProcess(api_keys="vw_client_test_key")
    try:
        srv.wait_ready()
        with pytest.raises(VoxwireError) as err:
            async with connect(srv.ws_url, api_key="vw_wrong"):
                pass
        assert err.value.code == "invalid_api_key" and "401" in err.value.message
        async with connect(srv.ws_url, api_key="vw_client_test_key", output=PCM16) as session:
            await session.text("Hello.")
            await session.end()
            rec = await collect(session)
        assert rec.frames and session.close_code == 1000
    finally:
        srv.stop()


# ------------------------------------------------------------------ resume, one node


async def test_without_resume_a_drop_raises(server: ServerProcess, proxy: Proxy) -> None:
    async with connect(proxy.url, output=PCM16, resume=False) as session:
        await session.text(LONG)
        await session.flush()

        def cut(n: int) -> None:
            if n == 10:
                proxy.cut()

        with pytest.raises(VoxwireError) as err:
            await collect(session, on_frame=cut)
        assert (err.value.code, err.value.close_code) == ("connection_lost", 1006)
        with pytest.raises(VoxwireError):  # the session is over
            await session.text("More.")
    assert proxy.accepted == 1


async def test_a_cut_connection_resumes_by_itself(server: ServerProcess, proxy: Proxy) -> None:
    async with connect(proxy.url, output=PCM16) as session:
        await session.text(LONG)
        await session.flush()
        await session.end()

        def cut(n: int) -> None:
            if n == 40:
                proxy.cut()  # mid-utterance, no close handshake

        rec = await collect(session, on_frame=cut)
        assert session.resumes >= 1 and proxy.accepted >= 2
    assert session.close_code == 1000
    assert_every_frame_once(rec)
    assert len(rec.of(Flushed)) == 1 and not rec.of(Error)
    assert_heard(rec, LONG)


async def test_text_the_server_did_not_get_is_sent_again(
    server: ServerProcess, proxy: Proxy
) -> None:
    """Text lost on the way (the link went dead while it was sent) and text sent while
    there is no connection at all both reach the resumed session, once."""
    async with connect(proxy.url, output=PCM16) as session:
        await session.text(FOX)
        await session.flush()
        rec = await collect(session, until=Flushed)
        proxy.swallow = True  # the link is dead one way: this text is lost
        await session.text(STATION[:20])
        await asyncio.sleep(0.2)
        proxy.refuse = True
        proxy.cut()
        await until(lambda: not session.connected)
        await session.text(STATION[20:])  # no connection now: held, then sent
        await session.flush()
        await session.end()
        await asyncio.sleep(0.3)
        proxy.swallow = proxy.refuse = False
        rec = await collect(session, rec=rec)
        assert session.resumes == 1
        assert session.ready.chars_accepted == len(FOX)  # the server had only this
    assert_every_frame_once(rec)
    assert len(rec.of(Flushed)) == 2 and not rec.of(Error)
    assert_heard(rec, FOX + STATION)


async def test_a_cut_while_the_last_flush_is_unanswered(
    server: ServerProcess, proxy: Proxy
) -> None:
    """The flush before the cut is sent again (the server may not have it); the user
    still gets one `flushed` per flush."""
    async with connect(proxy.url, output=PCM16) as session:
        await session.text(FOX + STATION)
        await session.flush()

        def cut(n: int) -> None:
            if n == 20:
                proxy.cut()

        rec = await collect(session, until=Flushed, on_frame=cut)
        await session.text(JOURNEY)
        await session.flush()
        rec = await collect(session, until=Flushed, rec=rec)
        await session.end()
        rec = await collect(session, rec=rec)
        assert session.resumes == 1
    assert_every_frame_once(rec)
    assert len(rec.of(Flushed)) == 2 and not rec.of(Error)
    assert rec.segments_text() == (FOX + STATION + JOURNEY).split()


# ------------------------------------------------------------------ two nodes


@pytest.fixture(scope="module")
def node_b(redis_server: Any) -> Iterator[ServerProcess]:
    b = ServerProcess(redis_url=redis_server.url, max_unsent_audio_s=1.0)
    try:
        b.wait_ready()
        yield b
    finally:
        b.stop()


@pytest.fixture
def node_a(redis_server: Any, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    extra = getattr(request, "param", {})
    a = ServerProcess(redis_url=redis_server.url, max_unsent_audio_s=1.0, **extra)
    try:
        a.wait_ready()
        yield a
    finally:
        a.stop()


async def test_a_killed_node_the_session_goes_on_at_the_next(
    node_a: ServerProcess, node_b: ServerProcess
) -> None:
    async with connect([node_a.ws_url, node_b.ws_url], output=PCM16) as session:
        await session.text(LONG)
        await session.end()

        def kill(n: int) -> None:
            if n == 30:
                node_a.proc.send_signal(signal.SIGKILL)

        rec = await collect(session, on_frame=kill)
        assert session.resumes == 1 and session.url == node_b.ws_url
    assert node_a.proc.wait(10) == -signal.SIGKILL
    assert session.close_code == 1000
    assert_every_frame_once(rec)
    assert not rec.of(Error)
    assert_heard(rec, LONG)


@pytest.mark.parametrize("node_a", [{"drain_grace_s": 0.3}], indirect=True)
async def test_a_draining_node_the_session_finishes_at_the_next(
    node_a: ServerProcess, node_b: ServerProcess
) -> None:
    async with connect([node_a.ws_url, node_b.ws_url], output=PCM16) as session:
        await session.text(LONG)
        await session.end()

        def drain(n: int) -> None:
            if n == 30:
                node_a.proc.send_signal(signal.SIGTERM)

        rec = await collect(session, on_frame=drain)
        assert session.resumes == 1 and session.url == node_b.ws_url
    assert node_a.proc.wait(30) == 0
    # A said 1012 with a resume hint; the client took it as a drop, not an error
    ends = node_a.log_events("session_end")
    assert ends and ends[-1]["close_code"] == 1012
    assert not rec.of(Error)
    assert_every_frame_once(rec)
    assert_heard(rec, LONG)


# ------------------------------------------------------------------ no server


def test_unknown_events_are_skipped() -> None:
    assert decode('{"type":"coming_soon","x":1}') is None
    assert isinstance(decode('{"type":"done","frames":3}'), Done)
    # a newer server's extra fields are fine
    assert isinstance(decode('{"type":"flushed","new_field":true}'), Flushed)


def test_the_ledger_resends_what_the_server_lacks() -> None:
    led = Ledger()
    led.text("Hello ")
    led.mark("flush")
    led.text("wörld 👋 ")  # code points, as the server counts
    led.text("again")
    led.mark("end")
    # the server has "Hello " and 5 code points of the second piece
    out = led.resend(6 + 5)
    assert [(o.kind, o.text) for o in out] == [("text", " 👋 "), ("text", "again"), ("end", "")]
    # the flush before journaled text is certainly there; once more, nothing new
    out = led.resend(len("Hello wörld 👋 again"))
    assert [o.kind for o in out] == ["end"]  # unanswered, at the server's end: unknown


def test_a_mark_sent_twice_gives_the_user_one_answer() -> None:
    led = Ledger()
    led.text("One.")
    led.mark("flush")
    assert [o.kind for o in led.resend(4)] == ["flush"]  # maybe journaled, maybe not
    assert led.answer("flush") is True
    assert led.answer("flush") is False  # the repeat, right after
    led.text("Two.")
    led.mark("flush")
    led.other()  # audio of "Two."
    assert led.answer("flush") is True
    assert led.answer("flush") is False  # nothing waits for it


def test_a_cancel_answers_the_flushes_before_it() -> None:
    led = Ledger()
    led.text("A long text.")
    led.mark("flush")
    led.mark("cancel")
    led.text("Next.")
    led.mark("flush")
    assert led.answer("cancel") is True  # the first flush's `flushed` never comes
    assert led.answer("flush") is True
    assert led.resend(len("A long text.Next.")) == []  # all answered and journaled


def test_dropped_text_is_not_sent_again() -> None:
    led = Ledger()
    led.text("x" * 10)
    led.text_dropped("... this text (10 characters) was dropped — send less at once")
    led.text("tail")
    # the server accepted only "tail"
    out = led.resend(4)
    assert out == []
