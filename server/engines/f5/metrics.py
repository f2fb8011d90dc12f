"""The F5 worker's metrics (the generation host's restarts are the engines' common
``voxwire_engine_restarts_total``, server/metrics.py)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class F5Metrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry or CollectorRegistry()
        self.batch_size = Histogram(
            "voxwire_f5_batch_size",
            "Pieces per F5 forward pass.",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32),
            registry=r,
        )
        self.pieces = Counter(
            "voxwire_f5_pieces",
            "F5 pieces generated, by outcome (ok, failed, discarded after a cancel).",
            ["outcome"],
            registry=r,
        )
        self.breaker_open = Gauge(
            "voxwire_f5_breaker_open",
            "1 while the circuit breaker of an F5 model is open.",
            ["model"],
            registry=r,
        )


def device_events(
    events: Callable[[str, str, str], None], models: int, allocated: int, reserved: int
) -> None:
    """What the F5 device holds, through the engines' event hook (``Metrics.engine_event``):
    resident models, and CUDA memory (only on CUDA: elsewhere the gauge stays absent)."""
    events("resident_models", "f5", str(models))
    if allocated >= 0:
        events("gpu_memory_allocated", "f5", str(allocated))
        events("gpu_memory_reserved", "f5", str(reserved))
