"""An engine that runs in supervised child processes (``engine_isolation=process``).

``ProcessEngine`` has the Engine interface, so the worker does not know the
difference; behind it a small pool of engine processes (server/engines/host.py)
each synthesizes one chunk at a time. What it guarantees:

- a crash (espeak-ng segfaults on some strings), a hang or a runaway kills only its
  process: the chunk being spoken fails with a clear ``EngineError`` and every
  other chunk goes on in the other processes;
- a hang is found by a deadline scaled to the chunk (``engine_deadline_s`` plus
  ``engine_deadline_per_char_s`` per character, over the speed), and the process
  is killed;
- the text that crashed or hung a process is quarantined for
  ``engine_quarantine_s``: it is refused at once instead of killing the next one;
- the supervisor keeps ``size`` processes warm, with ``engine_spare_processes``
  beyond the worker's threads, so a restart (seconds, Piper loads its model) leaves
  no gap for the others; a process that keeps failing to start is retried with a
  doubling backoff; one that grows past ``engine_max_rss_mb`` retires after its
  chunk and is replaced, so a burst's memory goes back to the system.

Each process has a reader thread that takes everything it sends, whether or not
the consumer is reading: a paused job (the worker's preemption) never holds a
process, the deadline counts the process's own time, and a crash is seen at once.
IPC is ``multiprocessing`` pipes (length-framed bytes) with msgpack: the stdlib's
framing and polling, nothing hand-written.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import structlog

from server.engines import host, ipc
from server.engines.base import Audio, EngineError, EngineInfo, EngineOptions, Timed, VoiceInfo
from server.engines.child import exit_text, spawn
from server.engines.piper_voices import PiperOptions
from server.engines.process_link import Ended as _Ended
from server.engines.process_link import Proc as _Proc
from server.engines.process_link import Request as _Request
from server.engines.process_link import Started

if TYPE_CHECKING:
    from server.config import Settings

log = structlog.get_logger("voxwire.engine_process")

# kind ("restart", "quarantined", "processes"), engine, reason or count
EventHook = Callable[[str, str, str], None]

_TICK_S = 0.05  # the supervisor's deadline and restart check
_BACKOFF_MIN_S = 0.5


@dataclass(frozen=True, slots=True)
class ProcessOptions:
    size: int = 2
    deadline_s: float = 10.0
    deadline_per_char_s: float = 0.05
    start_timeout_s: float = 120.0
    max_rss_bytes: int = 768 << 20
    backoff_max_s: float = 30.0
    quarantine_s: float = 600.0
    quarantine_max: int = 4096
    warm_text: str = "Warming up."
    piper: PiperOptions = field(default_factory=PiperOptions)

    @classmethod
    def from_settings(cls, s: Settings) -> ProcessOptions:
        return cls(
            size=s.engines() + s.engine_spare_processes,
            deadline_s=s.engine_deadline_s,
            deadline_per_char_s=s.engine_deadline_per_char_s,
            start_timeout_s=s.engine_start_timeout_s,
            max_rss_bytes=s.engine_max_rss_mb << 20,
            backoff_max_s=s.engine_restart_backoff_max_s,
            quarantine_s=s.engine_quarantine_s,
            piper=PiperOptions.from_settings(s, s.engine_cpu_threads(), s.engine_busy_threads),
        )


class ProcessEngine:
    """The Engine interface over a pool of engine processes running ``name``."""

    def __init__(self, name: str, options: ProcessOptions, events: EventHook | None = None) -> None:
        self.name = name
        self.options = options
        self.events: EventHook = events or (lambda _k, _e, _r: None)
        self.sample_rate = 22050
        self._info: EngineInfo | None = None
        self._voices: list[VoiceInfo] = []
        self._ctx = multiprocessing.get_context("spawn")
        self._cond = threading.Condition()
        self._procs: list[_Proc] = []  # alive or starting
        self._idle: deque[_Proc] = deque()
        self._starting = 0
        self._next_id = 0
        self._quarantine: OrderedDict[str, float] = OrderedDict()
        self._failures = 0  # consecutive failed starts, for the backoff
        self._start_after = 0.0
        self._load_error: EngineError | None = None
        self._closed = False
        self._supervisor: threading.Thread | None = None
        # What each process's current sentence uses, a slot each (server/engines/widths.py);
        # twice the pool, so a replacement can start before the process it replaces is reaped.
        self._slots = self._ctx.Array("i", 2 * max(1, options.size), lock=False)
        self._groups = self._ctx.Array("i", 2 * max(1, options.size), lock=False)
        self._free_slots = list(range(2 * max(1, options.size)))

    # ------------------------------------------------------------ Engine interface

    def load(self) -> None:
        """Start the pool and wait until every process is warm (or one cannot load)."""
        with self._cond:
            if self._supervisor is None:
                self._supervisor = threading.Thread(
                    target=self._supervise, name=f"engine-supervisor-{self.name}", daemon=True
                )
                self._supervisor.start()
            deadline = time.monotonic() + self.options.start_timeout_s * 2
            while len(self._idle) + self._busy() < self.options.size:
                if self._load_error is not None and self._info is None:
                    raise self._load_error
                left = deadline - time.monotonic()
                if left <= 0:
                    raise EngineError(
                        "engine_load_failed",
                        f"{self.name}: engine processes did not start within "
                        f"{self.options.start_timeout_s * 2:g} s",
                    )
                self._cond.wait(min(left, 0.5))

    def info(self) -> EngineInfo:
        if self._info is None:
            return EngineInfo(
                name=self.name,
                sample_rate=self.sample_rate,
                languages=[],
                default_voice="",
                loaded=False,
                streaming=False,
            )
        return self._info

    def voices(self) -> list[VoiceInfo]:
        return list(self._voices)

    def plan(self, text: str, voice: str, speed: float, first: bool) -> list[str] | None:
        return None  # one generation per chunk

    # The worker passes each request's ``group`` (its session's; server/engines/widths.py).
    takes_group = True

    def synthesize(
        self,
        text: str,
        voice: str,
        speed: float,
        options: EngineOptions | None = None,
        group: int = 0,
    ) -> Iterator[Audio]:
        p, req = self._start(text, voice, speed, False, options, group)
        return self._audio(p, req)

    def synthesize_timed(
        self,
        text: str,
        voice: str,
        speed: float,
        options: EngineOptions | None = None,
        group: int = 0,
    ) -> Iterator[Audio | Timed]:
        """As ``synthesize``, with the words that end in each piece where the engine in
        the process can tell (Piper's ``synthesize_timed``)."""
        p, req = self._start(text, voice, speed, True, options, group)
        return self._pieces(p, req)

    def try_synthesize(
        self,
        text: str,
        voice: str,
        speed: float,
        timed: bool,
        options: EngineOptions | None = None,
        group: int = 0,
    ) -> Started | None:
        """A chunk started now on an idle process, to be read later (the worker's
        read-ahead), or None when no process is idle: it never waits for one. Its
        pieces come as ``synthesize`` (``timed``: ``synthesize_timed``) gives them;
        closing it cancels the request, read or not."""
        key = _key(voice, text)
        o = self.options
        deadline_s = o.deadline_s + o.deadline_per_char_s * len(text) / max(speed, 0.01)
        now = time.monotonic()
        with self._cond:
            if self._closed or not self._idle:
                return None
            until = self._quarantine.get(key)
            if until is not None and until > now:
                return None  # read normally, it gets its clear error then
            self._next_id += 1
            req = _Request(self._next_id, text, voice, deadline_s, key)
            p = self._idle.popleft()
            p.current = req
        p.send(ipc.Synthesize(req.id, text, voice, speed, timed, options, group))
        return Started(p, req, self._pieces(p, req) if timed else self._audio(p, req))

    def _start(
        self,
        text: str,
        voice: str,
        speed: float,
        timed: bool,
        options: EngineOptions | None,
        group: int,
    ) -> tuple[_Proc, _Request]:
        key = _key(voice, text)
        self._check_quarantine(key, text)
        o = self.options
        deadline_s = o.deadline_s + o.deadline_per_char_s * len(text) / max(speed, 0.01)
        with self._cond:
            self._next_id += 1
            req = _Request(self._next_id, text, voice, deadline_s, key)
        p = self._checkout(req)
        # If it died before the request reached it, its reader thread reports the death.
        p.send(ipc.Synthesize(req.id, text, voice, speed, timed, options, group))
        return p, req

    def _audio(self, p: _Proc, req: _Request) -> Generator[Audio, None, None]:
        pieces = self._pieces(p, req)
        try:
            for item in pieces:
                yield item.audio if isinstance(item, Timed) else item
        finally:
            pieces.close()  # stopped early: the process gets its Cancel now

    def _pieces(self, p: _Proc, req: _Request) -> Generator[Audio | Timed, None, None]:
        try:
            while True:
                item = req.out.get()
                if isinstance(item, _Ended):
                    if item.error is not None:
                        raise item.error
                    return
                yield item
        finally:
            if not req.over:
                # The consumer stopped early (barge-in): the process stops at its next
                # piece; its reader thread drops the rest and frees it at the end.
                p.send(ipc.Cancel(req.id))

    # ------------------------------------------------------------ the pool

    def close(self) -> None:
        with self._cond:
            self._closed = True
            procs = list(self._procs)
            self._cond.notify_all()
        for p in procs:
            p.conn.close()
        for p in procs:
            p.proc.join(timeout=2)
            p.kill()

    def pids(self) -> list[int]:
        with self._cond:
            return [p.pid for p in self._procs if p.ready and not p.dead]

    def _busy(self) -> int:
        return sum(1 for p in self._procs if p.ready and not p.dead and p.current is not None)

    def _checkout(self, req: _Request) -> _Proc:
        deadline = time.monotonic() + self.options.start_timeout_s
        with self._cond:
            while not self._idle:
                if self._closed:
                    raise EngineError("engine_unavailable", f"{self.name}: the server is stopping")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise EngineError(
                        "engine_unavailable",
                        f"no {self.name} engine process became free within "
                        f"{self.options.start_timeout_s:g} s",
                    )
                self._cond.wait(left)
            p = self._idle.popleft()
            p.current = req
            req.started = time.monotonic()
            return p

    def _check_quarantine(self, key: str, text: str) -> None:
        now = time.monotonic()
        with self._cond:
            until = self._quarantine.get(key)
            if until is None:
                return
            if until <= now:
                del self._quarantine[key]
                return
        raise EngineError(
            "text_quarantined",
            f"this text ({len(text)} characters, starting {text[:40]!r}) crashed or hung "
            f"the {self.name} engine before; it is skipped, not retried, for "
            f"{self.options.quarantine_s:g} s",
        )

    def _quarantine_key(self, key: str) -> None:
        o = self.options
        if o.quarantine_s <= 0:
            return
        self._quarantine[key] = time.monotonic() + o.quarantine_s
        self._quarantine.move_to_end(key)
        while len(self._quarantine) > o.quarantine_max:
            self._quarantine.popitem(last=False)
        self.events("quarantined", self.name, "")

    # ------------------------------------------------------------ supervisor thread

    def _supervise(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                now = time.monotonic()
                missing = self.options.size - len(self._procs)
                start = missing > 0 and now >= self._start_after
                overdue = [
                    p
                    for p in self._procs
                    if p.current is not None
                    and not p.current.over
                    and not p.kill_reason
                    and now - p.current.started > p.current.deadline_s
                ]
                stuck = [
                    p
                    for p in self._procs
                    if not p.ready
                    and not p.kill_reason
                    and now - p.born > self.options.start_timeout_s
                ]
                for p in overdue:
                    p.kill_reason = "timeout"
                for p in stuck:
                    p.kill_reason = "start_timeout"
            for p in overdue + stuck:
                p.kill()
            if start:
                self._spawn()
            time.sleep(_TICK_S)

    def _spawn(self) -> None:
        o = self.options
        with self._cond:
            # (Never empty: a pool holds at most ``size`` processes; if it were, the
            # process would run every sentence wide rather than not start.)
            slot = self._free_slots.pop(0) if self._free_slots else -1
            if slot >= 0:
                self._slots[slot] = 0
        widths = (self._slots, self._groups, slot) if slot >= 0 else None
        args = (self.name, o.max_rss_bytes, o.warm_text, o.piper, widths)
        try:
            proc, parent = spawn(self._ctx, host.main, args, f"voxwire-engine-{self.name}")
        except OSError as exc:
            if slot >= 0:
                with self._cond:
                    self._free_slots.append(slot)
            self._start_failed(f"cannot start a process: {exc}")
            return
        p = _Proc(proc, parent)
        p.slot = slot
        with self._cond:
            self._procs.append(p)
        threading.Thread(
            target=self._read, args=(p,), name=f"engine-reader-{self.name}-{p.pid}", daemon=True
        ).start()

    def _start_failed(self, why: str) -> None:
        with self._cond:
            self._failures += 1
            wait = min(self.options.backoff_max_s, _BACKOFF_MIN_S * 2 ** (self._failures - 1))
            self._start_after = time.monotonic() + wait
            self._load_error = EngineError("engine_load_failed", f"{self.name}: {why}")
            self._cond.notify_all()
        log.error("engine_start_failed", engine=self.name, error=why, retry_in_s=wait)
        self.events("restart", self.name, "start_failed")

    # ------------------------------------------------------------ reader threads

    def _read(self, p: _Proc) -> None:
        try:
            while True:
                msg = ipc.decode_from_engine(p.conn.recv_bytes())
                if isinstance(msg, ipc.Hello):
                    self._ready(p, msg)
                elif isinstance(msg, ipc.Piece):
                    req = p.current
                    if req is not None and req.id == msg.id and not req.over:
                        req.out.put(_received(msg))
                elif isinstance(msg, ipc.Finished | ipc.Failed):
                    if msg.id == 0:  # the engine could not load
                        assert isinstance(msg, ipc.Failed)
                        p.kill_reason = "load_failed"
                        self._start_failed(msg.message)
                        break
                    self._request_over(p, msg)
                    if isinstance(msg, ipc.Finished) and msg.retiring:
                        p.kill_reason = "recycle"
                        log.info(
                            "engine_process_recycled",
                            engine=self.name,
                            pid=p.pid,
                            rss_mb=msg.rss_bytes >> 20,
                        )
                        break
        except (EOFError, OSError, ValueError):
            pass  # closed: the process died, or the server is stopping
        except Exception as exc:  # a garbled message: treat the process as lost
            log.error("engine_process_protocol_error", engine=self.name, error=repr(exc))
            p.kill()
        self._lost(p)

    def _ready(self, p: _Proc, hello: ipc.Hello) -> None:
        with self._cond:
            p.ready = True
            self._info = hello.info
            self._voices = hello.voices
            self.sample_rate = hello.info.sample_rate
            self._failures = 0
            self._load_error = None
            self._idle.append(p)
            self._cond.notify_all()
            n = sum(1 for q in self._procs if q.ready and not q.dead)
        log.info("engine_process_ready", engine=self.name, pid=p.pid, processes=n)
        self.events("processes", self.name, str(n))

    def _request_over(self, p: _Proc, msg: ipc.Finished | ipc.Failed) -> None:
        with self._cond:
            req = p.current
            if req is None or req.id != msg.id:
                return  # a late answer to a request already given up
            p.current = None
            if not req.over:
                req.over = True
                err = EngineError(msg.code, msg.message) if isinstance(msg, ipc.Failed) else None
                req.out.put(_Ended(err))
            if not (isinstance(msg, ipc.Finished) and msg.retiring):
                self._idle.append(p)
                self._cond.notify_all()
        if isinstance(msg, ipc.Finished) and 0 <= msg.resident_voices != p.resident_voices:
            p.resident_voices = msg.resident_voices
            self._report_resident()

    def _report_resident(self) -> None:
        """Voices loaded in all the processes: each holds its own copies, so their memory
        adds up."""
        with self._cond:
            n = sum(q.resident_voices for q in self._procs if not q.dead)
        self.events("resident_voices", self.name, str(n))

    def _lost(self, p: _Proc) -> None:
        """The process is gone (crash, kill, recycle, or the server is stopping)."""
        p.proc.join(timeout=5)
        code = p.proc.exitcode
        with self._cond:
            p.dead = True
            if p in self._procs:
                self._procs.remove(p)
            if p in self._idle:
                self._idle.remove(p)
            req, p.current = p.current, None
            self._free_slot(p)
            closed = self._closed
            reason = p.kill_reason or ("crash" if p.ready else "died_loading")
            if req is not None and req.over:
                req = None
            if req is not None:
                req.over = True
                if reason != "recycle" and not closed:
                    self._quarantine_key(req.key)
            n = sum(1 for q in self._procs if q.ready and not q.dead)
            self._cond.notify_all()
        p.conn.close()
        how = exit_text(code)
        if req is not None and reason != "recycle":
            req.out.put(_Ended(_death_error(self.name, reason, how, req)))
        if closed:
            return
        if not p.ready:
            if reason != "load_failed":  # its Failed message was counted already
                self._start_failed(f"the engine process did not start ({reason}, {how})")
        else:
            self.events("restart", self.name, reason)
        self.events("processes", self.name, str(n))
        self._report_resident()  # its voices went with it
        log_fn = log.info if reason == "recycle" else log.error
        log_fn(
            "engine_process_lost",
            engine=self.name,
            pid=p.pid,
            reason=reason,
            exit=how,
            chars=len(req.text) if req is not None else 0,
        )

    def _free_slot(self, p: _Proc) -> None:
        """(Under the lock) what a gone process's sentence was using is free again."""
        if p.slot >= 0:
            self._slots[p.slot] = 0
            self._groups[p.slot] = 0
            self._free_slots.append(p.slot)
            p.slot = -1


def _received(msg: ipc.Piece) -> Audio | Timed:
    audio = np.frombuffer(msg.audio, dtype="<f4")
    return audio if msg.words is None else Timed(audio, msg.words, msg.estimated)


def _key(voice: str, text: str) -> str:
    return hashlib.blake2b(f"{voice}\0{text}".encode(), digest_size=16).hexdigest()


def _death_error(name: str, reason: str, how: str, req: _Request) -> EngineError:
    if reason == "timeout":
        return EngineError(
            "engine_timeout",
            f"the {name} engine took longer than its deadline ({req.deadline_s:.3g} s for "
            f"{len(req.text)} characters) on this text; it was stopped and the text "
            "skipped (not retried)",
        )
    return EngineError(
        "engine_crashed",
        f"the {name} engine process died ({how}) while speaking this text "
        f"({len(req.text)} characters); the text was skipped (not retried) and the "
        "engine restarted",
    )
