"""A raw WebSocket client's view of a dialect connection, for the dialect tests."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets
from websockets.asyncio.client import ClientConnection

from tests.support import Samples


@dataclass
class Got:
    """Everything one connection received, in order."""

    msgs: list[dict[str, Any]] = field(default_factory=list)
    binary: list[bytes] = field(default_factory=list)
    order: list[tuple[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    audio_at: list[float] = field(default_factory=list)  # arrival of each audio message

    def audio(
        self, key: str = "audio", ctx: str | None = None, ctx_key: str = "contextId"
    ) -> bytes:
        """The base64 audio of JSON messages (``key``), of one context if given."""
        return b"".join(
            base64.b64decode(m[key])
            for m in self.msgs
            if m.get(key) and (ctx is None or m.get(ctx_key) == ctx)
        )


async def collect(
    ws: ClientConnection,
    got: Got,
    until: Callable[[dict[str, Any]], bool] | None = None,
    timeout: float = 60.0,
    audio_key: str = "audio",
    binary: int | None = None,
) -> Got:
    """Read into ``got`` until a JSON message ``until`` accepts, ``got`` holds ``binary``
    binary messages, or the close."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"nothing matching within {timeout} s; got {got.msgs[-5:]}")
            msg = await asyncio.wait_for(ws.recv(), left)
            if isinstance(msg, bytes):
                got.binary.append(msg)
                got.audio_at.append(time.monotonic())
                got.order.append(("binary", len(msg)))
                if binary is not None and len(got.binary) >= binary:
                    return got
                continue
            m = json.loads(msg)
            got.msgs.append(m)
            got.order.append(("json", m))
            if m.get(audio_key):
                got.audio_at.append(time.monotonic())
            if until is not None and until(m):
                return got
    except websockets.ConnectionClosed as exc:
        got.close_code = exc.rcvd.code if exc.rcvd else 1006
        got.close_reason = exc.rcvd.reason if exc.rcvd else ""
    return got


async def send(ws: ClientConnection, **msg: Any) -> None:
    await ws.send(json.dumps(msg))


def ffmpeg_decode(
    data: bytes, fmt: str | None = None, rate: int | None = None
) -> tuple[Samples, int]:
    """``data`` decoded by ffmpeg (a decoder we did not write) to mono float at 16 kHz.
    ``fmt``/``rate`` describe raw input (s16le, s16be, f32le, mulaw, alaw); a container
    or MP3 is probed."""
    args = ["ffmpeg", "-v", "error"]
    if fmt is not None:
        args += ["-f", fmt, "-ar", str(rate), "-ac", "1"]
    args += ["-i", "pipe:0", "-f", "f32le", "-ac", "1", "-ar", "16000", "pipe:1"]
    out = subprocess.run(args, input=data, capture_output=True, check=True).stdout
    return np.frombuffer(out, dtype="<f4").copy(), 16000
