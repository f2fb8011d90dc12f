"""F5 end to end: a real server loads the tiny random-weight checkpoint through the same
settings and code a real checkpoint takes, and real WebSocket clients talk to it.
Audio is decoded with libopus (and the fallback's speech checked with pocketsphinx)."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection

from server.engines.f5.policy import HOP, SAMPLE_RATE, StreamPolicy, nbytes, split_pieces
from server.engines.f5.voices import load_voice
from tests.engines.f5.conftest import F5Files
from tests.support import (
    Received,
    ServerProcess,
    connect,
    decode_opus,
    decode_pcm,
    get_json,
    recv_until,
    rms,
    send,
    transcribe,
    word_recall,
)

P = StreamPolicy()
COOLDOWN_S = 6.0  # the f5_server fixture's f5_breaker_cooldown_s
STORY = (
    "The lighthouse keeper climbed the stairs every evening at dusk. "
    "From the top he could see the fishing boats coming home, one after another, "
    "their lamps swinging in the dark. "
    "He counted them, wrote the number in his book, and lit the great lamp."
)


async def _start(ws: ClientConnection, **start: Any) -> Received:
    await send(ws, type="start", **start)
    rec = await recv_until(ws, Received(), stop="ready")
    assert rec.of("ready"), rec.events
    return rec


async def speak(url: str, text: str, **start: Any) -> Received:
    async with await connect(url) as ws:
        rec = await _start(ws, **start)
        await send(ws, type="text", text=text)
        await send(ws, type="end")
        return await recv_until(ws, rec, timeout=180)


def metrics(srv: ServerProcess) -> dict[str, float]:
    with urllib.request.urlopen(srv.http + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def expected_chunk_s(files: F5Files, voice: str, text: str, speed: float, first: bool) -> float:
    """F5's duration rule for one chunk, over the pieces it is generated in."""
    v = load_voice(files.voices / f"{voice}.wav", "en")
    ref_frames = len(v.audio) // HOP + 1  # the reference mel's frames
    total = 0.0
    pieces = split_pieces(text, v.bytes_per_s, speed, first, v.seconds, P)
    for piece in pieces:
        rule = ref_frames / v.text_bytes * nbytes(piece) / speed * HOP / SAMPLE_RATE
        total += max(rule, P.min_gen_s) + P.tail_margin_s
    return total - P.crossfade_s * (len(pieces) - 1)


def segment_seconds(rec: Received, frame_s: float) -> list[float]:
    firsts = [s["first_frame"] for s in rec.of("segment")] + [len(rec.frames)]
    return [(b - a) * frame_s for a, b in itertools.pairwise(firsts)]


async def test_cloned_voice_streams_audio_whose_length_follows_the_duration_rule(
    f5_server: ServerProcess, f5_files: F5Files
) -> None:
    out = {"encoding": "opus", "sample_rate": 48000}
    normal, fast = await asyncio.gather(
        speak(f5_server.ws_url, STORY, engine="f5", voice="alice", output=out),
        speak(f5_server.ws_url, STORY, engine="f5", voice="alice", speed=1.5, output=out),
    )
    for rec, speed in ((normal, 1.0), (fast, 1.5)):
        assert rec.close_code == 1000 and not rec.of("error"), rec.events
        ready = rec.of("ready")[0]
        assert (ready["engine"], ready["voice"]) == ("f5", "alice")
        segs = rec.of("segment")
        assert re.sub(r"\s+", "", "".join(s["text"] for s in segs)) == re.sub(r"\s+", "", STORY)
        assert rec.of("done")[0]["frames"] == len(rec.frames)
        audio = decode_opus(rec.frames)  # libopus decodes every packet
        assert len(audio) == len(rec.frames) * 960 and rms(audio) > 0.01
        measured = segment_seconds(rec, 0.02)
        for k, (seg, got) in enumerate(zip(segs, measured, strict=True)):
            want = expected_chunk_s(f5_files, "alice", seg["text"], speed, first=k == 0)
            # 20 ms framing on both ends of a segment, plus the final frame's padding.
            assert abs(got - want) <= 0.06 + 0.02 * want, (k, seg["text"], got, want)
    ratio = len(normal.frames) / len(fast.frames)
    assert 1.3 < ratio < 1.6, ratio


async def test_batched_output_equals_unbatched_through_the_server(
    f5_server: ServerProcess,
) -> None:
    texts = [
        "One short line.",
        "A second session speaks a somewhat longer sentence than the first one does.",
        STORY,
        "Four sessions at once, and every one of them should sound the same as alone.",
    ]
    out = {"encoding": "pcm_s16le", "sample_rate": 24000}

    def count_batched(m: dict[str, float]) -> float:
        return m["voxwire_f5_batch_size_count"] - m['voxwire_f5_batch_size_bucket{le="1.0"}']

    solo = []
    for t in texts:
        solo.append(await speak(f5_server.ws_url, t, engine="f5", voice="alice", output=out))
    before = count_batched(metrics(f5_server))
    together = await asyncio.gather(
        *(speak(f5_server.ws_url, t, engine="f5", voice="alice", output=out) for t in texts)
    )
    batched = count_batched(metrics(f5_server)) - before
    assert batched > 0, "no forward pass held more than one session"
    for a, b in zip(solo, together, strict=True):
        x, y = decode_pcm(a.frames), decode_pcm(b.frames)
        assert len(x) == len(y) and rms(x) > 0.01
        # Within float rounding (padding is masked out of attention), then 16-bit PCM.
        assert float(np.max(np.abs(x - y))) <= 1e-3


async def test_cancel_removes_queued_work(f5_server: ServerProcess) -> None:
    long_text = " ".join([STORY] * 12)

    def pieces() -> float:
        m = metrics(f5_server)
        return sum(v for k, v in m.items() if k.startswith("voxwire_f5_pieces_total"))

    async with await connect(f5_server.ws_url) as ws:
        rec = await _start(ws, engine="f5", voice="alice", output={"encoding": "pcm_s16le"})
        start_pieces = pieces()
        await send(ws, type="text", text=long_text)
        while not rec.frames:
            msg = await asyncio.wait_for(ws.recv(), 60)
            if isinstance(msg, bytes):
                rec.frames.append(msg)
        await send(ws, type="cancel")
        await recv_until(ws, rec, stop="cancelled", timeout=30)
        at_cancel = pieces()
        # Nothing of the cancelled text follows `cancelled`, and the queue is empty.
        after = Received()
        with pytest.raises(TimeoutError):
            await recv_until(ws, after, stop="never", timeout=1.5)
        assert after.frames == [] and after.events == []
        m = metrics(f5_server)
        assert m['voxwire_engine_queue_depth{engine="f5"}'] == 0
        # At most the batch that was on the device finished; no queued piece ran.
        assert pieces() - at_cancel <= 1
        # The text is 36 sentences; only the first piece or two ran before the cancel.
        assert len(rec.of("segment")) <= 3
        assert pieces() - start_pieces <= 5
        # The session goes on.
        await send(ws, type="text", text="After the barge in, a fresh sentence.")
        await send(ws, type="end")
        rec2 = await recv_until(ws, Received(), timeout=120)
        assert rec2.frames and rec2.of("done") and rec2.close_code == 1000
        spoken = " ".join(s["text"] for s in rec2.of("segment"))
        assert spoken == "After the barge in, a fresh sentence."


async def test_failing_model_trips_the_breaker_and_sessions_continue_on_piper(
    f5_server: ServerProcess, f5_files: F5Files
) -> None:
    text = "Please call Stella and ask her to bring these things with her from the store."
    out = {"encoding": "opus", "sample_rate": 48000}
    notices = []
    recs = []
    t0 = time.monotonic()
    for _ in range(3):  # the German model's checkpoint is corrupt (loaded lazily)
        rec = await speak(f5_server.ws_url, text, engine="f5", voice="hans", output=out)
        assert rec.close_code == 1000 and rec.of("done"), rec.events
        (err,) = rec.of("error")
        assert err["code"] == "engine_fallback" and err["fatal"] is False
        assert "'piper'" in err["message"] and "en_US-joe-medium" in err["message"]
        notices.append(err["message"])
        recs.append(rec)
    assert time.monotonic() - t0 < COOLDOWN_S, "too slow to see the open breaker"
    for rec in recs:  # each session went on, on Piper: its words are there
        assert word_recall(text, transcribe(decode_opus(rec.frames), 48000)) >= 0.6
    assert "engine_error" in notices[0] and "engine_error" in notices[1]
    # Two failures opened the breaker: the third session failed over without trying.
    assert "engine_unavailable" in notices[2] and "not sending it work" in notices[2]
    assert metrics(f5_server)['voxwire_f5_breaker_open{model="de"}'] == 1
    # English F5 is unaffected by the German model's breaker.
    en = await speak(f5_server.ws_url, "Still fine in English.", engine="f5", voice="alice")
    assert not en.of("error") and en.frames
    # Repair the checkpoint; after the cooldown a probe brings the model back.
    shutil.copy(f5_files.checkpoint, f5_files.broken)
    await asyncio.sleep(COOLDOWN_S + 0.2)
    back = await speak(f5_server.ws_url, text, engine="f5", voice="hans", output=out)
    assert not back.of("error"), back.events
    assert back.frames and back.close_code == 1000
    assert metrics(f5_server)['voxwire_f5_breaker_open{model="de"}'] == 0


async def test_engines_and_voices_are_listed(f5_server: ServerProcess) -> None:
    status, body = get_json(f5_server.http + "/v1/engines")
    assert status == 200
    f5 = next(e for e in body["engines"] if e["name"] == "f5")
    assert f5["languages"] == ["de", "en"] and f5["sample_rate"] == 24000
    assert f5["streaming"] is True and f5["loaded"] is True
    status, body = get_json(f5_server.http + "/v1/voices")
    voices = {(v["engine"], v["id"]): v for v in body["voices"]}
    assert voices[("f5", "alice")]["language"] == "en"
    assert voices[("f5", "alice")]["builtin"] is False
    assert voices[("f5", "hans")]["language"] == "de"
    assert voices[("f5", "f5_basic_en")]["builtin"] is True


def _speech_as_16k(http: str, **body: Any) -> np.ndarray:
    """POST /v1/audio/speech for a WAV, decoded by ffmpeg to 16 kHz mono."""
    body = {"voice": "alloy", "response_format": "wav", **body}
    req = urllib.request.Request(
        http + "/v1/audio/speech", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.status == 200
        wav = r.read()
    args = ["-f", "s16le", "-ac", "1", "-ar", "16000", "-"]
    pcm = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", "pipe:0", *args], input=wav, capture_output=True, check=True
    ).stdout
    return np.frombuffer(pcm, "<i2").astype(np.float32) / np.float32(32768)


async def test_offline_without_the_checkpoint_the_server_runs_and_f5_fails_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An empty hub cache and the default (hub) checkpoint and vocoder: nothing to load.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    srv = ServerProcess(f5_enabled=True, f5_offline=True, f5_cpu_threads=1)
    try:
        srv.wait_ready(timeout=180)  # Piper serves; F5's failure does not keep it down
        failed = srv.log_events("f5_model_load_failed")
        assert failed and "f5_offline is set" in failed[0]["error"]
        assert "charactr/vocos-mel-24khz" in failed[0]["error"]
        rec = await speak(srv.ws_url, "Hello from the fallback voice.", engine="f5")
        (err,) = rec.of("error")
        assert err["code"] == "engine_fallback"
        assert "not in the local hub cache and f5_offline is set" in err["message"]
        assert rec.frames and rec.close_code == 1000
        # The HTTP route runs on the same conversation core: F5's failure there goes on,
        # on Piper, and the 200 response carries all of the text (it used to end short).
        text = "The speech route falls back to the other engine as well."
        audio = await asyncio.to_thread(_speech_as_16k, srv.http, model="f5", input=text)
        assert len(audio) / 16000 > 2.0
        assert word_recall(text, transcribe(audio, 16000)) >= 0.6
    finally:
        srv.stop()


async def test_per_stream_sampling_and_cross_fade(f5_server: ServerProcess) -> None:
    """engine_options reach F5's sampling: the server's seed (7) and steps (4) are the
    defaults; a stream's own seed, steps, guidance or cross-fade change its audio, the
    same options give the same audio, and streams with different ones spoken at once
    (never batched together) each sound as they do alone."""
    out = {"encoding": "pcm_s16le", "sample_rate": 24000}
    text = "A second session speaks a somewhat longer sentence than the first one does."

    async def say(options: dict[str, Any] | None, words: str = text) -> np.ndarray:
        start: dict[str, Any] = {"engine": "f5", "voice": "alice", "output": out}
        if options is not None:
            start["engine_options"] = options
        rec = await speak(f5_server.ws_url, words, **start)
        assert not rec.of("error"), rec.of("error")
        return decode_pcm(rec.frames)

    base = await say(None)
    assert np.array_equal(base, await say({"seed": 7, "nfe_steps": 4}))  # the defaults
    seeded = await say({"seed": 9})
    assert np.array_equal(seeded, await say({"seed": 9}))
    for other in (seeded, await say({"nfe_steps": 6}), await say({"cfg_strength": 0.0})):
        assert len(other) == len(base) and not np.allclose(other, base, atol=1e-3)
    solo = {k: await say({"nfe_steps": k}) for k in (5, 6)}
    both = await asyncio.gather(say({"nfe_steps": 5}), say({"nfe_steps": 6}))
    for k, got in zip((5, 6), both, strict=True):
        assert float(np.max(np.abs(got - solo[k]))) <= 1e-3
    # A longer fade overlaps the story's pieces more: the whole is shorter. (Over the
    # speech API: a session that journals for resume sends each piece as a chunk of
    # its own, joined by the chunk-edge fade instead.)
    short, long = (
        _speech_as_16k(f5_server.http, model="f5", voice="alice", input=STORY, engine_options=o)
        for o in ({"cross_fade_s": 0.0}, {"cross_fade_s": 0.2})
    )
    assert len(long) < len(short) - 0.1 * 16000
    _, body = get_json(f5_server.http + "/v1/engines")
    f5 = next(e for e in body["engines"] if e["name"] == "f5")
    assert f5["options"] == {"cfg_strength": 2.0, "nfe_steps": 4, "seed": 7, "cross_fade_s": 0.02}
    assert f5["clones"] is True
