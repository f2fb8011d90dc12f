"""End to end on a real uvicorn server with the embedded Piper voice."""

from __future__ import annotations

import asyncio
import re
import time

import numpy as np
import pytest

from tests.dialects.wire import ffmpeg_decode
from tests.support import (
    Received,
    ServerProcess,
    connect,
    decode_mulaw_ffmpeg,
    decode_opus,
    decode_pcm,
    recv_until,
    rms,
    send,
    stream_tokens,
    transcribe,
    word_recall,
)

PARAGRAPH = (
    "The weather today is sunny with a light breeze from the west. "
    "Later this afternoon clouds will gather over the hills, and rain may begin after six. "
    "Tomorrow morning should be cold and clear."
)


def _nows(s: str) -> str:
    return re.sub(r"\s+", "", s)


def check_stream_shape(rec: Received, text: str) -> None:
    """Segments tile the text, each precedes its first frame, frames are counted."""
    segs = rec.of("segment")
    assert segs, rec.events
    assert _nows("".join(s["text"] for s in segs)) == _nows(text)
    assert [s["index"] for s in segs] == list(range(len(segs)))
    firsts = [s["first_frame"] for s in segs]
    assert firsts == sorted(firsts)
    frames_seen = 0
    for kind, value in rec.order:
        if kind == "frame":
            frames_seen += 1
        elif value["type"] == "segment":
            assert value["first_frame"] == frames_seen
    done = rec.of("done")
    assert len(done) == 1 and done[0]["frames"] == len(rec.frames)
    assert rec.close_code == 1000


def plausible_duration(seconds: float, text: str) -> None:
    words = len(text.split())
    # Conversational English runs at roughly 2-4 words a second.
    assert words / 4.5 < seconds < words / 1.5 + 2.0, (seconds, words)


async def _speak(url: str, text: str, output: dict[str, object], seed: int = 1) -> Received:
    rng = np.random.default_rng(seed)
    async with await connect(url) as ws:
        await send(ws, type="start", output=output)
        rec = await recv_until(ws, Received(), stop="ready")
        await stream_tokens(ws, text, rng)
        await send(ws, type="end")
        return await recv_until(ws, rec)


async def test_llm_token_stream_opus_is_intelligible_speech(server: ServerProcess) -> None:
    rec = await _speak(server.ws_url, PARAGRAPH, {"encoding": "opus", "sample_rate": 48000})
    ready = rec.of("ready")[0]
    assert ready["output"] == {
        "encoding": "opus",
        "sample_rate": 48000,
        "frame_ms": 20,
        "bitrate": 32000,
        "channels": 1,
        "pacing": None,  # as fast as frames are made
        "transport": None,  # binary frames on this WebSocket
    }
    assert ready["engine"] == "piper" and ready["voice"] == "en_US-joe-medium"
    assert ready["pre_skip"] == 312
    check_stream_shape(rec, PARAGRAPH)
    # the first chunk is cut early at a clause boundary, not after the whole paragraph
    assert len(rec.of("segment")) >= 3
    audio = decode_opus(rec.frames, 48000)
    assert len(audio) == len(rec.frames) * 960
    plausible_duration(len(audio) / 48000, PARAGRAPH)
    assert rms(audio) > 0.02
    heard = transcribe(audio, 48000)
    assert word_recall(PARAGRAPH, heard) >= 0.6, heard


@pytest.mark.parametrize(
    "output",
    [
        {"encoding": "pcm_s16le", "sample_rate": 8000},
        {"encoding": "mulaw", "sample_rate": 8000},
        {"encoding": "pcm_s16le", "sample_rate": 24000, "frame_ms": 40},
        {"encoding": "opus", "sample_rate": 16000, "frame_ms": 60, "bitrate": 16000},
    ],
    ids=lambda o: f"{o['encoding']}-{o['sample_rate']}",
)
async def test_llm_token_stream_other_formats(
    server: ServerProcess, output: dict[str, object]
) -> None:
    rate = int(str(output["sample_rate"]))
    frame_ms = int(str(output.get("frame_ms", 20)))
    rec = await _speak(server.ws_url, PARAGRAPH, output, seed=2)
    assert rec.of("ready")[0]["output"]["encoding"] == output["encoding"]
    check_stream_shape(rec, PARAGRAPH)
    if output["encoding"] == "pcm_s16le":
        assert {len(f) for f in rec.frames} == {rate * frame_ms // 1000 * 2}
        audio = decode_pcm(rec.frames)
    elif output["encoding"] == "mulaw":
        assert {len(f) for f in rec.frames} == {rate * frame_ms // 1000}
        audio = decode_mulaw_ffmpeg(rec.frames, rate)
    else:
        audio = decode_opus(rec.frames, rate)
        assert len(audio) == len(rec.frames) * rate * frame_ms // 1000
    plausible_duration(len(audio) / rate, PARAGRAPH)
    assert rms(audio) > 0.02
    heard = transcribe(audio, rate)
    # pocketsphinx's model is wideband: telephone-band (8 kHz) speech scores lower
    # (0.47-0.7 seen for this text); garbage or silence scores near 0.
    assert word_recall(PARAGRAPH, heard) >= (0.4 if rate == 8000 else 0.5), heard


async def test_flush_and_several_utterances_on_one_connection(server: ServerProcess) -> None:
    texts = [
        "Good morning and welcome back to the morning news",
        # (was "Your order has shipped and will arrive on Monday": pocketsphinx heard
        # under half its words in 3 of 20 runs, old server and new alike, since Piper's
        # noise differs per call; this one was heard whole in 20 of 20)
        "The meeting has been moved to three in the afternoon",
        "Thank you for calling and have a nice day",
    ]
    async with await connect(server.ws_url) as ws:
        await send(ws, type="start", output={"encoding": "pcm_s16le", "sample_rate": 16000})
        rec = await recv_until(ws, Received(), stop="ready")
        counts = []
        for t in texts:  # no sentence end: only flush makes them speak
            await send(ws, type="text", text=t)
            await send(ws, type="flush")
            before = len(rec.frames)
            await recv_until(ws, rec, stop="flushed")
            counts.append(len(rec.frames) - before)
        await send(ws, type="end")
        await recv_until(ws, rec)
    assert all(n > 20 for n in counts), counts
    segs = rec.of("segment")
    assert [s["text"] for s in segs] == texts
    assert rec.of("done")[0]["frames"] == len(rec.frames)
    assert rec.close_code == 1000
    # each utterance is audible on its own
    per_frame = 16000 * 20 // 1000
    audio = decode_pcm(rec.frames)
    start = 0
    for t, n in zip(texts, counts, strict=True):
        part = audio[start * per_frame : (start + n) * per_frame]
        start += n
        assert word_recall(t, transcribe(part, 16000)) >= 0.5, t


AFTER_CANCEL = "Sorry, please go ahead and finish your question."


async def test_cancel_mid_utterance_stops_audio_at_once(server: ServerProcess) -> None:
    long_text = " ".join([PARAGRAPH] * 4)
    async with await connect(server.ws_url) as ws:
        await send(ws, type="start", output={"encoding": "opus", "sample_rate": 24000})
        rec = await recv_until(ws, Received(), stop="ready")
        await send(ws, type="text", text=long_text)
        # wait until audio is flowing, then barge in
        while len(rec.frames) < 10:
            await recv_until(ws, rec, stop="segment", timeout=30)
        t_cancel = time.monotonic()
        await send(ws, type="cancel")
        await recv_until(ws, rec, stop="cancelled", timeout=10)
        cancel_latency = time.monotonic() - t_cancel
        frames_at_cancel = len(rec.frames)
        # nothing more of the cancelled text: the next thing is the new utterance
        await send(ws, type="text", text=AFTER_CANCEL)
        await send(ws, type="flush")
        mark = len(rec.order)
        await recv_until(ws, rec, stop="flushed", timeout=30)
        after = rec.order[mark:]
        assert after[0][0] == "event" and after[0][1]["type"] == "segment", after[:3]
        assert after[0][1]["text"] == AFTER_CANCEL
        assert after[0][1]["first_frame"] == frames_at_cancel
        new_frames = len(rec.frames) - frames_at_cancel
        await send(ws, type="end")
        await recv_until(ws, rec)
    assert rec.close_code == 1000
    # far less audio than the whole text: the rest was dropped
    total_s = len(rec.frames) * 0.02
    assert total_s < 20, total_s
    # the new utterance is the new text, not the old one
    tail = decode_opus(rec.frames[frames_at_cancel : frames_at_cancel + new_frames], 24000)
    assert word_recall(AFTER_CANCEL, transcribe(tail, 24000)) >= 0.5
    # Not a timing test: the engine runs a chunk for far longer than this bound,
    # so passing shows `cancelled` did not wait for it (figures: BENCHMARKS.md).
    assert cancel_latency < 1.0, cancel_latency


TEN_TEXTS = [
    "Please call Stella and ask her to bring the blue bags from the store.",
    "The train to the city leaves at noon from the second platform.",
    "My brother bought a new red bicycle for his long ride to work.",
    "We planted tomatoes and green beans in the garden last spring.",
    "The doctor said you should drink more water and sleep early.",
    "Open the window because the kitchen is getting very hot.",
    "Our meeting with the bank has moved to Thursday afternoon.",
    "The children played football in the park until it was dark.",
    "Send me the report by email before the end of the day.",
    "A cup of hot coffee in the morning makes everything better.",
]


async def test_ten_sessions_at_once_get_their_own_audio(server: ServerProcess) -> None:
    async def one(i: int) -> Received:
        return await _speak(
            server.ws_url,
            TEN_TEXTS[i],
            {"encoding": "pcm_s16le", "sample_rate": 16000},
            seed=10 + i,
        )

    results = await asyncio.gather(*(one(i) for i in range(10)))
    for i, rec in enumerate(results):
        check_stream_shape(rec, TEN_TEXTS[i])
        heard = transcribe(decode_pcm(rec.frames), 16000)
        own = word_recall(TEN_TEXTS[i], heard)
        # one short sentence each: the recognizer's score varies with Piper's rendition
        # (0.45 seen on good audio), so the sharp test is the comparison below
        assert own >= 0.4, (TEN_TEXTS[i], heard)
        # no audio crosses sessions: what it heard matches its own text best
        others = [word_recall(t, heard) for j, t in enumerate(TEN_TEXTS) if j != i]
        assert own > max(others) + 0.2, (TEN_TEXTS[i], heard, others)


async def test_cancel_after_end_still_stops_the_audio(server: ServerProcess) -> None:
    """Barge-in works until the last frame: after 'end' too. The audio stops, then
    'cancelled', 'done' (counting the frames sent) and a normal close."""
    long_text = " ".join([PARAGRAPH] * 4)
    async with await connect(server.ws_url) as ws:
        await send(ws, type="start", output={"encoding": "opus", "sample_rate": 24000})
        rec = await recv_until(ws, Received(), stop="ready")
        await send(ws, type="text", text=long_text)
        await send(ws, type="end")
        await recv_until(ws, rec, frames=10, timeout=30)
        await send(ws, type="cancel")
        await recv_until(ws, rec)
    kinds = [e["type"] for e in rec.events]
    assert kinds[-2:] == ["cancelled", "done"], kinds
    assert rec.close_code == 1000
    assert rec.events[-1]["frames"] == len(rec.frames)
    # no frame after 'cancelled', and far less than the whole text
    at = next(n for n, (k, e) in enumerate(rec.order) if k == "event" and e["type"] == "cancelled")
    assert all(k == "event" for k, _ in rec.order[at:])
    assert len(rec.frames) * 0.02 < 20


@pytest.mark.parametrize(
    ("encoding", "rate", "ffmpeg_fmt"), [("alaw", 8000, "alaw"), ("pcm_s16be", 16000, "s16be")]
)
async def test_telephony_encodings_decode_with_ffmpeg(
    server: ServerProcess, encoding: str, rate: int, ffmpeg_fmt: str
) -> None:
    text = "Our meeting with the bank has moved to Thursday afternoon."
    async with await connect(server.ws_url) as ws:
        await send(ws, type="start", output={"encoding": encoding, "sample_rate": rate})
        rec = await recv_until(ws, Received(), stop="ready")
        await send(ws, type="text", text=text)
        await send(ws, type="end")
        await recv_until(ws, rec)
    assert rec.close_code == 1000
    assert all(len(f) == rate // 50 * (2 if encoding == "pcm_s16be" else 1) for f in rec.frames)
    x, r = ffmpeg_decode(b"".join(rec.frames), ffmpeg_fmt, rate)
    assert word_recall(text, transcribe(x, r)) >= 0.5


async def test_word_timings_follow_each_segment(server: ServerProcess) -> None:
    text = "Our meeting with the bank has moved to Thursday afternoon. Open the window."
    async with await connect(server.ws_url) as ws:
        await send(
            ws, type="start", timings="word", output={"encoding": "pcm_s16le", "sample_rate": 16000}
        )
        rec = await recv_until(ws, Received(), stop="ready")
        await send(ws, type="text", text=text)
        await send(ws, type="end")
        await recv_until(ws, rec)
    segments = {e["index"]: e for e in rec.of("segment")}
    words = rec.of("words")
    assert words and {w["segment"] for w in words} == set(segments)
    spoken = []
    last = 0.0
    for ev in words:
        seg = segments[ev["segment"]]
        for w in ev["words"]:
            assert seg["text"][w["char"] : w["char"] + len(w["text"])] == w["text"]
            assert w["start"] >= last - 1e-6 and w["end"] >= w["start"]
            # a segment's words start no earlier than its first frame
            assert w["start"] >= seg["first_frame"] * 0.02 - 1e-6
            last = w["start"]
            spoken.append(w["text"])
    assert (
        " ".join(spoken)
        == "Our meeting with the bank has moved to Thursday afternoon Open the window"
    )
    assert last <= len(rec.frames) * 0.02


async def test_realtime_pacing_keeps_at_most_the_lead_ahead(server: ServerProcess) -> None:
    """output.pacing realtime: frames arrive at real time, never more than lead_ms
    ahead of a listener who started with the first frame; a cancel then stops a
    blind forwarder's buffer within the lead."""
    text = "Our meeting with the bank has moved to Thursday afternoon. " * 3
    lead = 0.2
    async with await connect(server.ws_url) as ws:
        await send(
            ws,
            type="start",
            output={"encoding": "pcm_s16le", "sample_rate": 8000, "pacing": {"lead_ms": 200}},
        )
        rec = await recv_until(ws, Received(), stop="ready")
        assert rec.events[0]["output"]["pacing"] == {"mode": "realtime", "lead_ms": 200}
        await send(ws, type="text", text=text)
        await send(ws, type="end")
        await recv_until(ws, rec)
    assert rec.close_code == 1000
    times = rec.frame_times
    audio_s = len(times) * 0.02
    assert audio_s > 6
    t0 = times[0]
    # what a blind forwarder would hold: audio received minus audio played since t0
    ahead = [(n + 1) * 0.02 - (t - t0) for n, t in enumerate(times)]
    assert max(ahead) <= lead + 0.02 + 0.15, max(ahead)  # 150 ms for scheduling noise
    # and it was not sent as fast as made: it took about the audio's length
    assert times[-1] - t0 > audio_s - lead - 1.0


async def test_stereo_opus_48k_for_discord_and_stereo_pcm(server: ServerProcess) -> None:
    """output.channels 2: the speech in both channels, decoded by libopus and ffmpeg."""
    import opuslib_next

    text = "Our meeting with the bank has moved to Thursday afternoon."
    for output in (
        {"encoding": "opus", "sample_rate": 48000, "frame_ms": 20, "channels": 2},
        {"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 2},
    ):
        async with await connect(server.ws_url) as ws:
            await send(ws, type="start", output=output)
            rec = await recv_until(ws, Received(), stop="ready")
            assert rec.events[0]["output"]["channels"] == 2
            await send(ws, type="text", text=text)
            await send(ws, type="end")
            await recv_until(ws, rec)
        assert rec.close_code == 1000
        rate = int(output["sample_rate"])  # type: ignore[call-overload]
        if output["encoding"] == "opus":
            dec = opuslib_next.Decoder(rate, 2)
            pcm = b"".join(dec.decode(f, rate * 120 // 1000) for f in rec.frames)
        else:
            assert all(len(f) == rate // 50 * 2 * 2 for f in rec.frames)
            pcm = b"".join(rec.frames)
        st = np.frombuffer(pcm, dtype="<i2").reshape(-1, 2).astype(np.float32) / 32768.0
        left, right = st[:, 0], st[:, 1]
        assert np.sqrt(np.mean(left**2)) > 0.01
        assert np.corrcoef(left, right)[0, 1] > 0.95  # the same speech in both
        assert word_recall(text, transcribe(left.copy(), rate)) >= 0.5


async def test_a_first_sentence_is_cut_short_while_the_engine_is_busy(
    server: ServerProcess,
) -> None:
    """With the engine's one thread busy with another session's paragraph, a first
    sentence whose end is known goes out cut after five words (chunk_hurry_words), so it
    waits for, and costs, less; all of it is still spoken."""
    pcm = {"encoding": "pcm_s16le", "sample_rate": 16000}
    sentence = "Our meeting with the bank has moved to Thursday afternoon."
    async with await connect(server.ws_url) as busy, await connect(server.ws_url) as ws:
        await send(busy, type="start", output=pcm)
        other = await recv_until(busy, Received(), stop="ready")
        await send(ws, type="start", output=pcm)
        rec = await recv_until(ws, Received(), stop="ready")
        await send(busy, type="text", text=PARAGRAPH + " " + PARAGRAPH)
        await send(busy, type="flush")
        await recv_until(busy, other, stop="segment")  # its chunks are on the engine
        await send(ws, type="text", text=sentence)
        await send(ws, type="end")
        rec = await recv_until(ws, rec)
    assert [s["text"] for s in rec.of("segment")] == [
        "Our meeting with the bank",
        "has moved to Thursday afternoon.",
    ]
    check_stream_shape(rec, sentence)
    heard = transcribe(decode_pcm(rec.frames), 16000)
    assert word_recall(sentence, heard) >= 0.6, heard
