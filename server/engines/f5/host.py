"""The F5 generation host: a child process that holds the models, the vocoder and the
reference mels, and runs the batches the server's F5 worker sends it
(``engine_isolation=process``; the server's side is ``server/engines/f5/remote.py``).

Everything here may crash (a CUDA fault, an abort in a native library, the OOM
killer) or hang; the server only ever sees a closed pipe or a missed deadline.
Messages are msgpack over a ``multiprocessing`` pipe, as for the Piper processes
(``server/engines/ipc.py``); audio travels as raw float32.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from server.engines.f5.options import Sampling

if TYPE_CHECKING:
    from server.engines.f5.checkpoints import ModelSpec
    from server.engines.f5.device import F5Device
    from server.engines.f5.options import F5Options


class Voice(msgspec.Struct, tag="voice"):
    """A reference, sent once per host (cached by ``vid`` and ``digest``, its content)."""

    vid: str
    digest: str
    audio: bytes  # mono float32 at 24 kHz, prepared (voices.prepare_reference)
    text: str
    gain: float


class Forget(msgspec.Struct, tag="forget"):
    vid: str
    digest: str


class GenRow(msgspec.Struct, array_like=True):
    vid: str
    digest: str
    text: str
    speed: float


class Generate(msgspec.Struct, tag="gen"):
    id: int
    key: str
    rows: list[GenRow]
    sampling: Sampling | None = None  # a stream's engine_options; None: the settings'


class DeviceStats(msgspec.Struct, array_like=True):
    """What the host holds, for the server's metrics (-1: not on CUDA)."""

    models: int
    gpu_allocated: int
    gpu_reserved: int


class Hello(msgspec.Struct, tag="hello"):
    pid: int
    device: str
    device_name: str
    load_error: str  # the default model or the vocoder did not load (the host still serves)
    stats: DeviceStats | None = None


class Loading(msgspec.Struct, tag="loading"):
    """Request ``id`` waits for a model to load: the load's deadline applies."""

    id: int


class Started(msgspec.Struct, tag="started"):
    """The model of request ``id`` is loaded; the batch's own deadline runs from now."""

    id: int


class Result(msgspec.Struct, tag="result"):
    id: int
    audio: list[bytes]
    stats: DeviceStats | None = None


class Failed(msgspec.Struct, tag="failed"):
    """The batch raised (``id`` > 0), or the host could not start (``id`` == 0)."""

    id: int
    kind: str  # the exception's type name (an out-of-memory is told by it)
    message: str


ToHost = Voice | Forget | Generate
FromHost = Hello | Loading | Started | Result | Failed

encode = msgspec.msgpack.Encoder().encode
decode_to_host = msgspec.msgpack.Decoder(ToHost).decode
decode_from_host = msgspec.msgpack.Decoder(FromHost).decode


@dataclass(slots=True)
class _Ref:
    voice: Any  # F5Voice
    mel: Any = None  # computed on first use, so a bad reference fails its batch, not the host


def main(conn: Connection, opts: F5Options, specs: list[ModelSpec], default_key: str) -> None:
    # Ctrl-C reaches the whole process group; the server decides when the host stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from server import logs

    logs.configure(opts.host.log_level, opts.host.log_format)
    try:
        from server.engines.f5.device import F5Device

        dev = F5Device(opts, specs)
        dev.setup()
    except Exception as exc:
        conn.send_bytes(encode(Failed(0, type(exc).__name__, f"{type(exc).__name__}: {exc}")))
        return
    load_error = ""
    try:
        dev.preload(default_key)
    except Exception as exc:
        # As in the server's process: a missing checkpoint must not stop the host; each
        # batch retries the load and fails, and the worker's breaker sends work elsewhere.
        load_error = f"{type(exc).__name__}: {exc}"
    stats = DeviceStats(*dev.stats())
    conn.send_bytes(encode(Hello(os.getpid(), dev.device, dev.device_name, load_error, stats)))
    refs: dict[tuple[str, str], _Ref] = {}
    try:
        while True:
            msg = decode_to_host(conn.recv_bytes())
            if isinstance(msg, Voice):
                refs[(msg.vid, msg.digest)] = _Ref(_voice(msg))
            elif isinstance(msg, Forget):
                refs.pop((msg.vid, msg.digest), None)
            else:
                conn.send_bytes(encode(_generate(conn, dev, refs, msg)))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the server went away


def _voice(msg: Voice) -> Any:
    from server.engines.f5.voices import F5Voice

    audio = np.frombuffer(msg.audio, dtype="<f4").copy()  # torch wants a writable array
    return F5Voice(id=msg.vid, language="", text=msg.text, audio=audio, gain=msg.gain)


def _generate(
    conn: Connection, dev: F5Device, refs: dict[tuple[str, str], _Ref], msg: Generate
) -> Result | Failed:
    from server.engines.f5.device import Row

    try:
        if not dev.loaded(msg.key):
            conn.send_bytes(encode(Loading(msg.id)))
            dev.preload(msg.key)
            conn.send_bytes(encode(Started(msg.id)))
        rows = []
        for r in msg.rows:
            ref = refs.get((r.vid, r.digest))
            if ref is None:  # the server sends every voice before its first batch
                raise LookupError(f"voice {r.vid!r} was not sent to the generation host")
            if ref.mel is None:
                ref.mel = dev.mel(ref.voice.audio)
            rows.append(Row(ref.voice, ref.mel, r.text, r.speed))
        out = dev.generate(msg.key, rows, msg.sampling)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        raise
    except Exception as exc:
        if "OutOfMemory" in type(exc).__name__:
            dev.release_memory()  # give the cached blocks back before the item-by-item retry
        return Failed(msg.id, type(exc).__name__, str(exc) or repr(exc))
    audio = [np.ascontiguousarray(a, dtype="<f4").tobytes() for a in out]
    return Result(msg.id, audio, DeviceStats(*dev.stats()))
