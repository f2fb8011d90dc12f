"""RTP out end to end: a real server sends RTP to receivers we did not write (FFmpeg
from the SDP in ``ready``, GStreamer's jitter buffer and depayloaders) and to a
capturing listener whose packets are checked field by field."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.rtp.capture import (
    Packet,
    ahead_of_real_time,
    free_udp_port,
    listen,
    started,
    stop,
)
from tests.support import (
    Received,
    ServerProcess,
    connect,
    decode_opus,
    recv_until,
    send,
    transcribe,
    word_recall,
)

SENTENCE = "Our meeting with the bank has moved to Thursday afternoon."
LONG = "Open the window because the kitchen is getting very hot. " * 6


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProcess]:
    # no start rate here: test_new_streams_are_rate_limited_per_client has its own server
    s = ServerProcess(
        rtp_allowed_destinations="127.0.0.1/32", rtp_streams_per_minute=0, max_session_s=600
    )
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


def rtp_out(port: int, encoding: str = "opus", rate: int = 48000, **more: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"encoding": encoding, "sample_rate": rate, "frame_ms": 20}
    out.update(more)
    out["transport"] = {"type": "rtp", "host": "127.0.0.1", "port": port, **out.get("rtp", {})}
    out.pop("rtp", None)
    return out


async def speak(srv: ServerProcess, output: dict[str, Any], text: str) -> Received:
    async with await connect(srv.ws_url) as ws:
        await send(ws, type="start", output=output)
        rec = await recv_until(ws, Received(), stop="ready")
        await send(ws, type="text", text=text)
        await send(ws, type="end")
        return await recv_until(ws, rec)


async def settle(packets: list[Packet], frames: int, timeout: float = 5.0) -> None:
    """UDP has no close: wait until ``frames`` packets are in (loopback loses none)."""
    deadline = time.monotonic() + timeout
    while len(packets) < frames and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)


async def test_opus_packets_are_rfc_7587_paced_and_speak(srv: ServerProcess) -> None:
    async with listen() as (port, packets):
        rec = await speak(srv, rtp_out(port, rtp={"ssrc": 1234}), SENTENCE)
        ready = rec.of("ready")[0]
        frames = rec.of("done")[0]["frames"]
        await settle(packets, frames)
    assert not rec.frames, "audio goes over RTP, not the WebSocket"
    assert ready["output"]["pacing"] == {"mode": "realtime", "lead_ms": 40}
    assert len(packets) == frames > 50
    assert {(p.payload_type, p.ssrc) for p in packets} == {(111, 1234)}
    # one talkspurt: consecutive sequence numbers, 960 ticks (20 ms at 48 kHz) apart
    assert all((b.seq - a.seq) % 65536 == 1 for a, b in itertools.pairwise(packets))
    assert all((b.ts - a.ts) % 2**32 == 960 for a, b in itertools.pairwise(packets))
    assert packets[0].marker and not any(p.marker for p in packets[1:])
    # paced: the stream takes real time, and a receiver holds at most the lead + a frame
    span = packets[-1].at - packets[0].at
    assert span >= frames * 0.02 - 0.1, (span, frames)
    ahead = ahead_of_real_time(packets, 0.02)
    assert max(ahead) <= 0.04 + 0.02 + 0.06, max(ahead)  # 60 ms for a busy event loop
    pcm = decode_opus([p.payload for p in packets], 48000)
    assert word_recall(SENTENCE, transcribe(pcm, 48000)) >= 0.6
    sdp = ready["sdp"]
    assert f"m=audio {port} RTP/AVP 111" in sdp and "a=rtpmap:111 opus/48000/2" in sdp
    assert "c=IN IP4 127.0.0.1" in sdp and "a=ssrc:1234 " in sdp


async def test_utterances_continue_the_stream_with_a_marker_and_a_timestamp_gap(
    srv: ServerProcess,
) -> None:
    async with listen() as (port, packets), await connect(srv.ws_url) as ws:
        await send(ws, type="start", output=rtp_out(port, "mulaw", 8000))
        rec = await recv_until(ws, Received(), stop="ready")
        await send(ws, type="text", text="Good morning.")
        await send(ws, type="flush")
        await recv_until(ws, rec, stop="flushed")
        await asyncio.sleep(1.5)  # the first utterance plays out, then silence
        first = len(packets)
        await send(ws, type="text", text="Good evening.")
        await send(ws, type="end")
        await recv_until(ws, rec)
        await settle(packets, rec.of("done")[0]["frames"])
    assert {p.payload_type for p in packets} == {0}  # PCMU
    assert all(len(p.payload) == 160 for p in packets)
    assert all((b.seq - a.seq) % 65536 == 1 for a, b in itertools.pairwise(packets))
    assert [i for i, p in enumerate(packets) if p.marker] == [0, first]
    a, b = packets[first - 1], packets[first]
    silence = b.at - (packets[0].at + first * 0.02)  # arrival gap beyond the audio's length
    jump = (b.ts - a.ts) % 2**32 - 160
    assert abs(jump / 8000 - silence) < 0.06, (jump, silence)  # the clock kept running


@pytest.mark.parametrize("codec", ["opus", "pcmu"])
async def test_gstreamer_depayloads_and_decodes(
    srv: ServerProcess, tmp_path: Path, codec: str
) -> None:
    port = free_udp_port()
    out = tmp_path / "gst.raw"
    if codec == "opus":
        caps = "clock-rate=48000,encoding-name=OPUS,payload=111"
        chain = ["rtpopusdepay", "!", "opusdec"]
        output = rtp_out(port, "opus", 24000)
    else:
        caps = "clock-rate=8000,encoding-name=PCMU,payload=0"
        chain = ["rtppcmudepay", "!", "mulawdec"]
        output = rtp_out(port, "mulaw", 8000)
    cmd = [
        "gst-launch-1.0", "-q", "-e",
        "udpsrc", f"port={port}", "address=127.0.0.1", f"caps=application/x-rtp,media=audio,{caps}",
        "!", "rtpjitterbuffer", "latency=100", "!", *chain,
        "!", "audioconvert", "!", "audioresample",
        "!", "audio/x-raw,format=S16LE,rate=16000,channels=1",
        "!", "filesink", f"location={out}",
    ]  # fmt: skip
    proc = await started(cmd, port)
    try:
        await speak(srv, output, SENTENCE)
        await asyncio.sleep(0.5)  # the jitter buffer's latency, then the tail
    finally:
        pcm = await stop(proc, out)
    assert word_recall(SENTENCE, transcribe(pcm, 16000)) >= 0.6


@pytest.mark.parametrize("encoding", ["opus", "pcm_s16be"])
async def test_ffmpeg_receives_from_the_sdp_in_ready(
    srv: ServerProcess, tmp_path: Path, encoding: str
) -> None:
    port = free_udp_port()
    out = tmp_path / "ffmpeg.raw"
    rate = 48000 if encoding == "opus" else 16000
    async with await connect(srv.ws_url) as ws:
        await send(ws, type="start", output=rtp_out(port, encoding, rate))
        rec = await recv_until(ws, Received(), stop="ready")
        sdp = tmp_path / "stream.sdp"
        sdp.write_text(rec.of("ready")[0]["sdp"])
        cmd = [
            "ffmpeg", "-v", "error", "-protocol_whitelist", "file,udp,rtp",
            "-i", str(sdp), "-f", "s16le", "-ac", "1", "-ar", "16000", "-y", str(out),
        ]  # fmt: skip
        proc = await started(cmd, port)
        try:
            await send(ws, type="text", text=SENTENCE)
            await send(ws, type="end")
            await recv_until(ws, rec)
            await asyncio.sleep(0.5)
        finally:
            pcm = await stop(proc, out)
    assert word_recall(SENTENCE, transcribe(pcm, 16000)) >= 0.6


async def test_cancel_stops_the_packets_within_the_lead(srv: ServerProcess) -> None:
    lead = 0.2
    async with listen() as (port, packets), await connect(srv.ws_url) as ws:
        out = rtp_out(port, "mulaw", 8000, pacing={"mode": "realtime", "lead_ms": 200})
        await send(ws, type="start", output=out)
        rec = await recv_until(ws, Received(), stop="ready")
        await send(ws, type="text", text=LONG)
        await send(ws, type="flush")
        while len(packets) < 75:  # noqa: ASYNC110 (1.5 s of audio heard)
            await asyncio.sleep(0.01)
        t_cancel = time.monotonic()
        await send(ws, type="cancel")
        await recv_until(ws, rec, stop="cancelled")
        await asyncio.sleep(lead + 0.3)
        sent_before = len(packets)
        ahead = ahead_of_real_time(packets, 0.02)
    assert packets[-1].at - t_cancel <= lead + 0.05, packets[-1].at - t_cancel
    assert max(ahead) <= lead + 0.02 + 0.06, max(ahead)
    assert sent_before < 200  # far less than the text's ~20 s


async def test_a_destination_outside_the_allowlist_is_refused_and_gets_nothing(
    srv: ServerProcess,
) -> None:
    async with listen("127.0.0.2") as (port, packets), await connect(srv.ws_url) as ws:
        out = rtp_out(port)
        out["transport"]["host"] = "127.0.0.2"
        await send(ws, type="start", output=out)
        rec = await recv_until(ws, Received(), stop="error")
        err = rec.of("error")[0]
        assert err["code"] == "rtp_destination_refused", err
        assert "127.0.0.2" in err["message"] and "rtp_allowed_destinations" in err["message"]
        assert not rec.of("ready")
        # The refused start left the connection usable: send text anyway, and listen.
        await send(ws, type="text", text=SENTENCE)
        await asyncio.sleep(1.0)
    assert packets == []


async def test_rtp_is_off_unless_allowed(server: ServerProcess) -> None:
    async with listen() as (port, packets), await connect(server.ws_url) as ws:
        await send(ws, type="start", output=rtp_out(port))
        rec = await recv_until(ws, Received(), stop="error")
        await asyncio.sleep(0.3)
    err = rec.of("error")[0]
    assert err["code"] == "rtp_destination_refused" and "is empty" in err["message"], err
    assert packets == []


async def test_new_streams_are_rate_limited_per_client() -> None:
    s = ServerProcess(rtp_allowed_destinations="127.0.0.1", rtp_streams_per_minute=2)
    try:
        s.wait_ready()
        codes, msg = [], ""
        async with listen() as (port, _packets):
            for _ in range(3):
                async with await connect(s.ws_url) as ws:
                    await send(ws, type="start", output=rtp_out(port))
                    first = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    codes.append(first["type"] if first["type"] == "ready" else first["code"])
                    msg = first.get("message", msg)
    finally:
        s.stop()
    assert codes == ["ready", "ready", "rtp_rate_limited"], codes
    assert "rtp_streams_per_minute" in msg


async def test_pcm_s16le_and_asap_are_refused_with_rtp(srv: ServerProcess) -> None:
    async with await connect(srv.ws_url) as ws:
        await send(ws, type="start", output=rtp_out(40000, "pcm_s16le", 16000))
        rec = await recv_until(ws, Received(), stop="error")
        assert "pcm_s16be" in rec.of("error")[0]["message"]
        out = rtp_out(40000, pacing={"mode": "asap"})
        await send(ws, type="start", output=out)
        rec = await recv_until(ws, rec, stop="error")
        assert "realtime" in rec.of("error")[-1]["message"]


async def test_audio_the_pacer_holds_is_not_a_slow_consumer() -> None:
    """A paced stream's outbox fills up to ``max_unsent_audio_s`` and drains at real
    time: that wait is the pacer's, not the client's, and must not close it."""
    s = ServerProcess(
        rtp_allowed_destinations="127.0.0.1", max_unsent_audio_s=1, slow_consumer_timeout_s=1
    )
    try:
        s.wait_ready()
        async with listen() as (port, packets):
            rtp, ws = await asyncio.gather(
                speak(s, rtp_out(port, "mulaw", 8000), LONG[:230]),
                speak(s, {"encoding": "mulaw", "sample_rate": 8000, "pacing": {}}, LONG[:230]),
            )
    finally:
        s.stop()
    for rec in (rtp, ws):
        assert rec.close_code == 1000 and not rec.of("error"), rec.events[-3:]
        assert rec.of("done")[0]["frames"] > 4 / 0.02  # several slow_consumer_timeout_s
    assert packets


async def test_a_resumed_session_continues_the_same_rtp_stream(srv: ServerProcess) -> None:
    """Same SSRC, sequence numbers in line (the frame number's), timestamps moved on by
    the time the session was away; the SDP in the new ready is the same stream's."""
    async with listen() as (port, packets):
        ws = await connect(srv.ws_url)
        await send(ws, type="start", output=rtp_out(port, "mulaw", 8000))
        rec = await recv_until(ws, Received(), stop="ready")
        ready = rec.of("ready")[0]
        await send(ws, type="text", text=LONG)
        await send(ws, type="flush")
        while len(packets) < 50:  # noqa: ASYNC110 (one second heard)
            await asyncio.sleep(0.01)
        await ws.close()  # the bridge's connection drops
        await asyncio.sleep(0.5)
        before = len(packets)
        resume = {
            "session_id": ready["session_id"],
            "token": ready["resume_token"],
            "from_frame": before,
        }
        async with await connect(srv.ws_url) as ws2:
            await send(ws2, type="start", resume=resume)
            rec2 = await recv_until(ws2, Received(), stop="ready")
            while len(packets) < before + 50:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            await send(ws2, type="cancel")
            await recv_until(ws2, rec2, stop="cancelled")
    first, second = packets[:before], packets[before:]
    assert {q.ssrc for q in packets} == {first[0].ssrc}
    assert rec2.of("ready")[0]["sdp"].split("\r\n")[1] == ready["sdp"].split("\r\n")[1]
    # frame n is sequence number seq0 + n on either connection
    assert (second[0].seq - first[0].seq) % 65536 == before
    assert all((b.seq - a.seq) % 65536 == 1 for a, b in itertools.pairwise(second))
    assert second[0].marker
    gap_ticks = (second[0].ts - first[-1].ts) % 2**32
    assert gap_ticks >= 0.4 * 8000, gap_ticks  # the clock ran on while it was away


@pytest.mark.parametrize(
    ("host", "code"),
    [
        ("a" * 64 + ".example", "rtp_destination_refused"),  # an IDNA label too long
        ("a..b", "rtp_destination_refused"),
        ("no-such-host.invalid", "rtp_destination_refused"),
        ("127.0.0.1:5004", "rtp_destination_refused"),  # a port in the host: not an address
        ("x\u0000y", "invalid_field"),
        ("[::1]", "invalid_field"),
        ("", "out_of_range"),
    ],
)
async def test_hostile_hosts_get_a_clear_error(srv: ServerProcess, host: str, code: str) -> None:
    async with await connect(srv.ws_url) as ws:
        out = rtp_out(40000)
        out["transport"]["host"] = host
        await send(ws, type="start", output=out)
        rec = await recv_until(ws, Received(), stop="error", timeout=15)
        err = rec.of("error")[0]
        assert err["code"] == code and not err["fatal"], err
        await send(ws, type="start", output={"encoding": "pcm_s16le", "sample_rate": 16000})
        rec = await recv_until(ws, rec, stop="ready")  # the connection is still good
