"""The load generator: its player model on known arrival times, its LLM-like text,
and whole runs against a real server (replay engine) that must find real underruns."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from loadtests import loadgen, textgen
from loadtests.serverproc import VoxwireServer
from server.streaming.chunker import ChunkPolicy, SentenceChunker


def _turn(arrivals: list[float]) -> loadgen._Turn:
    t = loadgen._Turn(t_start=0.0, first_chunk="x")
    t.arrivals = arrivals
    return t


def test_lateness_is_arrival_minus_play_deadline() -> None:
    # 20 ms frames, 100 ms jitter buffer: frame k plays at first + 0.1 + 0.02 k.
    arrivals = [10.0, 10.0, 10.05, 10.2, 10.17, 10.3]
    late = loadgen._turn_lateness(_turn(arrivals), 0.02, 0.1)
    np.testing.assert_allclose(late, [-0.1, -0.12, -0.09, 0.04, -0.01, 0.1], atol=1e-9)
    # frames 3 and 5 are late, frame 4 in time: two separate stalls
    assert loadgen._episodes(late) == 2
    assert loadgen._episodes(np.array([0.01, 0.02, -0.5, 0.3])) == 2
    assert loadgen._episodes(np.array([-0.1, -0.2])) == 0


def test_summary_counts_underruns_turns_and_percentiles() -> None:
    cfg = loadgen.LoadConfig(url="ws://unused", frame_ms=20, jitter_buffer_ms=100)
    on_time = loadgen._Session(turns=[_turn([1.0 + 0.02 * k for k in range(50)])])
    on_time.turns[0].t_complete = 0.9
    stalled = loadgen._Session(turns=[_turn([2.0, 2.02, 2.5, 2.52, 2.54])])
    stalled.turns[0].t_complete = 1.95
    stalled.close_code = 1000
    r, raw = loadgen.summarize(
        cfg, 2, [on_time, stalled], 5.0, (0.0, 5.0), (0.5, 0.1), 0.1, 0.0, 300.0, [0.001]
    )
    assert (r.turns, r.frames, r.underrun_episodes, r.sessions_with_underruns) == (2, 55, 1, 1)
    assert r.underrun_frames == 3  # frames 2-4 of the stalled turn: 2.5 > 2.0 + 0.1 + 0.04
    assert r.lateness_ms["max"] == pytest.approx(360.0)
    assert sorted(raw.ttfa_s) == pytest.approx([0.05, 0.1])
    assert r.server_cpu_ms_per_audio_s == pytest.approx(500.0 / (55 * 0.02 / 5.0), rel=1e-3)
    assert not loadgen.meets_capacity(r)


def test_tokens_rebuild_the_text_and_find_the_first_chunk() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        text = textgen.paragraph(rng, int(rng.integers(1, 6)))
        pieces = textgen.tokens(text, rng)
        assert "".join(pieces) == text
        assert all(pieces) and max(len(p.strip()) for p in pieces) <= 8
        at, first = textgen.first_chunk_at(pieces)
        # the server's chunker, fed the same pieces, releases that chunk at that piece
        chunker = SentenceChunker(ChunkPolicy())
        released = [chunker.push(p) for p in pieces]
        got = next((i for i, c in enumerate(released) if c), -1)
        assert at == got
        assert first == (released[at][0] if at >= 0 else chunker.flush()[0])
        assert 6 <= len(first.split()) <= 10  # the opener sentence, whole


@pytest.fixture(scope="module")
def replay_server() -> Iterator[VoxwireServer]:
    srv = VoxwireServer(replay_engine=True)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def test_a_run_measures_real_sessions(replay_server: VoxwireServer) -> None:
    cfg = loadgen.LoadConfig(url=replay_server.ws_url, ramp_s=0.3, duration_s=1.0, max_turns=1)
    r, raw = asyncio.run(loadgen.run_step(cfg, 3, replay_server))
    assert r.sessions_failed == 0 and not r.errors and r.close_codes == {"1000": 3}
    assert r.turns == 3 and len(raw.ttfa_s) == 3
    # each turn's audio: at least its text's worth of speech (replay speaks ~15 chars/s)
    assert r.audio_s > 3 * 3.0
    assert all(0 < t < 5 for t in raw.ttfa_s)
    assert r.server_cpu > 0 and r.server_rss_mib is not None and r.server_rss_mib > 50
    # the server logged the same sessions and frames
    ends = replay_server.log_events("session_end")[-3:]
    assert sum(e["frames_sent"] for e in ends) == r.frames


def test_text_slower_than_speech_is_heard_as_underruns(replay_server: VoxwireServer) -> None:
    # Two tokens a second: the second sentence arrives long after the first one's audio
    # (about three seconds of it) has played out, so a real-time player stalls.
    cfg = loadgen.LoadConfig(
        url=replay_server.ws_url,
        ramp_s=0.0,
        duration_s=0.5,
        max_turns=1,
        tokens_per_s=2.0,
        sentences=(2, 2),
        turn_timeout_s=120,
    )
    r, _ = asyncio.run(loadgen.run_step(cfg, 1, replay_server))
    assert r.sessions_failed == 0 and r.turns == 1
    assert r.underrun_episodes >= 1 and r.lateness_ms["max"] is not None
    assert r.lateness_ms["max"] > 1000.0
    assert not loadgen.meets_capacity(r)
