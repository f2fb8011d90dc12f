"""voxwire on a Redis Cluster and on Sentinel, and what a failover costs a live session.

Real parts throughout: a three-primary cluster with a replica each and a primary, a
replica and three Sentinels (tests/redis_cluster.py), real servers, a real WebSocket
client. A primary is killed (SIGKILL) while a session speaks a long text. What the
client sees: every word still arrives (the session goes on), with a non-fatal
``resume_unavailable`` notice, since its journal could not be written and so it cannot
be resumed; new sessions are refused with ``state_unavailable`` (close 1013) until a
replica has taken over, and then start, and resume, as before.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from server.state.connect import redis_client
from server.state.voices import RedisVoiceStore, VoiceCache, VoiceEvent
from tests import test_resume as resume_tests
from tests.redis_cluster import ClusterProcess, RedisNode, SentinelProcess, wait_for
from tests.state.test_voices import meta, pcm
from tests.support import (
    Received,
    ServerProcess,
    connect,
    decode_opus,
    new_session,
    recv_until,
    send,
    transcribe,
    word_recall,
)

# The primary is killed after the first sentence: the rest is journaled after it.
TEXT = (
    "The quick brown fox jumps over the lazy dog. We will meet again tomorrow morning at "
    "the station. A journey of a thousand miles begins with a single step."
)
SHORT = "We will meet again tomorrow morning at the station. "
NODE = {"state_check_interval_s": 0.2, "max_unsent_audio_s": 1.0}
# Retries that outlast a failover (20, backing off to 500 ms: ~8 s) and a journal write
# allowed as long: the session waits the failover out instead of losing resume.
WAIT_IT_OUT = {"redis_retries": 20, "state_write_timeout_s": 10.0}


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterProcess]:
    c = ClusterProcess(primaries=3, replicas=1)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def cluster_nodes(cluster: ClusterProcess) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    a, b = (
        ServerProcess(redis_url=cluster.url, **NODE),
        ServerProcess(redis_url=cluster.url, **NODE, **WAIT_IT_OUT),
    )
    try:
        a.wait_ready()
        b.wait_ready()
        yield a, b
    finally:
        for n in (a, b):  # both at once: a node takes seconds to shut down
            n.proc.terminate()
        a.stop()
        b.stop()


async def _sessions_start_again(url: str, timeout: float = 60.0) -> list[Received]:
    """New sessions until one is ready: the refusals seen on the way, then the ready one."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        seen.append(await new_session(url, timeout=20))
        if seen[-1].of("ready"):
            return seen
        assert time.monotonic() < deadline, seen[-1].events
        await asyncio.sleep(0.2)


async def _logged_again(srv: ServerProcess, event: str, before: int) -> None:
    """Until ``srv`` has logged ``event`` more than ``before`` times (an earlier test's
    failover left lines of its own)."""
    deadline = time.monotonic() + 60
    while len(srv.log_events(event)) <= before:
        assert time.monotonic() < deadline, f"no new {event} in the log"
        await asyncio.sleep(0.05)


async def _primary_killed_mid_session(
    srv: ServerProcess, kill: Any, others: tuple[ServerProcess, ...] = ()
) -> dict[str, Any]:
    """Speak TEXT and ``kill(session_id)`` a primary after the first sentence; once the
    node has noticed, ask for new sessions until one starts again. What the client got,
    the answers to the new sessions, and when one started (seconds after the kill).
    Returns when every node (``srv`` and ``others``) has seen the store come back."""
    nodes = (srv, *others)
    down = [len(n.log_events("state_store_unavailable")) for n in nodes]
    up = [len(n.log_events("state_store_recovered")) for n in nodes]
    ws = await connect(srv.ws_url)
    await send(ws, type="start")
    rec = await recv_until(ws, Received(), stop="ready")
    ready = rec.of("ready")[0]
    await send(ws, type="text", text=TEXT)
    await send(ws, type="flush")
    rec = await recv_until(ws, rec, stop="segment")
    kill(ready["session_id"])
    t0 = time.monotonic()
    live = asyncio.create_task(recv_until(ws, rec, stop="flushed", timeout=120))
    # the store check pings every primary: it fails at once and until a replica is
    # promoted (a node timeout at least), so every node says so
    for n, before in zip(nodes, down, strict=True):
        await _logged_again(n, "state_store_unavailable", before)
    tries = await _sessions_start_again(srv.ws_url)
    started_after_s = time.monotonic() - t0
    rec = await live
    ws.transport.abort()  # the connection drops: the client will try to resume
    for n, before in zip(nodes, up, strict=True):
        await _logged_again(n, "state_store_recovered", before)
    return {"ready": ready, "rec": rec, "refusals": tries[:-1], "after_s": started_after_s}


def _check_it_went_on(rec: Received) -> None:
    """Every word of TEXT arrived, after a non-fatal notice that resume is off."""
    assert rec.close_code is None and rec.of("flushed"), rec.events[-3:]
    assert " ".join(s["text"] for s in rec.of("segment")).split() == TEXT.split()
    notice = [e for e in rec.of("error") if e["code"] == "resume_unavailable"]
    assert notice and notice[0]["fatal"] is False, rec.of("error")
    assert "can no longer be resumed" in notice[0]["message"]
    heard = transcribe(decode_opus(rec.frames), 48000)
    assert word_recall(TEXT, heard) >= 0.6, heard


async def _resume_refused(srv: ServerProcess, ready: dict[str, Any]) -> dict[str, Any]:
    ws = await connect(srv.ws_url)
    resume = {"session_id": ready["session_id"], "token": ready["resume_token"]}
    await send(ws, type="start", resume=resume)
    rec = await recv_until(ws, Received(), stop="ready", timeout=20)
    assert not rec.of("ready"), "a session whose journal broke was resumed"
    err: dict[str, Any] = rec.of("error")[-1]
    return err


def _check_refusals(refusals: list[Received]) -> None:
    for r in refusals:  # (none when the failover beat the first try)
        assert r.close_code == 1013, r.events
        assert r.of("error")[-1]["code"] == "state_unavailable"


async def _cut_and_resume(a: ServerProcess, b: ServerProcess) -> None:
    """A session after the failover: cut on ``a``, resumed on ``b``, every frame once."""
    ws, first = await resume_tests._start(a.ws_url)
    ready = first.of("ready")[0]
    await send(ws, type="text", text=SHORT)
    await send(ws, type="end")
    first = await recv_until(ws, first, frames=20)
    ws.transport.abort()
    from_frame = len(first.frames) - 5
    resume = {"session_id": ready["session_id"], "token": ready["resume_token"]}
    ws2, second = await resume_tests._start(b.ws_url, resume={**resume, "from_frame": from_frame})
    second = await recv_until(ws2, second, timeout=60)
    assert second.of("ready"), second.events
    resume_tests._check_whole(first, second, from_frame, SHORT)


class _VoiceNodes:
    """Two nodes' voice stores on one URL, B listening for notices (in this process)."""

    def __init__(self, url: str) -> None:
        cache: VoiceCache[Any] = VoiceCache(4)
        self.a = RedisVoiceStore(redis_client(url), "vf:", VoiceCache(4))
        self.b = RedisVoiceStore(redis_client(url), "vf:", cache, retry_s=0.2)
        self.heard: list[VoiceEvent] = []
        self.listener = asyncio.create_task(self.b.listen(self._on_event))

    async def _on_event(self, ev: VoiceEvent) -> None:
        self.heard.append(ev)

    async def a_delete_reaches_b(self) -> None:
        """A voice put and deleted on A is evicted from B's cache (B heard the notice)."""
        m = meta()
        await self.a.put(m, pcm())
        self.b.cache.put(m.id, "prepared on b")
        await self.a.delete(m.id)
        deadline = time.monotonic() + 30
        while m.id in self.b.cache:
            assert time.monotonic() < deadline, "B never heard of the delete"
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self.listener.cancel()
        await asyncio.gather(self.listener, return_exceptions=True)
        await self.a._r.aclose()
        await self.b._r.aclose()


# ---------------------------------------------------------------- cluster


async def test_voice_notices_survive_a_failover_of_their_node(cluster: ClusterProcess) -> None:
    """B's subscription is on the primary of the channel's slot: killed, B subscribes
    again on the replica that took over and hears deletes as before."""
    voices = _VoiceNodes(cluster.url)
    try:
        await voices.a_delete_reaches_b()
        victim = cluster.primary_for(voices.b.channel)
        victim.kill()
        wait_for("failover", lambda: cluster.serving(voices.b.channel) not in (None, victim))
        await voices.a_delete_reaches_b()
        assert voices.heard.count(VoiceEvent("resync")) >= 2  # it did subscribe again
    finally:
        await voices.close()
    victim.start()  # it rejoins as the new primary's replica: the next test has a spare
    cluster.wait_ok()


async def test_a_session_cut_on_one_node_resumes_on_another_through_a_cluster(
    cluster_nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    """tests/test_resume.py's two-node resume, on the cluster instead of one Redis."""
    await resume_tests.test_cut_connection_resumes_on_another_node(cluster_nodes)


def _replicas_caught_up(primary: RedisNode) -> bool:
    """Whether every replica has all the primary has written (replication offsets)."""
    info = primary.info("replication")
    offsets = [
        dict(kv.split("=", 1) for kv in v.split(","))["offset"]
        for k, v in info.items()
        if re.fullmatch(r"slave\d+", k)
    ]
    return bool(offsets) and all(o == info["master_repl_offset"] for o in offsets)


def _kill_primary_of_session(
    cluster: ClusterProcess, killed: list[RedisNode], caught_up: bool = False
) -> Any:
    def kill(session_id: str) -> None:  # the primary holding this session's keys
        primary = cluster.primary_for(f"voxwire:session:{{{session_id}}}")
        # Replication is asynchronous: "nothing is lost" holds only for writes the replica
        # had when the primary died (a loaded CI run killed it before the record got there).
        deadline = time.monotonic() + 10
        while caught_up and not _replicas_caught_up(primary):
            assert time.monotonic() < deadline, "the replica never caught up"
            time.sleep(0.01)
        killed.append(primary)
        primary.kill()

    return kill


async def test_a_cluster_primary_killed_mid_session(
    cluster: ClusterProcess, cluster_nodes: tuple[ServerProcess, ServerProcess]
) -> None:
    """Node a, default settings: the session goes on, resume is lost for it."""
    a, b = cluster_nodes
    killed: list[RedisNode] = []
    seen = await _primary_killed_mid_session(a, _kill_primary_of_session(cluster, killed), (b,))
    print(f"cluster: {len(seen['refusals'])} refusals, a session {seen['after_s']:.1f} s after")
    _check_it_went_on(seen["rec"])
    _check_refusals(seen["refusals"])
    err = await _resume_refused(b, seen["ready"])
    assert err["code"] in {"resume_unavailable", "session_expired"}, err
    assert a.log_events("journal_broken")
    await _cut_and_resume(a, b)
    killed[0].start()  # it rejoins as the new primary's replica: the next test has a spare
    cluster.wait_ok()


async def test_retries_that_outlast_the_failover_pause_the_session_and_keep_it_resumable(
    cluster: ClusterProcess, cluster_nodes: tuple[ServerProcess, ServerProcess]
) -> None:
    """Node b, WAIT_IT_OUT: its journal writes wait for the promoted replica, so the
    audio pauses for the failover; nothing is lost, and the session, cut after it,
    resumes on a with every frame once."""
    a, b = cluster_nodes
    kill = _kill_primary_of_session(cluster, [], caught_up=True)
    seen = await _primary_killed_mid_session(b, kill, (a,))
    first: Received = seen["rec"]
    assert not first.of("error"), first.of("error")
    gaps = [y - x for x, y in zip(first.frame_times, first.frame_times[1:], strict=False)]
    print(f"cluster, waiting it out: longest pause {max(gaps):.1f} s")
    from_frame = len(first.frames) - 5
    ready = seen["ready"]
    resume = {"session_id": ready["session_id"], "token": ready["resume_token"]}
    ws, second = await resume_tests._start(a.ws_url, resume={**resume, "from_frame": from_frame})
    await send(ws, type="end")
    second = await recv_until(ws, second, timeout=60)
    resume_tests._check_whole(first, second, from_frame, TEXT)


# ---------------------------------------------------------------- Sentinel


async def test_a_sentinel_primary_killed_mid_session() -> None:
    sentinel = SentinelProcess()
    srv = ServerProcess(redis_url=sentinel.url, **NODE)
    try:
        srv.wait_ready()
        voices = _VoiceNodes(sentinel.url)
        await voices.a_delete_reaches_b()
        old = sentinel.primary()
        seen = await _primary_killed_mid_session(srv, lambda _sid: old.kill())
        await voices.a_delete_reaches_b()  # B's subscription moved to the new primary
        await voices.close()
        n = len(seen["refusals"])
        print(f"sentinel: {n} refusals, a session {seen['after_s']:.1f} s after")
        assert sentinel.primary() is not old  # a replica took over
        _check_it_went_on(seen["rec"])
        _check_refusals(seen["refusals"])
        err = await _resume_refused(srv, seen["ready"])
        assert err["code"] in {"resume_unavailable", "session_expired"}, err
        await _cut_and_resume(srv, srv)
    finally:
        srv.stop()
        sentinel.stop()
