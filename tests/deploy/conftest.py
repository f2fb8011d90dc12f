"""Containers for the deploy tests: the CPU image, built once per test run with podman
(scripts/containers.sh), and helpers that run a container and always remove it.

Every test that uses the ``image`` fixture is marked ``containers``:
``pytest -m "not containers"`` leaves them out of a quick local run. CI runs them, and
where podman cannot work they fail (the ``image`` fixture raises); they never skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import ARTIFACTS, ROOT

HERE = Path(__file__).resolve().parent
SCRIPT = ROOT / "scripts" / "containers.sh"
CONTAINERS_CONF = ROOT / "deploy" / "local" / "containers.conf"
IMAGE = "localhost/voxwire:cpu"
PORT = 8765  # the image's VOXWIRE_PORT
# A cold image build (base and dependencies from the network) runs inside the first
# test's timeout, on top of the test itself.
BUILD_TIMEOUT_S = 1500
DEPLOY_TEST_TIMEOUT_S = 1800


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "containers: builds and runs container images (podman); tests/deploy"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # every test that needs the image (directly or through a fixture of its own, like the
    # compose stack's), without a marker line in each module
    for item in items:
        if "image" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.containers)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(DEPLOY_TEST_TIMEOUT_S))


def podman_env() -> dict[str, str]:
    """The environment for podman and podman-compose: runc and lowered ulimits."""
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``podman ARGS…`` with our containers.conf: the finished process (text output)."""
    return subprocess.run(
        ["podman", *args],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def containers_sh(*args: str) -> None:
    """``scripts/containers.sh ARGS…``; its output (the time of each step) goes to the
    test's captured output."""
    subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=ROOT,
        env=podman_env(),
        check=True,
        timeout=BUILD_TIMEOUT_S,
    )


@pytest.fixture(scope="session")
def image() -> str:
    """``localhost/voxwire:cpu``, built from deploy/Dockerfile on the local Debian base
    (podman's layer cache makes it quick when nothing changed)."""
    # podman-compose and any other podman the tests start read it from here
    os.environ["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
    containers_sh("setup")
    containers_sh("base")
    containers_sh("build", "cpu")
    return IMAGE


def health(http: str) -> tuple[int, Any]:
    """``GET {http}/health``: (status, JSON body); (0, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(http + "/health", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
    except (OSError, ValueError) as e:  # refused, reset, or not HTTP yet
        return 0, f"{type(e).__name__}: {e}"


def wait_health(http: str, timeout: float = 180, alive: Any = None) -> Any:
    """Poll ``{http}/health`` until it answers 200 (the server is ready): its body.
    ``alive``, if given, is called each round and may raise (a container that died)."""
    deadline = time.monotonic() + timeout
    last: tuple[int, Any] = (0, "not polled")
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        last = health(http)
        if last[0] == 200:
            return last[1]
        time.sleep(0.5)
    raise TimeoutError(f"{http}/health not ready within {timeout} s: last {last}")


@dataclass
class Container:
    """A running container, its port PORT published on 127.0.0.1:``port``."""

    name: str
    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    def inspect(self) -> dict[str, Any]:
        found: list[dict[str, Any]] = json.loads(podman("inspect", self.name).stdout)
        return found[0]

    def state(self) -> dict[str, Any]:
        """Status ("running", "exited"…), ExitCode, Health… (``podman inspect``'s State)."""
        state: dict[str, Any] = self.inspect()["State"]
        return state

    def exec(self, *cmd: str) -> str:
        return podman("exec", self.name, *cmd).stdout

    def logs(self) -> str:
        out = podman("logs", self.name, check=False)
        return out.stdout + out.stderr

    def check_running(self) -> None:
        state = self.state()
        if state["Status"] != "running":
            raise AssertionError(
                f"container {self.name} is {state['Status']} (exit code "
                f"{state['ExitCode']}); its log ends:\n{self.logs()[-3000:]}"
            )

    def wait_healthy(self, timeout: float = 180) -> Any:
        """/health's body once the server is ready; fails at once if the container exits."""
        return wait_health(self.http, timeout, alive=self.check_running)


@contextmanager
def run_container(
    image: str,
    env: Mapping[str, str] | None = None,
    *,
    name: str | None = None,
    port: int = PORT,
    args: Sequence[str] = (),
) -> Iterator[Container]:
    """``podman run -d`` of ``image`` with ``env`` (its settings: VOXWIRE_* variables) and
    ``port`` published on a free port of 127.0.0.1; ``args`` go before the image name.
    The container is removed afterwards, whatever happened; its log is kept in
    test-artifacts/containers/."""
    name = name or f"voxwire-test-{uuid.uuid4().hex[:10]}"
    cmd = ["run", "-d", "--name", name, "-p", f"127.0.0.1::{port}"]
    for key, value in (env or {}).items():
        cmd += ["-e", f"{key}={value}"]
    try:
        podman(*cmd, *args, image)
        # podman chose the host port: no window in which another process can take it
        published = podman("port", name, f"{port}/tcp").stdout.strip().splitlines()[0]
        yield Container(name, int(published.rsplit(":", 1)[1]))
    finally:
        logs = podman("logs", name, check=False)
        if logs.returncode == 0:
            (ARTIFACTS / "containers").mkdir(parents=True, exist_ok=True)
            (ARTIFACTS / "containers" / f"{name}.log").write_text(logs.stdout + logs.stderr)
        podman("rm", "--force", "--time", "0", name, check=False)
