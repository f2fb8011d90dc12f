"""``voxwire bench peers --smoke``: voxwire, wyoming-piper and Piper's HTTP server each
start, speak the same texts with the same voice, and the result file holds every row.
No timing is held to a goal; the checks break when a server, a client or the
bookkeeping does."""

from __future__ import annotations

from pathlib import Path

from tests.loadtests.test_bench_smoke import _as, _run


def _sane_capacity(cap: object, steps: tuple[int, ...]) -> None:
    from loadtests.bench_peers import TTFA_P99_MAX_MS, Capacity

    assert isinstance(cap, Capacity)
    ns = [s.sessions for s in cap.steps]
    assert ns and ns == sorted(ns) and set(ns) <= set(steps)
    for s in cap.steps:
        assert s.sessions_ok + s.sessions_failed <= s.sessions
        fast = s.ttfa_p99_ms is not None and s.ttfa_p99_ms <= TTFA_P99_MAX_MS
        assert s.passed == (s.sessions_ok == s.sessions and fast)
        if s.sessions_failed == 0:  # every session spoke at least one turn, with audio
            assert s.turns >= s.sessions and s.audio_s > 0
            assert s.ttfa_p50_ms is not None and 0 < s.ttfa_p50_ms < 60_000
            late = s.late_max_ms
            assert (late is not None and late > 0) == (s.sessions_with_underruns > 0)
    # the capacity is the last step that passed before the first that failed
    passed = [s.sessions for s in cap.steps if s.passed]
    first_fail = next((s.sessions for s in cap.steps if not s.passed), None)
    assert cap.capacity == max((n for n in passed if first_fail is None or n < first_fail),
                               default=0)  # fmt: skip


def test_peers_smoke(tmp_path: Path) -> None:
    from loadtests.bench_peers import SERVERS, SMOKE, PeersResult

    res = _as(_run("peers", tmp_path), PeersResult)
    assert [r.server for r in res.servers] == list(SERVERS)
    assert res.versions["wyoming-piper"] == "2.5.2"
    assert res.versions["piper-tts"] != "absent"
    assert res.paragraph_words == 54  # bench e2e's paragraph
    assert all(6 <= w <= 10 for w in res.first_sentence_words)
    lengths = []
    for r in res.servers:
        # every turn timed, or failed with an error the server reported (none lost)
        assert r.ttfa_turns + r.ttfa_failed_turns == SMOKE.ttfa_turns, r.server
        assert r.ttfa_turns >= 1, r.server
        p50, p90, top = r.ttfa_ms["p50"], r.ttfa_ms["p90"], r.ttfa_ms["max"]
        assert p50 is not None and p90 is not None and top is not None
        assert 0 < p50 <= p90 <= top < 60_000, r.server
        first, total = r.paragraph_first_ms, r.paragraph_total_ms
        assert first is not None and total is not None
        assert 0 < first <= total < 60_000, r.server
        lengths.append(r.paragraph_audio_s)
        _sane_capacity(r.capacity, SMOKE.steps)
        assert r.capacity.server == r.server
    # the same 54 words in the same voice: about 15 s of speech from each server
    assert all(8 < s < 30 for s in lengths), lengths
    assert max(lengths) / min(lengths) < 1.15, lengths
    _sane_capacity(res.voxwire_one_per_cpu, SMOKE.steps)
    md = (tmp_path / "peers.md").read_text()
    for label in ("voxwire", "wyoming-piper 2.5.2", "Piper HTTP server"):
        assert label in md
    assert "Most concurrent real-time sessions" in md and "one engine per CPU" in md
