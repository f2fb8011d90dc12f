"""The compose stack (deploy/compose.yaml, with deploy/compose.local.yaml's local images)
as a small site runs it, used only through its load balancer: a session cut mid-utterance
resumes on the other node, a node stopped mid-session (SIGTERM) drains and its session
finishes on the other, a Redis restart keeps API keys and voices, and the stack comes
down leaving nothing behind.

One stack serves the module (each node start loads and warms Piper). The tests run in
file order: the last one stops a node for good."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import http.client
import io
import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from redis.asyncio import Redis

from server.auth import digest, key_id
from server.protocol import Done, Error, OutputFormat, Segment
from server.state.voices import RedisVoiceStore, VoiceCache, VoiceMeta
from tests.deploy.conftest import podman, podman_env
from tests.support import (
    ARTIFACTS,
    ROOT,
    Received,
    connect,
    decode_opus,
    decode_pcm,
    recv_until,
    send,
    transcribe,
    word_recall,
)
from voxwire.client import Audio, Item, Session, VoxwireError
from voxwire.client import connect as session_connect

COMPOSE = [ROOT / "deploy" / "compose.yaml", ROOT / "deploy" / "compose.local.yaml"]
NODES = ("voxwire1", "voxwire2")  # compose services, and HAProxy's server names
# The stop test's drain: its session waits for more text, so the drain lasts all of it,
# long enough for HAProxy (a check every 2 s, down after 2 failures) to see /health
# answer 503 while the node still runs.
DRAIN_GRACE_S = 12
STOP_TIMEOUT_S = 90  # podman stop's wait before SIGKILL: well past the drain
START_TIMEOUT_S = 300  # both nodes load Piper at once on two cores
REDIS_PREFIX = "voxwire:"  # the nodes' default redis_prefix

# Sentences the recognizer hears reliably (tests/test_resume.py).
FOX = "The quick brown fox jumps over the lazy dog. "
STATION = "We will meet again tomorrow morning at the station. "
JOURNEY = "A journey of a thousand miles begins with a single step. "
STELLA = "Please call Stella and ask her to bring these things with her from the store. "
OVERLAP = 10  # frames the resume asks for again: the other node must send the same bytes
PCM16 = OutputFormat(encoding="pcm_s16le", sample_rate=16000)


# ------------------------------------------------------------------ the stack


@dataclass
class Stack:
    """One compose project: its name, files and variables, and where its published
    ports landed (podman picks free ones on 127.0.0.1)."""

    project: str
    files: list[Path]
    env: dict[str, str]
    lb_port: int = 0
    stats_port: int = 0
    redis_port: int = 0
    key: str = ""  # the API key added once the stack is up
    _names: dict[str, str] = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        files = [a for f in self.files for a in ("-f", str(f))]
        return subprocess.run(
            ["podman-compose", "-p", self.project, *files, *args],
            env={**podman_env(), **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def label(self) -> str:
        return f"label=io.podman.compose.project={self.project}"

    def container(self, service: str) -> str:
        """The container of ``service`` (found by its labels: names differ between
        podman-compose versions)."""
        if service not in self._names:
            out = podman(
                *("ps", "-a", "--filter", self.label()),
                *("--filter", f"label=com.docker.compose.service={service}"),
                *("--format", "{{.Names}}"),
            )
            names = out.stdout.split()
            assert len(names) == 1, (service, names)
            self._names[service] = names[0]
        return self._names[service]

    def published(self, service: str, port: int) -> int:
        out = podman("port", self.container(service), f"{port}/tcp").stdout
        return int(out.split()[0].rsplit(":", 1)[1])

    def logs(self, service: str) -> str:
        out = podman("logs", self.container(service), check=False)
        return out.stdout + out.stderr

    def lb_log(self) -> list[str]:
        """HAProxy's log lines (its stdout: requests, health checks, state changes)."""
        return podman("logs", self.container("haproxy")).stdout.splitlines()

    def events(
        self, service: str, events: set[str], session_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The node's JSON log lines of these ``events`` (of one session, if given)."""
        found = []
        for line in self.logs(service).splitlines():
            if not line.startswith("{"):
                continue  # the start-up banner, engine processes' console lines
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") in events and ev.get("session_id") == session_id:
                found.append(ev)
        return found

    def servers(self) -> dict[str, tuple[str, str]]:
        """HAProxy's view of each node: (status, last check) from its stats page."""
        url = f"http://127.0.0.1:{self.stats_port}/;csv"
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode().lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            row["svname"]: (row["status"], row["check_status"])
            for row in rows
            if row["pxname"] == "voxwire" and row["svname"] in NODES
        }

    def check_running(self) -> None:
        out = podman("ps", "-a", "--filter", self.label(), "--format", "json")
        for c in json.loads(out.stdout):
            if c["State"] != "running":
                name = c["Names"][0]
                log = podman("logs", name, check=False)
                raise AssertionError(
                    f"{name} is {c['State']}:\n{(log.stdout + log.stderr)[-3000:]}"
                )

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.lb_port}/v1/stream"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def wait_for(what: str, cond: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    """Poll ``cond`` until it returns something true: that value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except (OSError, http.client.HTTPException) as exc:  # not listening yet
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout} s (last: {last!r})")


def wait_both_up(stack: Stack, timeout: float = START_TIMEOUT_S) -> None:
    """Until HAProxy has both nodes up on a passed /health check (not just assumed up
    before its first check); fails at once if a container exited."""

    def up() -> bool:
        stack.check_running()
        return stack.servers() == {n: ("UP", "L7OK") for n in NODES}

    wait_for("both nodes up in HAProxy", up, timeout)


def http_get(stack: Stack, path: str, key: str | None) -> tuple[int, Any]:
    req = urllib.request.Request(stack.http + path)
    if key is not None:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    try:
        return status, json.loads(body or b"null")
    except ValueError:  # HAProxy's own error page (no node up)
        return status, body.decode(errors="replace")


def node_status(stack: Stack, node: str) -> int:
    """The status of an unauthenticated ``GET /v1/voices`` on ``node`` itself, asked from
    inside its container (set-up only: the tests go through the load balancer)."""
    probe = (
        "import urllib.request as u, urllib.error as e\n"
        "try: print(u.urlopen('http://127.0.0.1:8765/v1/voices', timeout=5).status)\n"
        "except e.HTTPError as x: print(x.code)"
    )
    return int(podman("exec", stack.container(node), "python3", "-c", probe).stdout)


def save_logs(stack: Stack) -> None:
    out = podman("ps", "-a", "--filter", stack.label(), "--format", "{{.Names}}", check=False)
    folder = ARTIFACTS / "compose" / stack.project
    folder.mkdir(parents=True, exist_ok=True)
    for name in out.stdout.split():
        log = podman("logs", name, check=False)
        (folder / f"{name}.log").write_text(log.stdout + log.stderr)


def leftovers(stack: Stack) -> dict[str, list[str]]:
    """What the project still has in podman: containers, pods, networks, volumes."""
    listed = {
        "containers": ("ps", "-a", "--format", "{{.Names}}"),
        "pods": ("pod", "ps", "--format", "{{.Name}}"),
        "networks": ("network", "ls", "--format", "{{.Name}}"),
        "volumes": ("volume", "ls", "--format", "{{.Name}}"),
    }
    found = {}
    for kind, cmd in listed.items():
        out = podman(*cmd, "--filter", stack.label(), check=False)
        found[kind] = out.stdout.split()
    return found


def bring_down(stack: Stack) -> None:
    """``podman-compose down -v``, then a check that nothing of the project is left.
    podman-compose 1.0 (Debian's) leaves the project's network behind: removed here
    too, by its label, like anything else left, so that a failed check cleans up."""
    save_logs(stack)
    down = stack.compose("down", "-v", timeout=300)
    left = leftovers(stack)
    for net in left["networks"]:
        podman("network", "rm", "--force", net, check=False)
    left["networks"] = []
    for name in left["containers"]:
        podman("rm", "--force", "--time", "0", name, check=False)
    for pod in left["pods"]:
        podman("pod", "rm", "--force", pod, check=False)
    for vol in left["volumes"]:
        podman("volume", "rm", "--force", vol, check=False)
    assert down.returncode == 0, down.stdout[-2000:] + down.stderr[-2000:]
    assert left == {"containers": [], "pods": [], "networks": [], "volumes": []}, left
    assert leftovers(stack) == {"containers": [], "pods": [], "networks": [], "volumes": []}


@pytest.fixture(scope="module")
def stack(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack, up with both nodes in HAProxy's rotation and an API key in Redis."""
    assert image == "localhost/voxwire:cpu"  # the name compose.local.yaml runs
    # Test-only additions: Redis published on loopback, so that the voices test can
    # write a voice the way an F5 node's upload does (the CPU image has no F5).
    extra = tmp_path_factory.mktemp("compose") / "compose.test.yaml"
    extra.write_text('services:\n  redis:\n    ports: ["127.0.0.1::6379"]\n')
    env = {
        "VOXWIRE_TOKEN_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
        # "127.0.0.1:" + ":8080": podman picks a free port on loopback
        "VOXWIRE_LB_PORT": "127.0.0.1:",
        "VOXWIRE_LB_STATS_PORT": "127.0.0.1:",
        "VOXWIRE_DRAIN_GRACE_S": str(DRAIN_GRACE_S),
    }
    s = Stack(f"vwtest{uuid.uuid4().hex[:8]}", [*COMPOSE, extra], env)
    try:
        up = s.compose("up", "-d")
        # podman-compose 1.0 goes on (exit 0) past a container that failed to start
        made = podman("ps", "-a", "--filter", s.label(), "--format", "{{.Names}}").stdout
        assert up.returncode == 0 and len(made.split()) == 4, up.stdout[-3000:] + up.stderr
        s.lb_port = s.published("haproxy", 8080)
        s.stats_port = s.published("haproxy", 8404)
        s.redis_port = s.published("redis", 6379)
        wait_both_up(s)
        # `voxwire keys new` in a node (VOXWIRE_REDIS_URL is in its environment): from
        # now on every request needs the key
        s.key = podman("exec", s.container("voxwire1"), "voxwire", "keys", "new").stdout.strip()
        assert s.key
        # A node re-reads whether keys exist every couple of seconds: until both refuse a
        # request without it, a session could start open on one node and be refused its
        # resume (another key) on the other.
        for node in NODES:

            def requires_key(node: str = node) -> bool:
                return node_status(s, node) == 401

            wait_for(f"{node} requires the key", requires_key, 30)
        yield s
    finally:
        bring_down(s)


# ------------------------------------------------------------------ which node


async def serving_node(stack: Stack, session_id: str) -> str:
    """The node where ``session_id`` started (not resumed)."""
    for _ in range(50):
        started = [
            n
            for n in NODES
            if any(not e["resumed"] for e in stack.events(n, {"session_start"}, session_id))
        ]
        if started:
            assert len(started) == 1, started
            return started[0]
        await asyncio.sleep(0.2)  # podman collects the log line a moment later
    raise TimeoutError(f"no node logged the start of {session_id}")


def other(node: str) -> str:
    return NODES[1 - NODES.index(node)]


async def logged(stack: Stack, node: str, event: str, session_id: str) -> list[dict[str, Any]]:
    """Wait (up to 30 s) until ``node`` has logged ``event`` for the session: a node logs
    ``session_end`` just after it closes, and podman collects logs a moment later."""
    for _ in range(150):
        found = await asyncio.to_thread(stack.events, node, {event}, session_id)
        if found:
            return found
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{node} logged no {event} for {session_id}")


def words(text: str) -> list[str]:
    return text.replace(".", " ").lower().split()


# ------------------------------------------------------------------ tests


async def test_a_cut_session_resumes_on_the_other_node(stack: Stack) -> None:
    """The client's TCP connection drops mid-utterance (no close frame); the resume,
    through the load balancer, lands on the other node, which replays the frames asked
    for again byte for byte from the shared journal and speaks the rest."""
    part_a, part_b = FOX + STATION + JOURNEY, STELLA
    ws = await connect(stack.ws_url, additional_headers=stack.auth)
    await send(ws, type="start")
    first = await recv_until(ws, Received(), stop="ready", timeout=30)
    ready = first.of("ready")[0]
    sid = ready["session_id"]
    await send(ws, type="text", text=part_a)  # no flush: the last sentence waits for more
    first = await recv_until(ws, first, frames=40, timeout=60)
    ws.transport.abort()  # the network drops: no close handshake

    a = await serving_node(stack, sid)
    # A saw its connection end: HAProxy has closed both sides of the cut one
    (end_a,) = await logged(stack, a, "session_end", sid)
    assert end_a["close_code"] != 1000, end_a

    from_frame = len(first.frames) - OVERLAP
    resume = {"session_id": sid, "token": ready["resume_token"], "from_frame": from_frame}
    ws2 = await connect(stack.ws_url, additional_headers=stack.auth)
    await send(ws2, type="start", resume=resume)
    second = await recv_until(ws2, Received(), stop="ready", timeout=30)
    again = second.of("ready")[0]
    assert again["resumed"] is True and again["next_frame"] == from_frame, again
    assert again["chars_accepted"] == len(part_a)
    await send(ws2, type="text", text=part_b)
    await send(ws2, type="end")
    second = await recv_until(ws2, second, timeout=120)
    assert second.close_code == 1000, second.events[-3:]

    # the other node took it over: its log has the resume from that frame
    b = other(a)
    (resumed,) = await logged(stack, b, "session_resumed", sid)
    assert resumed["from_frame"] == from_frame
    assert not stack.events(a, {"session_resumed"}, sid)

    # every frame exactly once: the overlap is the same bytes under the same numbers
    assert second.frames[:OVERLAP] == first.frames[from_frame:]
    frames = first.frames[:from_frame] + second.frames
    assert second.of("done")[-1]["frames"] == len(frames)
    segments = {s["index"]: s for s in first.of("segment") if s["first_frame"] < from_frame}
    segments |= {s["index"]: s for s in second.of("segment") if s["first_frame"] >= from_frame}
    assert sorted(segments) == list(range(len(segments)))
    spoken = " ".join(segments[i]["text"] for i in sorted(segments))
    assert spoken.split() == (part_a + part_b).split()
    audio = decode_opus(frames)
    assert len(audio) == len(frames) * 960  # every packet a whole 20 ms at 48 kHz
    heard = transcribe(audio, 48000)
    assert word_recall(part_a + part_b, heard) >= 0.6, heard


def test_keys_and_voices_outlive_a_redis_restart(stack: Stack) -> None:
    """An API key (added with `voxwire keys new`) and an uploaded voice are still there
    after Redis restarts, even killed: the append-only file, on the project's volume."""
    # The voice as an F5 node's upload stores it (the CPU image cannot clone voices):
    # voxwire's own store, owned by the key, with a second of reference audio.
    audio = (np.sin(np.arange(24000) / 24000 * 2 * np.pi * 220) * 8000).astype("<i2").tobytes()
    voice = VoiceMeta(
        id=f"v_{uuid.uuid4().hex[:16]}",
        name="Station announcer",
        engine="f5",
        language="en",
        transcript="We will meet again tomorrow morning at the station.",
        created=time.time(),
        duration_s=1.0,
        owner=key_id(digest(stack.key)),
    )

    async def store_io(put: bool) -> bytes | None:
        redis = Redis(host="127.0.0.1", port=stack.redis_port)
        try:
            store = RedisVoiceStore(redis, REDIS_PREFIX, VoiceCache(1))
            if put:
                await store.put(voice, audio)
            return await store.audio(voice.id)
        finally:
            await redis.aclose()

    assert asyncio.run(store_io(put=True)) == audio
    status, before = http_get(stack, f"/v1/voices/{voice.id}", stack.key)
    assert status == 200 and before["id"] == voice.id, before
    assert before["name"] == voice.name and before["transcript"] == voice.transcript
    assert http_get(stack, "/v1/voices", None)[0] == 401  # the key is required now

    redis = stack.container("redis")
    mounts = json.loads(podman("inspect", redis).stdout)[0]["Mounts"]
    volume = ("volume", f"{stack.project}_redis-data", "/data")
    assert volume in {(m["Type"], m.get("Name"), m["Destination"]) for m in mounts}, mounts
    # The harshest restart: SIGKILL, so Redis saves nothing on its way out (a plain
    # `podman restart` lets it write a snapshot, which would hide a missing AOF).
    podman("kill", redis)
    podman("wait", redis)
    podman("start", redis)

    # The nodes reconnect on their own; the voice's metadata is read from Redis on
    # every request, the key checked against Redis.
    def voice_back() -> Any:
        status, body = http_get(stack, f"/v1/voices/{voice.id}", stack.key)
        return body if status == 200 else None

    after = wait_for("the voice through the load balancer", voice_back, 60)
    assert after == before
    listed = http_get(stack, "/v1/voices", stack.key)[1]["voices"]
    assert voice.id in {v["id"] for v in listed}
    assert asyncio.run(store_io(put=False)) == audio  # the reference audio, byte for byte
    # still refused without the key: the key set is there, not lost (a node that saw
    # keys vanish would answer 503 access_rules_lost and leave HAProxy's rotation)
    status, body = http_get(stack, "/v1/voices", None)
    assert status == 401, body
    wait_both_up(stack, timeout=60)
    # A node that saw Redis go refuses new sessions until its next store check finds it
    # back (/health stays 200 meanwhile): wait for that before the next test's session.
    store_events = {"state_store_unavailable", "state_store_recovered"}
    for node in NODES:

        def store_back(node: str = node) -> bool:
            seen = stack.events(node, store_events)
            return not seen or seen[-1]["event"] == "state_store_recovered"

        wait_for(f"{node} finds Redis again", store_back, 30)


async def test_a_node_stopped_mid_session_drains_and_the_other_finishes(
    stack: Stack,
) -> None:
    """`podman stop` (SIGTERM) of the node serving a session mid-utterance: HAProxy takes
    it out of rotation on its 503 /health, the node finishes what it can and closes with
    1012 and a resume hint, and voxwire's client resumes through the load balancer on the
    other node; the joined audio is whole and heard."""
    head, tail = FOX + "And then it ran", " into the station. " + STATION
    text = head + tail
    async with contextlib.AsyncExitStack() as opened:
        session = await open_session(stack, opened)
        sid = session.session_id
        a = await serving_node(stack, sid)
        lb_seen = len(stack.lb_log())  # its lines from before the stop
        stopping: list[asyncio.subprocess.Process] = []

        async def stop_a(n: int) -> None:
            if n == 10:  # mid-utterance: audio is streaming
                stopping.append(
                    await asyncio.create_subprocess_exec(
                        *("podman", "stop", "-t", str(STOP_TIMEOUT_S), stack.container(a)),
                        env=podman_env(),
                        stdout=asyncio.subprocess.DEVNULL,
                    )
                )

        await session.text(head)  # no flush: "And then it ran" waits for more text
        reading = asyncio.create_task(collect(session, on_frame=stop_a))
        # A drains for the whole grace period (the session is not idle), then closes
        # it; the client resumes by itself. Only then does the rest of the text go.
        for _ in range(int((DRAIN_GRACE_S + 60) / 0.1)):
            if session.resumes or reading.done():
                break
            await asyncio.sleep(0.1)  # a plain counter to watch: no event to wait on
        assert session.resumes == 1, reading.done() and reading.exception()
        await session.text(tail)
        await session.end()
        items = await asyncio.wait_for(reading, 120)

    assert stopping and await stopping[0].wait() == 0
    state = json.loads(podman("inspect", stack.container(a)).stdout)[0]["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 0), state  # not SIGKILLed

    # A drained: 1012 after its grace; B took the session over from its journal
    (end_a,) = await logged(stack, a, "session_end", sid)
    assert end_a["close_code"] == 1012, end_a
    assert await logged(stack, other(a), "session_resumed", sid)
    # HAProxy took A out on its 503 /health while it drained (not on a refused
    # connection after it was gone), and left the draining session alone
    lb_log = stack.lb_log()[lb_seen:]
    down = [i for i, ln in enumerate(lb_log) if f"Server voxwire/{a} is DOWN" in ln]
    assert down, lb_log[-20:]
    assert "1 sessions active" in lb_log[down[0]], lb_log[down[0]]  # still draining
    failed = [ln for ln in lb_log[: down[0]] if f"server voxwire/{a} failed" in ln]
    assert any("code: 503" in ln for ln in failed), failed

    # every frame once, in order; every word once; the recognizer hears it
    frames = [i for i in items if isinstance(i, Audio)]
    assert [f.frame for f in frames] == list(range(len(frames)))
    done = [i for i in items if isinstance(i, Done)]
    assert done and done[0].frames == len(frames)
    assert not [i for i in items if isinstance(i, Error)]
    segments = [i for i in items if isinstance(i, Segment)]
    assert [s.index for s in segments] == list(range(len(segments)))
    assert words(" ".join(s.text for s in segments)) == words(text)
    audio = decode_pcm(f.data for f in frames)
    assert len(audio) == len(frames) * 320  # whole 20 ms frames at 16 kHz
    heard = transcribe(audio, 16000)
    assert word_recall(text, heard) >= 0.6, heard


async def open_session(stack: Stack, opened: contextlib.AsyncExitStack) -> Session:
    """A session through the load balancer, closed with ``opened``. Just after the Redis
    restart a node may still turn new sessions away (state_unavailable) until its next
    store check: then it is tried again."""
    for _ in range(30):
        try:
            return await opened.enter_async_context(
                session_connect(stack.ws_url, api_key=stack.key, output=PCM16)
            )
        except VoxwireError as exc:
            # the refusal's close (1013, try again later) can come before the client has
            # even sent its start: then it reports the close, not the server's code
            if exc.code != "state_unavailable" and exc.close_code != 1013:
                raise
        await asyncio.sleep(1)
    raise TimeoutError("no session through the load balancer")


async def collect(
    session: Session, on_frame: Callable[[int], Awaitable[None]] | None = None
) -> list[Item]:
    """Every item of ``session`` until ``done``."""
    items: list[Item] = []
    async for item in session:
        items.append(item)
        if isinstance(item, Audio) and on_frame is not None:
            await on_frame(item.frame)
    return items
