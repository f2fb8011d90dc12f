"""The CPU image (deploy/Dockerfile) as a container runtime runs it: healthy, not root,
speaking audio a recognizer hears, and draining on SIGTERM before it exits cleanly.

One container serves the whole module (each start loads and warms Piper); the drain
test stops it, so it comes last."""

from __future__ import annotations

import asyncio
import signal
import urllib.request
from collections.abc import Iterator

import pytest

from tests.deploy.conftest import Container, health, podman, run_container
from tests.support import (
    Received,
    connect,
    decode_opus,
    recv_until,
    send,
    transcribe,
    word_recall,
)

# a sentence the recognizer hears reliably (tests/test_hostile_corpus.py)
SENTENCE = "Our meeting with the bank has moved to Thursday afternoon."
# the first sentence is spoken at once; the rest waits for more text or a flush
UNFINISHED = "This sentence was spoken when the container was told to stop. And then"
# long enough that the running utterance, not the grace period, decides when the
# session closes
DRAIN_GRACE_S = 60
NON_ROOT_UID = "10001"


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[Container]:
    env = {"VOXWIRE_DRAIN_GRACE_S": str(DRAIN_GRACE_S), "VOXWIRE_LOG_FORMAT": "json"}
    with run_container(image, env) as c:
        c.wait_healthy()
        yield c


def test_health_answers_and_nothing_runs_as_root(container: Container) -> None:
    assert health(container.http) == (200, {"status": "ok"})
    with urllib.request.urlopen(container.http + "/demo", timeout=10) as page:
        assert b"<html" in page.read().lower()  # static/ is not in the wheel: copied in
    assert container.exec("id", "-u").strip() == NON_ROOT_UID
    # every process of the container (the server, its engine processes) as the host sees it
    top = podman("top", container.name, "huser", "args").stdout.splitlines()[1:]
    assert any("voxwire serve" in line for line in top), top
    assert {line.split()[0] for line in top} == {NON_ROOT_UID}, top


def test_the_image_is_built_as_documented(container: Container) -> None:
    """No compilers in the final stage, the allocator setting, and OCI labels."""
    assert container.exec("sh", "-c", "command -v gcc cc c++ make || true") == ""
    config = container.inspect()["Config"]
    assert "MALLOC_ARENA_MAX=2" in config["Env"], config["Env"]
    assert config["Labels"]["org.opencontainers.image.title"] == "voxwire", config["Labels"]


def test_the_image_healthcheck_probes_health(container: Container) -> None:
    config = container.inspect()["Config"]
    assert any("/health" in part for part in config["Healthcheck"]["Test"]), config
    assert config["StopSignal"] == signal.SIGTERM, config  # what `podman stop` sends
    ran = podman("healthcheck", "run", container.name, check=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert container.state()["Health"]["Status"] == "healthy"


async def test_a_session_is_heard(container: Container) -> None:
    async with await connect(container.ws_url) as ws:
        await send(ws, type="start")  # Opus, the default output
        rec = await recv_until(ws, Received(), stop="ready")
        await send(ws, type="text", text=SENTENCE)
        await send(ws, type="end")
        rec = await recv_until(ws, rec, timeout=60)
    assert rec.close_code == 1000, rec.events[-3:]
    heard = transcribe(decode_opus(rec.frames), 48000)
    assert word_recall(SENTENCE, heard) >= 0.6, heard


async def test_sigterm_drains_then_the_container_exits(container: Container) -> None:
    async with await connect(container.ws_url) as ws:
        await send(ws, type="start")
        rec = await recv_until(ws, Received(), stop="ready")
        ready = rec.of("ready")[0]
        await send(ws, type="text", text=UNFINISHED)  # no flush yet: the utterance runs on
        rec = await recv_until(ws, rec, stop="segment", timeout=60)
        # SIGTERM, as `podman stop` sends it (the image's STOPSIGNAL); `podman stop` itself
        # would refuse the healthcheck below (no exec into a container being stopped)
        podman("kill", "--signal", "TERM", container.name)
        # it reached voxwire: readiness fails (the load balancer's cue) and the image's
        # own healthcheck with it, while the session is still open
        while health(container.http) != (503, {"status": "draining"}):
            container.check_running()
            await asyncio.sleep(0.1)
        probe = podman("healthcheck", "run", container.name, check=False)
        assert probe.returncode != 0 and "unhealthy" in probe.stdout, probe
        await send(ws, type="flush")
        rec = await recv_until(ws, rec, timeout=DRAIN_GRACE_S)
    # it exits by itself, inside the grace period (a hang fails here, not a slow exit)
    exited = podman("wait", container.name, timeout=DRAIN_GRACE_S)
    # the utterance finished, then the drain notice with where to resume, and 1012
    assert rec.close_code == 1012, rec.events[-3:]
    kinds = [e["type"] for e in rec.events]
    assert kinds.index("flushed") < kinds.index("error")
    err = rec.of("error")[-1]
    assert err["code"] == "server_draining" and err["fatal"], err

    assert err["resume"] == {"session_id": ready["session_id"], "from_frame": len(rec.frames)}
    spoken = " ".join(s["text"] for s in rec.of("segment"))
    assert spoken.split() == UNFINISHED.split()
    state = container.state()
    assert (exited.stdout.strip(), state["Status"], state["ExitCode"]) == ("0", "exited", 0)
    assert '"event": "drain_done"' in container.logs()
