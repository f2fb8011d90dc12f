"""A server's /metrics, read with prometheus_client's own text parser, for the tests."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Scrape:
    text: str
    families: dict[str, Metric]  # by family name (a counter's without ``_total``)

    def samples(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        """The samples called ``name`` whose labels include ``labels``."""
        return [
            (s.labels, s.value)
            for f in self.families.values()
            for s in f.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def total(self, name: str, **labels: str) -> float:
        """The sum of those samples (0 when there is none yet)."""
        return sum(v for _, v in self.samples(name, **labels))

    def sample_names(self) -> set[str]:
        return {s.name for f in self.families.values() for s in f.samples}


def scrape(http: str, headers: dict[str, str] | None = None) -> Scrape:
    req = urllib.request.Request(http + "/metrics", headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read().decode()
    return Scrape(text, {f.name: f for f in text_string_to_metric_families(text)})


def delta(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.total(name, **labels) - before.total(name, **labels)
