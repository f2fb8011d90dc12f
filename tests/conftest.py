from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import ServerProcess


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProcess]:
    """One real voxwire server (uvicorn, Piper) shared by the tests that need defaults."""
    srv = ServerProcess(max_session_s=600)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()
