"""The WebSocket framing voxwire does itself (a burst of binary messages in one write),
read back by the `websockets` library's frame parser, and used by a real server."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from server.ws_protocol import binary_frames
from tests.support import Received, ServerProcess, connect, logged, recv_until, send

SIZES = [0, 1, 125, 126, 127, 65535, 65536, 70000]


def _parse(wire: bytes, count: int) -> list[Frame]:
    """``count`` frames read from ``wire``, which must hold exactly those."""
    reader = StreamReader()
    reader.feed_data(wire)
    reader.feed_eof()
    frames = []
    for _ in range(count):
        parser = Frame.parse(reader.read_exact, mask=False, max_size=None)
        with pytest.raises(StopIteration) as done:
            next(parser)
        frames.append(done.value.value)
    assert reader.buffer == b""  # nothing left over
    return frames


@pytest.mark.parametrize("size", SIZES)
def test_each_length_encoding_is_a_whole_binary_message(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    (frame,) = _parse(binary_frames([payload]), 1)
    assert frame.opcode is Opcode.BINARY and frame.fin
    assert not (frame.rsv1 or frame.rsv2 or frame.rsv3)
    assert frame.data == payload


def test_a_burst_is_the_messages_in_order() -> None:
    payloads = [bytes([n % 256]) * n for n in SIZES]
    frames = _parse(binary_frames(payloads), len(payloads))
    assert [f.data for f in frames] == payloads
    assert binary_frames([]) == b""


async def test_a_server_sends_a_burst_of_frames_in_one_write(server: ServerProcess) -> None:
    """Frames queued together leave in one write: fewer writes than frames, and every
    frame still arrives as its own binary message."""
    async with await connect(server.ws_url) as ws:
        await send(ws, type="start", output={"encoding": "pcm_s16le", "sample_rate": 8000})
        rec = await recv_until(ws, Received(), stop="ready")
        sid = rec.events[0]["session_id"]
        await send(ws, type="text", text="One sentence here. And a second one after it.")
        await send(ws, type="end")
        rec = await recv_until(ws, rec)
    done = rec.of("done")[0]
    assert len(rec.frames) == done["frames"] > 10
    assert all(len(f) == 320 for f in rec.frames)  # 20 ms of 8 kHz s16le each
    (end,) = await logged(server, "session_end", lambda e: e.get("session_id") == sid)
    assert end["frames_sent"] == len(rec.frames)
    assert 0 < end["audio_writes"] < end["frames_sent"]
