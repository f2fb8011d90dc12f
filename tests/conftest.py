from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import RedisProcess, ServerProcess


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
