"""Resume across nodes: two real servers share one real Redis; a client cut off from
node A (its connection dropped, or A killed with SIGKILL) resumes on node B and ends
with every frame exactly once, in order, and every word of its text."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import Received as Rec
from tests.support import (
    ServerProcess,
    connect,
    decode_opus,
    recv_until,
    send,
    transcribe,
    word_recall,
)

# Sentences pocketsphinx hears reliably (see tests/test_stream.py).
FOX = "The quick brown fox jumps over the lazy dog. "
STATION = "We will meet again tomorrow morning at the station. "
PART_A = FOX + STATION + "A journey of a thousand miles begins with a single step. "
PART_B = "Please call Stella and ask her to bring these things with her from the store. "
# A first chunk of ~7 s with no clause break: A is killed while it is still encoding it.
FIRST = (
    "Please call Stella and ask her to bring these things with her from the store and then "
    "we will meet again tomorrow morning. "
)
LONG = FIRST + PART_A + PART_B
OVERLAP = 10  # frames B re-sends that A had already sent: they must be byte-identical


@pytest.fixture(scope="module")
def nodes(redis_server: Any) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two nodes on one Redis (each test gets a fresh prefix through its own keys)."""
    common = {"redis_url": redis_server.url, "max_unsent_audio_s": 1.0}
    a, b = ServerProcess(**common), ServerProcess(**common)
    try:
        a.wait_ready()
        b.wait_ready()
        yield a, b
    finally:
        a.stop()
        b.stop()


async def _start(url: str, **start: Any) -> tuple[Any, Rec]:
    ws = await connect(url)
    await send(ws, type="start", **start)
    rec = await recv_until(ws, Rec(), stop="ready", timeout=20)
    return ws, rec


def _check_whole(first: Rec, second: Rec, from_frame: int, text: str) -> None:
    """Frames of both connections spliced at ``from_frame``: exactly once, in order."""
    ready = second.of("ready")[0]
    assert ready["resumed"] is True and ready["next_frame"] == from_frame
    assert second.close_code == 1000, (second.close_code, second.events[-3:])
    done = second.of("done")[-1]
    # the overlap B re-sent is byte-for-byte what A had sent under the same numbers
    resent = second.frames[: len(first.frames) - from_frame]
    assert resent == first.frames[from_frame:]
    frames = first.frames[:from_frame] + second.frames
    assert done["frames"] == len(frames)
    # every segment exactly once, in order, each announced right before its first frame
    segments: list[dict[str, Any]] = []
    for part, n in ((first, 0), (second, from_frame)):
        for kind, item in part.order:
            if kind == "frame":
                n += 1
            elif item["type"] == "segment":
                if part is first and n >= from_frame:
                    continue  # B announces these again with their frames
                assert item["first_frame"] == n
                segments.append(item)
    assert [s["index"] for s in segments] == list(range(len(segments)))
    assert " ".join(s["text"] for s in segments).split() == text.split()
    audio = decode_opus(frames)
    assert len(audio) == len(frames) * 960  # every packet decodes to a whole 20 ms frame
    heard = transcribe(audio, 48000)
    assert word_recall(text, heard) >= 0.6, heard


async def test_cut_connection_resumes_on_another_node(
    nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = nodes
    ws, first = await _start(a.ws_url)
    ready = first.of("ready")[0]
    assert ready["resume_token"] and ready["resumed"] is False
    await send(ws, type="text", text=PART_A)  # no flush: the last sentence stays buffered
    first = await recv_until(ws, first, frames=40)
    ws.transport.abort()  # the network drops: no close handshake
    await asyncio.sleep(0.2)

    from_frame = len(first.frames) - OVERLAP
    ws2, second = await _start(
        b.ws_url,
        resume={
            "session_id": ready["session_id"],
            "token": ready["resume_token"],
            "from_frame": from_frame,
        },
    )
    assert second.of("ready")[0]["chars_accepted"] == len(PART_A)
    await send(ws2, type="text", text=PART_B)  # the client goes on where it was
    await send(ws2, type="end")
    second = await recv_until(ws2, second, timeout=90)
    _check_whole(first, second, from_frame, PART_A + PART_B)
    # B took it over: A's log says its connection ended; B's that it resumed
    resumed = b.log_events("session_resumed")
    assert resumed and resumed[-1]["from_frame"] == from_frame


async def test_resume_after_sigkill_on_another_node(
    nodes: tuple[ServerProcess, ServerProcess], redis_server: Any
) -> None:
    _, b = nodes
    a = ServerProcess(redis_url=redis_server.url, max_unsent_audio_s=1.0)
    try:
        a.wait_ready()
        ws, first = await _start(a.ws_url)
        ready = first.of("ready")[0]
        await send(ws, type="text", text=LONG)
        await send(ws, type="end")
        first = await recv_until(ws, first, frames=30)
        a.proc.send_signal(signal.SIGKILL)  # mid-utterance: the client stopped reading
        a.proc.wait(10)
        first = await recv_until(ws, first, timeout=10)  # what was in flight, then the drop
        assert first.close_code == 1006
        assert not first.of("done")
    finally:
        a.stop()
    from_frame = len(first.frames) - OVERLAP
    ws2, second = await _start(
        b.ws_url,
        resume={
            "session_id": ready["session_id"],
            "token": ready["resume_token"],
            "from_frame": from_frame,
        },
    )
    second = await recv_until(ws2, second, timeout=90)
    _check_whole(first, second, from_frame, LONG)
    # B finished the chunk A was encoding from its journaled audio, then went on
    resumed = b.log_events("session_resumed")[-1]
    assert resumed["chunk_in_progress"] is True, resumed


async def test_drain_closes_with_a_resume_hint_and_another_node_finishes(
    nodes: tuple[ServerProcess, ServerProcess], redis_server: Any
) -> None:
    _, b = nodes
    a = ServerProcess(redis_url=redis_server.url, drain_grace_s=1.0)
    try:
        a.wait_ready()
        ws, first = await _start(a.ws_url)
        ready = first.of("ready")[0]
        await send(ws, type="text", text=FOX + "And then it ran")  # the rest waits for more
        await recv_until(ws, first, stop="segment", timeout=30)
        await asyncio.sleep(0.3)
        a.proc.send_signal(signal.SIGTERM)
        first = await recv_until(ws, first, timeout=20)
        assert a.proc.wait(30) == 0
    finally:
        a.stop()
    assert first.close_code == 1012
    err = first.of("error")[-1]
    assert err["code"] == "server_draining"
    hint = err["resume"]
    assert hint["session_id"] == ready["session_id"] and hint["from_frame"] == len(first.frames)
    ws2, second = await _start(
        b.ws_url,
        resume={
            "session_id": hint["session_id"],
            "token": ready["resume_token"],
            "from_frame": hint["from_frame"],
        },
    )
    await send(ws2, type="text", text=" into the station. " + STATION)
    await send(ws2, type="end")
    second = await recv_until(ws2, second, timeout=60)
    assert second.close_code == 1000
    spoken = [s["text"] for s in first.of("segment") + second.of("segment")]
    assert (
        " ".join(spoken).split() == (FOX + "And then it ran into the station. " + STATION).split()
    )


async def test_a_resume_after_whole_chunks_continues_at_the_right_character(
    nodes: tuple[ServerProcess, ServerProcess], redis_server: Any
) -> None:
    """The journal counts the characters pushed, whitespace between chunks included:
    a node that takes over after several whole chunks starts at the next one, not a
    few characters early (it once said the last chunk's full stop again)."""
    _, b = nodes
    a = ServerProcess(redis_url=redis_server.url, max_unsent_audio_s=1.0, drain_grace_s=0.3)
    # Enough after the third chunk that it cannot all be made and sent within the drain
    # grace (0.3 s): the session must still be mid-utterance when the node goes.
    text = FOX + "  " + PART_B + "\n" + STATION + PART_A + PART_B + PART_A
    try:
        a.wait_ready()
        ws, first = await _start(a.ws_url)
        ready = first.of("ready")[0]
        await send(ws, type="text", text=text)
        await send(ws, type="end")
        while len(first.of("segment")) < 3:  # two chunks whole, the third under way
            first = await recv_until(ws, first, stop="segment", timeout=30)
        a.proc.send_signal(signal.SIGTERM)
        first = await recv_until(ws, first, timeout=20)
    finally:
        a.stop()
    assert first.close_code == 1012
    ws2, second = await _start(
        b.ws_url,
        resume={
            "session_id": ready["session_id"],
            "token": ready["resume_token"],
            "from_frame": len(first.frames),
        },
    )
    second = await recv_until(ws2, second, timeout=60)
    assert second.close_code == 1000, second.events[-3:]
    by_index = {s["index"]: s["text"] for s in first.of("segment") + second.of("segment")}
    spoken = [by_index[i] for i in sorted(by_index)]
    assert " ".join(spoken).split() == text.split(), spoken


async def test_old_connection_is_closed_when_the_session_moves(server: ServerProcess) -> None:
    """Memory state (no Redis): resume works on the same node, and the connection that
    still holds the session is told it moved."""
    ws, first = await _start(server.ws_url)
    ready = first.of("ready")[0]
    await send(ws, type="text", text=FOX)
    await send(ws, type="flush")
    first = await recv_until(ws, first, stop="flushed", timeout=30)
    ws2, second = await _start(
        server.ws_url,
        resume={"session_id": ready["session_id"], "token": ready["resume_token"], "from_frame": 0},
    )
    first = await recv_until(ws, first, timeout=10)
    assert first.close_code == 4409
    assert first.of("error")[-1]["code"] == "session_moved"
    # the replay from frame 0 is exactly what the first connection got
    await send(ws2, type="end")
    second = await recv_until(ws2, second, timeout=30)
    assert second.close_code == 1000
    assert second.frames == first.frames
    assert second.of("done")[-1]["frames"] == len(first.frames)


async def test_ack_sets_the_default_resume_point(server: ServerProcess) -> None:
    ws, first = await _start(server.ws_url)
    ready = first.of("ready")[0]
    await send(ws, type="text", text=FOX)
    await send(ws, type="flush")
    first = await recv_until(ws, first, stop="flushed", timeout=30)
    await send(ws, type="ack", frame=len(first.frames))  # not sent yet: refused
    first = await recv_until(ws, first, stop="error", timeout=10)
    assert first.of("error")[-1]["code"] == "invalid_ack"
    await send(ws, type="ack", frame=19)
    await asyncio.sleep(0.3)
    await ws.close()
    ws2, second = await _start(
        server.ws_url,
        resume={"session_id": ready["session_id"], "token": ready["resume_token"]},
    )
    assert second.of("ready")[0]["next_frame"] == 20
    await send(ws2, type="end")
    second = await recv_until(ws2, second, timeout=30)
    assert second.frames == first.frames[20:]


async def test_cancelled_audio_is_not_replayed(server: ServerProcess) -> None:
    """Barge-in drops unsent frames from the journal too: numbering stays contiguous."""
    ws, first = await _start(server.ws_url)
    ready = first.of("ready")[0]
    await send(ws, type="text", text=PART_A + PART_B)
    await send(ws, type="flush")
    first = await recv_until(ws, first, frames=10)
    await send(ws, type="cancel")
    first = await recv_until(ws, first, stop="cancelled", timeout=30)
    await send(ws, type="text", text=STATION)
    await send(ws, type="flush")
    first = await recv_until(ws, first, stop="flushed", timeout=30)
    await ws.close()
    ws2, second = await _start(
        server.ws_url,
        resume={"session_id": ready["session_id"], "token": ready["resume_token"], "from_frame": 0},
    )
    await send(ws2, type="end")
    second = await recv_until(ws2, second, timeout=30)
    assert second.frames == first.frames
    assert second.of("done")[-1]["frames"] == len(first.frames)


@pytest.mark.parametrize(
    ("resume", "code"),
    [
        ({"token": "x.y"}, "invalid_resume_token"),
        ({"session_id": "0" * 32}, "invalid_resume_token"),  # a token of another session
        ({"from_frame": 10**6}, "invalid_resume"),
    ],
)
async def test_bad_resume_is_refused(
    server: ServerProcess, resume: dict[str, Any], code: str
) -> None:
    ws, first = await _start(server.ws_url)
    ready = first.of("ready")[0]
    await ws.close()
    req = {"session_id": ready["session_id"], "token": ready["resume_token"], **resume}
    ws2, rec = await _start(server.ws_url, resume=req)
    rec = await recv_until(ws2, rec, timeout=10)
    assert rec.close_code == 1008
    err = rec.of("error")[-1]
    assert err["code"] == code and err["fatal"]


async def test_resume_with_other_settings_is_refused(server: ServerProcess) -> None:
    ws = await connect(server.ws_url)
    await send(ws, type="start", voice="x", resume={"session_id": "s", "token": "t"})
    rec = await recv_until(ws, Rec(), stop="error", timeout=10)
    assert rec.of("error")[-1]["code"] == "invalid_field"
    await ws.close()


async def test_sessions_tokens_and_the_replay_window_expire() -> None:
    srv = ServerProcess(resume_window_s=1.0, resume_token_ttl_s=2.5, replay_window_s=0.2)
    try:
        srv.wait_ready()
        # the state outlives the connection by resume_window_s, then it is gone
        ws, first = await _start(srv.ws_url)
        ready = first.of("ready")[0]
        await ws.close()
        await asyncio.sleep(1.6)
        req = {"session_id": ready["session_id"], "token": ready["resume_token"]}
        ws2, rec = await _start(srv.ws_url, resume=req)
        rec = await recv_until(ws2, rec, timeout=10)
        assert (rec.close_code, rec.of("error")[-1]["code"]) == (1008, "session_expired")
        # a token dies after resume_token_ttl_s even while its session lives
        ws, first = await _start(srv.ws_url)
        ready = first.of("ready")[0]
        await send(ws, type="text", text=FOX)
        await send(ws, type="flush")
        first = await recv_until(ws, first, stop="flushed", timeout=30)
        # only the newest 0.2 s (10 frames) are kept for replay
        req = {"session_id": ready["session_id"], "token": ready["resume_token"]}
        ws2, rec = await _start(srv.ws_url, resume={**req, "from_frame": 0})
        rec = await recv_until(ws2, rec, timeout=10)
        err = rec.of("error")[-1]
        assert err["code"] == "replay_unavailable" and "replay_window_s=0.2" in err["message"]
        # a refused resume leaves the session where it was: its connection goes on
        await send(ws, type="text", text="Still here.")
        await send(ws, type="flush")
        first = await recv_until(ws, first, stop="flushed", timeout=30)
        assert not [e for e in first.of("error") if e["code"] == "session_moved"]
        await asyncio.sleep(2.6)
        ws3, rec = await _start(srv.ws_url, resume=req)
        rec = await recv_until(ws3, rec, timeout=10)
        assert rec.of("error")[-1]["code"] == "resume_token_expired"
        await ws.close()
    finally:
        srv.stop()


async def test_a_finished_session_is_forgotten(server: ServerProcess) -> None:
    ws, first = await _start(server.ws_url)
    ready = first.of("ready")[0]
    await send(ws, type="text", text="Done now.")
    await send(ws, type="end")
    first = await recv_until(ws, first, timeout=30)
    assert first.close_code == 1000 and first.of("done")
    req = {"session_id": ready["session_id"], "token": ready["resume_token"]}
    ws2, rec = await _start(server.ws_url, resume=req)
    rec = await recv_until(ws2, rec, timeout=10)
    assert rec.of("error")[-1]["code"] == "session_expired"


async def test_the_old_node_lets_go_when_the_session_resumes_elsewhere(
    nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    """The old connection is still open on A (a half-open link): B's takeover fences A,
    which learns it at its next heartbeat and closes that connection."""
    a, b = nodes
    ws, first = await _start(a.ws_url)
    ready = first.of("ready")[0]
    await send(ws, type="text", text=FOX)
    await send(ws, type="flush")
    first = await recv_until(ws, first, stop="flushed", timeout=30)
    resume = {
        "session_id": ready["session_id"],
        "token": ready["resume_token"],
        "from_frame": len(first.frames),
    }
    ws2, second = await _start(b.ws_url, resume=resume)
    first = await recv_until(ws, first, timeout=10)
    assert first.close_code == 4409
    assert first.of("error")[-1]["code"] == "session_moved"
    await send(ws2, type="text", text=STATION)
    await send(ws2, type="end")
    second = await recv_until(ws2, second, timeout=30)
    assert second.close_code == 1000
    assert second.of("done")[-1]["frames"] == len(first.frames) + len(second.frames)
    assert " ".join(s["text"] for s in second.of("segment")).split() == STATION.split()


async def test_a_resume_token_is_good_for_one_resume(server: ServerProcess) -> None:
    """A used token cannot take the session again; the token from the new `ready` can."""
    ws, first = await _start(server.ws_url)
    ready = first.of("ready")[0]
    await ws.close()
    req = {"session_id": ready["session_id"], "token": ready["resume_token"]}
    ws2, second = await _start(server.ws_url, resume=req)
    again = second.of("ready")[0]
    assert again["resumed"] and again["resume_token"] != ready["resume_token"]
    await ws2.close()
    ws3, third = await _start(server.ws_url, resume=req)  # the old token once more
    third = await recv_until(ws3, third, timeout=10)
    assert third.close_code == 1008 and not third.of("ready")
    err = third.of("error")[-1]
    assert err["code"] == "resume_token_used" and "used already" in err["message"]
    fresh = {"session_id": ready["session_id"], "token": again["resume_token"]}
    ws4, fourth = await _start(server.ws_url, resume=fresh)
    assert fourth.of("ready") and fourth.of("ready")[0]["resumed"]
    await ws4.close()


async def test_two_simultaneous_resumes_with_one_token_one_wins(
    nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    """Two connections resume with the same token at once (one per node): exactly one
    gets `ready` and the replayed frames; the other is refused before any frame."""
    a, b = nodes
    ws, first = await _start(a.ws_url)
    ready = first.of("ready")[0]
    await send(ws, type="text", text=FOX)
    await send(ws, type="flush")
    first = await recv_until(ws, first, stop="flushed", timeout=30)
    ws.transport.abort()
    req = {"session_id": ready["session_id"], "token": ready["resume_token"], "from_frame": 0}

    async def resume(url: str) -> Rec:
        ws = await connect(url)
        await send(ws, type="start", resume=req)
        rec = await recv_until(ws, Rec(), stop="ready", timeout=20)
        if rec.of("ready"):
            rec = await recv_until(ws, rec, frames=len(first.frames), timeout=20)
        await ws.close()
        return rec

    results = await asyncio.gather(resume(a.ws_url), resume(b.ws_url))
    winners = [r for r in results if r.of("ready")]
    losers = [r for r in results if not r.of("ready")]
    assert len(winners) == 1 and len(losers) == 1, [r.events for r in results]
    assert winners[0].frames == first.frames
    assert losers[0].frames == []
    assert losers[0].of("error")[-1]["code"] == "resume_token_used"
