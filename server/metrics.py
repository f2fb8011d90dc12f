"""Prometheus metrics, on a registry per app so several apps can live in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)
_RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)


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
            "Engine time over audio time, per chunk.",
            ["engine"],
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

    def engine_event(self, kind: str, engine: str, value: str) -> None:
        """Events from the engine process supervisor (on its threads)."""
        if kind == "restart":
            self.engine_restarts.labels(engine, value).inc()
        elif kind == "quarantined":
            self.engine_quarantined.labels(engine).inc()
        elif kind == "processes":
            self.engine_processes.labels(engine).set(int(value))
