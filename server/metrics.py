"""Prometheus metrics, on a registry per app so several apps can live in one process.

Sessions and streaming, the HTTP API (fed by server/http_metrics.py), the engines
(their workers report through ``EngineMeter``, their supervisors through
``engine_event``) and the process. README.md lists them; deploy/grafana/voxwire.json is
a dashboard on them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)
_RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)
# Time in an engine's queue: none while a thread is free, seconds when it is overloaded.
_QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# HTTP: a health check takes a millisecond, a long speech response streams for a minute.
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BREAKER_STATES = ("closed", "half_open", "open")


class Breaker(Protocol):
    """A circuit breaker as the metrics see it (server/engines/f5/breaker.py)."""

    @property
    def state(self) -> str: ...


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active_sessions = Gauge(
            "voxwire_active_sessions", "WebSocket sessions open now.", registry=r
        )
        self.connections = Gauge(
            "voxwire_active_connections",
            "WebSocket connections open now, by wire protocol (native or a dialect).",
            ["protocol"],
            registry=r,
        )
        self.sessions = Counter(
            "voxwire_sessions",
            "Streams started (a dialect's context counts as one), by engine and protocol.",
            ["engine", "protocol"],
            registry=r,
        )
        self.ttfa = Histogram(
            "voxwire_time_to_first_audio_seconds",
            "From the first chunk of an utterance being ready to its first frame sent.",
            ["engine", "protocol"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rtf = Histogram(
            "voxwire_engine_real_time_factor",
            "Engine time over audio time, per chunk, by engine and model (Piper: the voice).",
            ["engine", "model"],
            buckets=_RTF_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "voxwire_engine_queue_depth",
            "Jobs waiting for an engine thread.",
            ["engine"],
            registry=r,
        )
        self.frames_sent = Counter(
            "voxwire_frames_sent", "Audio frames sent to clients.", registry=r
        )
        self.audio_seconds = Counter(
            "voxwire_audio_seconds_sent", "Seconds of audio sent to clients.", registry=r
        )
        self.errors = Counter(
            "voxwire_errors", "Error events sent to clients, by code.", ["code"], registry=r
        )
        self.resumes = Counter(
            "voxwire_sessions_resumed",
            "Sessions taken over by a new connection (on this node).",
            registry=r,
        )
        self.rtp_streams = Counter(
            "voxwire_rtp_streams",
            "RTP streams opened (refusals count in voxwire_errors by code).",
            registry=r,
        )
        self.frames_replayed = Counter(
            "voxwire_frames_replayed", "Frames re-sent from the replay window.", registry=r
        )
        self.state_store_up = Gauge(
            "voxwire_state_store_up",
            "1 while the state store (Redis) answers, else 0.",
            registry=r,
        )
        self.state_store_up.set(1)
        # Engine processes (issue 11): crashes, hangs and runaways are contained there.
        self.engine_restarts = Counter(
            "voxwire_engine_restarts",
            "Engine processes replaced, by reason (crash, timeout, recycle, start_failed, "
            "died_loading, start_timeout).",
            ["engine", "reason"],
            registry=r,
        )
        self.engine_quarantined = Counter(
            "voxwire_engine_quarantined",
            "Chunks whose text crashed or hung an engine process (refused for "
            "engine_quarantine_s).",
            ["engine"],
            registry=r,
        )
        self.engine_processes = Gauge(
            "voxwire_engine_processes", "Engine processes warm and serving.", ["engine"], registry=r
        )
        self.engine_output_cut = Counter(
            "voxwire_engine_output_cut",
            "Chunks whose engine audio ran past the bound its text allows, and was cut.",
            ["engine"],
            registry=r,
        )
        self._engine_work(r)
        self._engine_resources(r)
        self._http(r)
        # The server process: CPU, memory, file descriptors (process_*), Python's version.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

    def _engine_work(self, r: CollectorRegistry) -> None:
        """What the engine workers do (reported through ``EngineMeter``)."""
        self.syntheses = Counter(
            "voxwire_engine_syntheses",
            "Chunks synthesized to their end, by engine and model (Piper: the voice).",
            ["engine", "model"],
            registry=r,
        )
        self.engine_failures = Counter(
            "voxwire_engine_failures",
            "Chunks an engine failed (or refused: an open circuit breaker), by code.",
            ["engine", "code"],
            registry=r,
        )
        self.engine_audio_seconds = Counter(
            "voxwire_engine_audio_seconds",
            "Seconds of audio the engines made, by engine and model.",
            ["engine", "model"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "voxwire_engine_queue_wait_seconds",
            "Time a chunk waited for an engine thread: from its submit (or the end of its "
            "session's previous job) to its start; chunk: first (of an utterance) or later.",
            ["engine", "chunk"],
            buckets=_QUEUE_BUCKETS,
            registry=r,
        )

    def _engine_resources(self, r: CollectorRegistry) -> None:
        """What the engines hold (reported through ``engine_event`` or read at scrape)."""
        self.resident_models = Gauge(
            "voxwire_engine_resident_models", "Models an engine has loaded.", ["engine"], registry=r
        )
        self.resident_voices = Gauge(
            "voxwire_engine_resident_voices", "Voices an engine has loaded.", ["engine"], registry=r
        )
        self.gpu_memory = Gauge(
            "voxwire_engine_gpu_memory_bytes",
            "CUDA memory of an engine's device, as torch counts it (kind: allocated, "
            "reserved); absent off CUDA.",
            ["engine", "kind"],
            registry=r,
        )
        self._breakers: dict[str, Mapping[str, Breaker]] = {}
        r.register(_BreakerStates(self._breakers))
        self._gauge_events: dict[str, Callable[[str], Gauge]] = {
            "processes": self.engine_processes.labels,
            "resident_models": self.resident_models.labels,
            "resident_voices": self.resident_voices.labels,
            "gpu_memory_allocated": lambda e: self.gpu_memory.labels(e, "allocated"),
            "gpu_memory_reserved": lambda e: self.gpu_memory.labels(e, "reserved"),
        }

    def _http(self, r: CollectorRegistry) -> None:
        """The HTTP API (server/http_metrics.py; WebSockets have the session metrics)."""
        self.http_requests = Counter(
            "voxwire_http_requests",
            "HTTP requests answered, by route (its path template), method, status and "
            "protocol (the API family: openai, voices, engines, tokens, health, metrics, "
            "pages, other).",
            ["route", "method", "status", "protocol"],
            registry=r,
        )
        self.http_duration = Histogram(
            "voxwire_http_request_duration_seconds",
            "From a request's arrival to the last byte of its response, by route.",
            ["route"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self.http_first_byte = Histogram(
            "voxwire_http_time_to_first_byte_seconds",
            "From a request's arrival to the first byte of its response body, by route "
            "(for speech: the first audio).",
            ["route"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self.http_bytes = Counter(
            "voxwire_http_response_bytes",
            "Response body bytes sent, by route.",
            ["route"],
            registry=r,
        )
        self.http_audio_seconds = Counter(
            "voxwire_http_audio_seconds",
            "Seconds of audio sent in HTTP response bodies (speech, voice previews), by route.",
            ["route"],
            registry=r,
        )
        self.http_in_progress = Gauge(
            "voxwire_http_requests_in_progress",
            "HTTP requests being answered now (a speech response until its last byte), "
            "by protocol.",
            ["protocol"],
            registry=r,
        )

    def engine_event(self, kind: str, engine: str, value: str) -> None:
        """Events from the engine process supervisors (on their threads) and the engines:
        restarts, quarantined texts, and gauges (processes, resident models and voices,
        GPU memory) set to ``value``."""
        if kind == "restart":
            self.engine_restarts.labels(engine, value).inc()
        elif kind == "quarantined":
            self.engine_quarantined.labels(engine).inc()
        elif (gauge := self._gauge_events.get(kind)) is not None:
            gauge(engine).set(float(value))

    def engine_meter(self, engine: str) -> EngineMeter:
        """What ``engine``'s worker reports to (its ``meter``)."""
        return EngineMeter(self, engine)

    def watch_breakers(self, engine: str, breakers: Mapping[str, Breaker]) -> None:
        """Report the states of ``engine``'s circuit breakers (by model) at each scrape."""
        self._breakers[engine] = breakers


class EngineMeter:
    """One engine worker's metrics (``server.engines.meter.WorkerMeter``). Called per
    chunk or job, on the event loop and worker threads; the client is thread-safe."""

    def __init__(self, metrics: Metrics, engine: str) -> None:
        self._m = metrics
        self._engine = engine
        self._wait = {
            True: metrics.queue_wait.labels(engine, "first"),
            False: metrics.queue_wait.labels(engine, "later"),
        }

    def queue_wait(self, seconds: float, first: bool) -> None:
        self._wait[first].observe(seconds)

    def chunk(self, model: str, engine_s: float, audio_s: float) -> None:
        m, engine = self._m, self._engine
        m.syntheses.labels(engine, model).inc()
        if audio_s > 0:
            m.engine_audio_seconds.labels(engine, model).inc(audio_s)
            m.rtf.labels(engine, model).observe(engine_s / audio_s)

    def failure(self, code: str) -> None:
        self._m.engine_failures.labels(self._engine, code).inc()


class _BreakerStates:
    """``voxwire_engine_breaker_state``: 1 for each breaker's current state, 0 for the
    others. Read at scrape time, since a breaker turns half-open by the clock alone."""

    def __init__(self, breakers: Mapping[str, Mapping[str, Breaker]]) -> None:
        self._breakers = breakers

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "voxwire_engine_breaker_state",
            "Circuit breaker of an engine's model: 1 for its state (closed, half_open, open).",
            labels=["engine", "model", "state"],
        )
        for engine, breakers in self._breakers.items():
            for model, breaker in list(breakers.items()):
                now = breaker.state
                for state in BREAKER_STATES:
                    family.add_metric([engine, model, state], 1.0 if state == now else 0.0)
        yield family
