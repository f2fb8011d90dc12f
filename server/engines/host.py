"""The engine process: loads one engine and synthesizes what the server asks, one
request at a time, until its pipe closes. Started by server/engines/process.py.

Everything here may crash (espeak-ng segfaults on some strings) or hang; the
server's side only ever sees a closed pipe or a missed deadline, never a dead
node.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, MutableSequence
from multiprocessing.connection import Connection

import numpy as np

from server.engines import ipc
from server.engines.base import Audio, Engine, EngineError, Timed
from server.engines.piper_voices import PiperOptions
from server.engines.widths import Widths

_PAGE = os.sysconf("SC_PAGE_SIZE")


def build(name: str, piper: PiperOptions) -> Engine:
    """The engines that can run in a process of their own."""
    if name == "piper":
        from server.engines.piper import PiperEngine

        return PiperEngine(piper)
    raise ValueError(f"no engine {name!r} can run in an engine process")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def main(
    conn: Connection,
    name: str,
    max_rss_bytes: int,
    warm_text: str,
    piper: PiperOptions,
    widths: tuple[MutableSequence[int], MutableSequence[int], int] | None = None,
) -> None:
    """``widths``: the engine's shared slots, their groups, and this process's slot
    (server/engines/widths.py)."""
    # Ctrl-C in a terminal reaches the whole process group; the server decides when
    # its engines stop (its pipe closes), so a drain can still finish its utterances.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        engine = build(name, piper)
        engine.load()
        if warm_text:
            for _ in engine.synthesize(warm_text, engine.info().default_voice, 1.0):
                pass
            warm_busy = getattr(engine, "warm_busy", None)  # Piper's other session
            if warm_busy is not None:
                warm_busy(warm_text)
        if widths is not None and hasattr(engine, "widths"):
            slots, groups, slot = widths
            engine.widths = Widths(
                slots, groups, slot, piper.threads, piper.busy_threads, piper.cpus
            )
    except Exception as exc:
        conn.send_bytes(
            ipc.encode(ipc.Failed(0, "engine_load_failed", f"{type(exc).__name__}: {exc}"))
        )
        return
    conn.send_bytes(ipc.encode(ipc.Hello(os.getpid(), engine.info(), engine.voices())))
    try:
        _serve(conn, engine, max_rss_bytes)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the server went away


def _serve(conn: Connection, engine: Engine, max_rss_bytes: int) -> None:
    while True:
        msg = ipc.decode_to_engine(conn.recv_bytes())
        if isinstance(msg, ipc.Cancel):
            continue  # for a request already over
        widths: Widths | None = getattr(engine, "widths", None)
        if widths is not None:
            widths.group = msg.group
        try:
            for piece in _pieces(engine, msg):
                conn.send_bytes(ipc.encode(_piece(msg.id, piece)))
                if conn.poll(0):
                    nxt = ipc.decode_to_engine(conn.recv_bytes())
                    if isinstance(nxt, ipc.Cancel) and nxt.id == msg.id:
                        break
        except EngineError as exc:
            conn.send_bytes(ipc.encode(ipc.Failed(msg.id, exc.code, exc.message)))
            continue
        except (EOFError, OSError):
            raise  # the pipe: the server went away
        except Exception as exc:  # the engine's own bug on this text: one chunk, not the process
            detail = f"{type(exc).__name__}: {exc}"
            conn.send_bytes(ipc.encode(ipc.Failed(msg.id, "engine_error", detail)))
            continue
        rss = rss_bytes()
        retiring = rss > max_rss_bytes
        resident = getattr(engine, "resident", None)  # Piper's voices held in memory
        n = len(resident()) if resident is not None else -1
        conn.send_bytes(ipc.encode(ipc.Finished(msg.id, rss, retiring, n)))
        if retiring:
            return


def _pieces(engine: Engine, msg: ipc.Synthesize) -> Iterator[Audio | Timed]:
    # Options go only to an engine that takes them (stream set-up refused them otherwise).
    extra = {} if msg.options is None else {"options": msg.options}
    timed = getattr(engine, "synthesize_timed", None) if msg.timed else None
    if timed is not None:
        pieces: Iterator[Audio | Timed] = timed(msg.text, msg.voice, msg.speed, **extra)
        return pieces
    return engine.synthesize(msg.text, msg.voice, msg.speed, **extra)


def _piece(req_id: int, piece: Audio | Timed) -> ipc.Piece:
    if isinstance(piece, Timed):
        audio = np.ascontiguousarray(piece.audio, dtype="<f4").tobytes()
        return ipc.Piece(req_id, audio, piece.words, piece.estimated)
    return ipc.Piece(req_id, np.ascontiguousarray(piece, dtype="<f4").tobytes())
