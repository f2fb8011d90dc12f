"""An ASGI app (an example under test, or a peer it talks to) in a real uvicorn on a
free port, in a thread of the test process, so the test can read the app's state."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from loadtests.serverproc import free_port


@contextlib.contextmanager
def serving(app: Any, what: str = "the app") -> Iterator[str]:
    """``http://127.0.0.1:PORT`` while ``app`` runs there."""
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), f"{what} did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)
