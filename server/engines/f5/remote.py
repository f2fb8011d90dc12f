"""The server's side of the F5 generation host (``engine_isolation=process``).

``F5Engine`` keeps the planning and the voices in the server's process; each batch's
model call is a request to one child process (``server/engines/f5/host.py``) that
holds the models and the vocoder. What ``GenerationHost`` guarantees:

- a crash of the host (a CUDA fault, an abort, the OOM killer) fails the batch in
  flight with ``HostLost`` (an EngineError: the worker's breaker and the sessions'
  fallback take it as any failed batch) and never the server;
- a batch past its deadline gets the host killed and fails the same way. The
  deadline is ``f5_deadline_s`` plus, per second of audio in the batch, the larger of
  ``f5_deadline_per_audio_s`` and four times the time the host has been taking (so a
  slow device, a CPU, is not mistaken for a hang); a host's first batch (lazy
  initialisation) and a model still loading have ``engine_start_timeout_s``;
- a supervisor thread keeps one host running: the first restart is at once, then
  with a doubling backoff (0.5 s up to ``engine_restart_backoff_max_s``) while hosts
  keep dying before a batch succeeds. Restarts are counted in
  ``voxwire_engine_restarts_total{engine="f5",reason}``.

A voice's reference goes to a host once (cached there by voice id and a digest of its
content), not with every batch. While no host is up, batches fail at once
(``engine_unavailable``): sessions go to their fallback instead of waiting.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

import numpy as np
import structlog

from server.engines.base import Audio, EngineError
from server.engines.child import Child, exit_text, spawn
from server.engines.f5 import host
from server.engines.f5.metrics import device_events
from server.engines.f5.voices import F5Voice

if TYPE_CHECKING:
    from server.engines.f5.checkpoints import ModelSpec
    from server.engines.f5.options import F5Options, Sampling

log = structlog.get_logger("voxwire.f5")

EventHook = Callable[[str, str, str], None]  # as server/engines/process.py's

_TICK_S = 0.05
_BACKOFF_MIN_S = 0.5
_SLACK = 4.0  # a batch's deadline allows this many times the host's usual time
# References a host keeps (each a few hundred KB plus its mel); above the largest batch.
VOICES_PER_HOST = 128


class HostLost(EngineError):
    """The generation host died, was killed at its deadline, or is not up: the whole
    batch failed. Its items are not retried one by one (that would restart the host
    once per item)."""


@dataclass(slots=True)
class _Request:
    id: int
    deadline_s: float
    deadline_at: float
    audio_s: float
    sent: float = field(default_factory=time.monotonic)
    out: queue.SimpleQueue[host.Result | host.Failed | EngineError] = field(
        default_factory=queue.SimpleQueue
    )


class _Host(Child):
    """One host process, its pipe, and what it has been sent."""

    def __init__(self, proc: BaseProcess, conn: Connection) -> None:
        super().__init__(proc, conn)
        self.current: _Request | None = None
        self.batches = 0  # answered
        self.voices: OrderedDict[tuple[str, str], None] = OrderedDict()

    def send(self, msg: host.Voice | host.Forget | host.Generate) -> None:
        # A failed send needs nothing more: it died, and its reader thread reports that.
        with contextlib.suppress(OSError, ValueError):
            self.conn.send_bytes(host.encode(msg))


class GenerationHost:
    def __init__(
        self, opts: F5Options, specs: list[ModelSpec], default_key: str, events: EventHook
    ) -> None:
        self.opts = opts
        self.o = opts.host
        self._specs = specs
        self._default_key = default_key
        self.events = events
        self.device = "cpu"
        self.device_name = "cpu"
        self.load_error = ""  # the last host's, from its Hello
        self.start_error = ""  # why the last start failed
        self._ctx = multiprocessing.get_context("spawn")
        self._cond = threading.Condition()
        self._call = threading.Lock()  # one batch at a time (the worker has one device thread)
        self._host: _Host | None = None
        self._next_id = 0
        self._failures = 0  # hosts lost since the last good batch, for the backoff
        self._rate = 0.0  # seconds a batch takes per second of its audio (moving average)
        self._start_after = 0.0
        self._closed = False
        self._supervisor: threading.Thread | None = None
        self._digests: OrderedDict[str, tuple[F5Voice, str]] = OrderedDict()

    # ------------------------------------------------------------ the caller's side

    def start(self) -> None:
        with self._cond:
            if self._supervisor is None:
                self._supervisor = threading.Thread(
                    target=self._supervise, name="f5-host-supervisor", daemon=True
                )
                self._supervisor.start()

    def wait_ready(self, timeout: float) -> bool:
        """Until a host is up (True), a start failed, or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self._host is not None and self._host.ready):
                left = deadline - time.monotonic()
                if left <= 0 or self.start_error or self._closed:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    @property
    def pid(self) -> int:
        """The host's process id (0 while none is up)."""
        with self._cond:
            h = self._host
            return h.pid if h is not None and h.ready else 0

    def generate(
        self,
        key: str,
        rows: list[tuple[F5Voice, str, float]],
        audio_s: float,
        sampling: Sampling | None = None,
    ) -> list[Audio]:
        """One batch on the host: a waveform per row. ``audio_s``: the batch's audio
        (reference and generated, every row), which scales its deadline. Raises
        HostLost, or EngineError for an exception in the host."""
        with self._call:
            h, req = self._request(audio_s)
            self._send_voices(h, [v for v, _, _ in rows])
            gen_rows = [host.GenRow(v.id, self._digest(v), t, s) for v, t, s in rows]
            h.send(host.Generate(req.id, key, gen_rows, sampling))
            out = req.out.get()  # the reader, or the loss of the host, always answers
        if isinstance(out, EngineError):
            raise out
        if isinstance(out, host.Failed):
            code = "engine_out_of_memory" if "OutOfMemory" in out.kind else "engine_error"
            raise EngineError(code, out.message)
        return [np.frombuffer(a, dtype="<f4") for a in out.audio]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            h = self._host
            self._cond.notify_all()
        if h is not None:
            h.conn.close()
            if h.ready:  # it exits at the pipe's end; nothing there needs a clean exit
                h.proc.join(timeout=0.5)
            h.kill()

    def _request(self, audio_s: float) -> tuple[_Host, _Request]:
        with self._cond:
            h = self._host
            if h is None or not h.ready or h.dead or h.kill_reason:
                why = "the server is stopping" if self._closed else "it is restarting"
                raise HostLost("engine_unavailable", f"the f5 generation process is not up ({why})")
            self._next_id += 1
            per_s = max(self.o.deadline_per_audio_s, _SLACK * self._rate)
            deadline_s = self.o.deadline_s + per_s * audio_s
            if h.batches == 0:
                deadline_s = max(deadline_s, self.o.start_timeout_s)
            req = _Request(self._next_id, deadline_s, time.monotonic() + deadline_s, audio_s)
            h.current = req
            return h, req

    def _send_voices(self, h: _Host, voices: list[F5Voice]) -> None:
        for v in voices:
            k = (v.id, self._digest(v))
            if k in h.voices:
                h.voices.move_to_end(k)
                continue
            h.send(host.Voice(v.id, k[1], v.audio.astype("<f4").tobytes(), v.text, v.gain))
            h.voices[k] = None
            while len(h.voices) > VOICES_PER_HOST:
                h.send(host.Forget(*h.voices.popitem(last=False)[0]))

    def _digest(self, v: F5Voice) -> str:
        """A digest of the reference's content: an id re-uploaded with other audio (or a
        voices directory edited between restarts) is never served from a stale copy."""
        cached = self._digests.get(v.id)
        if cached is not None and cached[0] is v:
            return cached[1]
        h = hashlib.blake2b(v.audio.astype("<f4").tobytes(), digest_size=16)
        h.update(f"\0{v.text}\0{v.gain!r}".encode())
        self._digests[v.id] = (v, h.hexdigest())
        self._digests.move_to_end(v.id)
        while len(self._digests) > 4 * VOICES_PER_HOST:
            self._digests.popitem(last=False)
        return h.hexdigest()

    # ------------------------------------------------------------ supervisor thread

    def _supervise(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                now = time.monotonic()
                start = self._host is None and now >= self._start_after
                h = self._host
                kill = h is not None and not h.kill_reason and self._overdue(h, now)
            if kill and h is not None:
                h.kill()
            if start:
                self._spawn()
            time.sleep(_TICK_S)

    def _overdue(self, h: _Host, now: float) -> bool:
        """Whether ``h`` is past a deadline (its start, or its batch); marks it so."""
        if not h.ready and now - h.born > self.o.start_timeout_s:
            h.kill_reason = "start_timeout"
        elif h.current is not None and now > h.current.deadline_at:
            h.kill_reason = "timeout"
        return bool(h.kill_reason)

    def _spawn(self) -> None:
        args = (self.opts, self._specs, self._default_key)
        try:
            proc, parent = spawn(self._ctx, host.main, args, "voxwire-f5-host")
        except OSError as exc:
            self._start_failed(f"cannot start a process: {exc}")
            return
        h = _Host(proc, parent)
        with self._cond:
            self._host = h
            closed = self._closed
        if closed:  # close() ran meanwhile and did not see it
            h.kill()
        threading.Thread(
            target=self._read, args=(h,), name=f"f5-host-reader-{h.pid}", daemon=True
        ).start()

    def _start_failed(self, why: str) -> None:
        with self._cond:
            self.start_error = why
            wait = self._backoff()
            self._cond.notify_all()
        log.error("f5_host_start_failed", error=why, retry_in_s=wait)
        self.events("restart", "f5", "start_failed")

    def _backoff(self) -> float:
        """Count a lost host and set when the next may start (lock held): the first at
        once, then a doubling wait while they keep failing."""
        self._failures += 1
        wait = 0.0
        if self._failures > 1:
            wait = min(self.o.backoff_max_s, _BACKOFF_MIN_S * 2 ** (self._failures - 2))
        self._start_after = time.monotonic() + wait
        return wait

    # ------------------------------------------------------------ reader thread

    def _read(self, h: _Host) -> None:
        try:
            while True:
                msg = host.decode_from_host(h.conn.recv_bytes())
                if isinstance(msg, host.Failed) and msg.id == 0:  # it could not start
                    h.kill_reason = "load_failed"
                    self._start_failed(msg.message)
                    break
                self._handle(h, msg)
        except (EOFError, OSError, ValueError):
            pass  # closed: the host died, or the server is stopping
        except Exception as exc:  # a garbled message: treat the host as lost
            log.error("f5_host_protocol_error", error=repr(exc))
            h.kill()
        self._lost(h)

    def _handle(self, h: _Host, msg: host.FromHost) -> None:
        with self._cond:
            req = h.current
            if isinstance(msg, host.Hello):
                h.ready = True
                self.device, self.device_name = msg.device, msg.device_name
                self.load_error, self.start_error = msg.load_error, ""
                self._cond.notify_all()
            elif req is None or req.id != msg.id:
                return  # an answer to a request already given up
            elif isinstance(msg, host.Loading):
                req.deadline_at = time.monotonic() + self.o.start_timeout_s
            elif isinstance(msg, host.Started):
                req.sent = time.monotonic()
                req.deadline_at = req.sent + req.deadline_s
            else:
                h.current = None
                h.batches += 1
                if isinstance(msg, host.Result):
                    self._failures = 0
                    rate = (time.monotonic() - req.sent) / max(req.audio_s, 0.1)
                    self._rate = rate if not self._rate else 0.8 * self._rate + 0.2 * rate
                req.out.put(msg)
        if isinstance(msg, host.Hello | host.Result) and msg.stats is not None:
            s = msg.stats
            device_events(self.events, s.models, s.gpu_allocated, s.gpu_reserved)
        if isinstance(msg, host.Hello):
            log.info("f5_host_ready", pid=msg.pid, device=msg.device)
            self.events("processes", "f5", "1")
            if msg.load_error:
                log.error("f5_model_load_failed", error=msg.load_error)

    def _lost(self, h: _Host) -> None:
        """The host is gone (crash, kill, or the server is stopping)."""
        h.proc.join(timeout=5)
        how = exit_text(h.proc.exitcode)
        with self._cond:
            h.dead = True
            if self._host is h:
                self._host = None
            req, h.current = h.current, None
            closed = self._closed
            reason = h.kill_reason or ("crash" if h.ready else "died_loading")
            if not closed and reason != "load_failed":  # that one was counted already
                self._backoff()
            self._cond.notify_all()
        h.conn.close()
        if req is not None:
            req.out.put(_loss_error(reason, how, req, closed))
        if closed:
            return
        self.events("processes", "f5", "0")
        gone = 0 if self.device.startswith("cuda") else -1  # its models and memory went with it
        device_events(self.events, 0, gone, gone)
        if h.ready:
            self.events("restart", "f5", reason)
        elif reason != "load_failed":
            with self._cond:
                self.start_error = f"the f5 generation process did not start ({reason}, {how})"
            self.events("restart", "f5", reason)
        log.error("f5_host_lost", pid=h.pid, reason=reason, exit=how, in_flight=req is not None)


def _loss_error(reason: str, how: str, req: _Request, closed: bool) -> HostLost:
    if closed:
        return HostLost("engine_unavailable", "the server is stopping")
    if reason == "timeout":
        return HostLost(
            "engine_timeout",
            f"the f5 generation process took longer than its deadline ({req.deadline_s:.3g} s "
            f"for a batch of {req.audio_s:.1f} s of audio); it was stopped and restarted",
        )
    return HostLost(
        "engine_crashed",
        f"the f5 generation process died ({how}) during a batch; it is being restarted",
    )
