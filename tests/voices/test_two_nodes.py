"""Two real servers sharing one real Redis: a voice uploaded on node A speaks on node
B over the WebSocket, and a delete on B is honoured on A. F5 runs the tiny
random-weight model (noise, not speech), so the audio is checked for its length."""

from __future__ import annotations

import time

import httpx
import numpy as np

from tests.support import Received, ServerProcess, connect, decode_opus, recv_until, send
from tests.voices.conftest import AUTH, TRANSCRIPT, Nodes

TEXT = "Good morning. The weather today is bright and mild, with a light wind."


def wait_log(srv: ServerProcess, event: str, voice: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(e.get("voice") == voice for e in srv.log_events(event)):
        assert time.monotonic() < deadline, f"no {event} for {voice} in the log"
        time.sleep(0.05)


async def speak(srv: ServerProcess, voice: str, text: str) -> Received:
    async with await connect(srv.ws_url, additional_headers=AUTH) as ws:
        await send(ws, type="start", engine="f5", voice=voice)
        rec = await recv_until(ws, Received(), stop="ready", timeout=30)
        if not rec.of("ready"):
            return rec
        await send(ws, type="text", text=text)
        await send(ws, type="end")
        return await recv_until(ws, rec, timeout=180)


async def test_uploaded_on_a_speaks_on_b_and_a_delete_on_b_reaches_a(
    nodes: Nodes, samples: dict[str, bytes]
) -> None:
    a, b = nodes.a, nodes.b
    async with httpx.AsyncClient(headers=AUTH, timeout=60) as http:
        r = await http.post(
            a.http + "/v1/voices",
            data={"name": "Traveller", "transcript": TRANSCRIPT, "language": "en"},
            files={"audio": ("rec.webm", samples["webm-opus"], "audio/webm")},
        )
        assert r.status_code == 201, r.text
        voice = r.json()
        vid = voice["id"]
        # B knows it at once: the metadata is in the shared store.
        assert (await http.get(f"{b.http}/v1/voices/{vid}")).json() == voice
        listed = (await http.get(b.http + "/v1/voices")).json()["voices"]
        assert vid in {v["id"] for v in listed}

        # B prepares it when it hears of it, then speaks with it.
        wait_log(b, "voice_loaded", vid)
        rec = await speak(b, vid, TEXT)
        assert rec.of("ready") and rec.of("ready")[0]["voice"] == vid, rec.events
        assert not rec.of("error"), rec.of("error")
        assert rec.of("done") and rec.close_code == 1000
        pcm = decode_opus(rec.frames)
        seconds = len(pcm) / 48000
        # F5 sizes its output by the reference's speaking rate: about this long.
        expected = voice["duration_s"] / len(TRANSCRIPT) * len(TEXT)
        assert 0.4 * expected < seconds < 2.5 * expected, (seconds, expected)
        assert float(np.sqrt(np.mean(pcm**2))) > 1e-3
        assert len(rec.frames) == rec.of("done")[0]["frames"]

        # Deleted on B: A hears of it, and refuses a new session with that voice.
        r = await http.delete(f"{b.http}/v1/voices/{vid}")
        assert r.status_code == 200
        wait_log(a, "voice_evicted", vid)
        rec = await speak(a, vid, TEXT)
        assert not rec.of("ready")
        err = rec.of("error")[0]
        assert err["code"] == "unknown_voice" and vid in err["message"]
        assert vid not in {
            v["id"] for v in (await http.get(a.http + "/v1/voices")).json()["voices"]
        }
        r = await http.get(f"{a.http}/v1/voices/{vid}")
        assert r.status_code == 404


async def test_an_f5_session_cut_on_a_resumes_on_b(nodes: Nodes) -> None:
    """F5 with the journal on: each engine piece is journaled (and sent) as its own
    chunk, and a session cut on A resumes on B with every frame exactly once."""
    a, b = nodes.a, nodes.b
    text = (
        "Good morning to everyone. The weather today is bright and mild, with a light "
        "wind from the west. We will meet again tomorrow morning at the station."
    )
    ws = await connect(a.ws_url, additional_headers=AUTH)
    await send(ws, type="start", engine="f5")
    first = await recv_until(ws, Received(), stop="ready", timeout=30)
    ready = first.of("ready")[0]
    await send(ws, type="text", text=text)
    await send(ws, type="end")
    # some audio of the first piece, then the cut
    first = await recv_until(ws, first, frames=10, timeout=120)
    ws.transport.abort()
    from_frame = len(first.frames) - 5
    resume = {"session_id": ready["session_id"], "token": ready["resume_token"],
              "from_frame": from_frame}  # fmt: skip
    async with await connect(b.ws_url, additional_headers=AUTH) as ws2:
        await send(ws2, type="start", resume=resume)
        second = await recv_until(ws2, Received(), timeout=180)
    assert second.close_code == 1000, second.events[-3:]
    assert second.of("ready")[0]["next_frame"] == from_frame
    assert second.frames[:5] == first.frames[from_frame:]  # the same bytes for the same numbers
    frames = first.frames[:from_frame] + second.frames
    assert second.of("done")[0]["frames"] == len(frames)
    segments = first.of("segment")[:1] + [
        s for s in second.of("segment") if s["first_frame"] >= from_frame
    ]
    assert [s["index"] for s in segments] == list(range(len(segments)))
    assert len(segments) >= 2  # the engine's pieces, one chunk each
    assert " ".join(s["text"] for s in segments).split() == text.split()
    assert len(decode_opus(frames)) == len(frames) * 960
