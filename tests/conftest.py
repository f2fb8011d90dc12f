from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.support import RedisProcess, ServerProcess

# CI runs the same hypothesis cases every time (a failure there is reproducible with
# CI=true); a developer's runs explore new ones and keep failures in .hypothesis/.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProcess]:
    """One real voxwire server (uvicorn, Piper) shared by the tests that need defaults."""
    srv = ServerProcess(max_session_s=600)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    srv = RedisProcess()
    try:
        yield srv
    finally:
        srv.stop()
