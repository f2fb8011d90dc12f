"""deploy/grafana/voxwire.json: every query parses as PromQL, and every metric it reads,
with the labels it matches on and groups by, is one a live server exposes after real
traffic (a speech request, a WebSocket session, an error, a 404)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import httpx
import pytest
from prometheus_client.metrics_core import Metric

from tests.prom import Scrape, scrape
from tests.promql import PromQLError, Query, parse, parse_variable
from tests.support import ROOT, Received, ServerProcess, connect, recv_until, send

DASHBOARD = ROOT / "deploy" / "grafana" / "voxwire.json"
# Families a server declares but fills only when something happens or with some engines;
# the dashboard may read them, and they must exist, but need not have a sample here.
MAY_BE_EMPTY = {
    "voxwire_engine_restarts": "only after an engine process is replaced",
    "voxwire_engine_quarantined": "only after a text crashed or hung an engine process",
    "voxwire_engine_failures": "only after a chunk failed",
    "voxwire_engine_resident_models": "engines with models to load (F5) report it",
    "voxwire_engine_breaker_state": "engines with circuit breakers (F5) only",
    "voxwire_engine_gpu_memory_bytes": "F5 on CUDA only",
}
# Labels Prometheus adds to every series it scrapes, and the histograms' bucket bound.
ADDED_LABELS = {"job", "instance"}
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def _queries(dash: dict[str, Any]) -> list[tuple[str, Query]]:
    out: list[tuple[str, Query]] = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((f"{panel['title']}: {target['expr']}", parse(target["expr"])))
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            out.append((f"${var['name']}", parse_variable(var["query"]["query"])))
    return out


def _family(s: Scrape, sample: str) -> Metric | None:
    """The family that exposes ``sample`` (a histogram's only with its suffixes, a
    counter's only with ``_total``)."""
    for family in s.families.values():
        for suffix in _SUFFIXES.get(family.type, ("",)):
            if family.name + suffix == sample:
                return family
    return None


def test_every_query_parses_and_uses_the_datasource_variable() -> None:
    dash = _dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    queries = _queries(dash)
    assert len(queries) >= 30
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert 'instance=~"$instance"' in target["expr"], target["expr"]


@pytest.mark.parametrize(
    "bad",
    [
        "sum(rate(voxwire_frames_sent_total[5m])",  # unbalanced
        "histogram_quantil(0.9, sum by (le) (rate(x_bucket[5m])))",  # unknown function
        "rate(voxwire_frames_sent_total[5 minutes])",  # bad range
        "sum by (le (rate(x[5m]))",
        "x{code=unknown}",  # an unquoted value
        '{code="x"}',  # no metric name
    ],
)
def test_the_parser_refuses_what_is_not_promql(bad: str) -> None:
    with pytest.raises(PromQLError):
        parse(bad)


def test_the_parser_finds_metrics_matchers_and_groupings() -> None:
    q = parse(
        'histogram_quantile(0.9, sum by (le, route) (rate(a_bucket{job=~"$job", '
        'status!="5.."}[$__rate_interval]))) / on (route) group_left sum(b_total) > bool 0'
    )
    assert q.selectors == [("a_bucket", {"job", "status"}), ("b_total", set())]
    assert q.groupings == [({"le", "route"}, {"a_bucket"})]


async def test_every_metric_the_dashboard_reads_is_exposed(server: ServerProcess) -> None:
    # Traffic first, so that labelled series exist: speech over HTTP, a WebSocket
    # session (with an error event), a page that does not exist.
    speech = {"model": "tts-1", "voice": "alloy", "input": "Metrics, please."}
    async with httpx.AsyncClient(base_url=server.http, timeout=120) as c:
        assert (await c.post("/v1/audio/speech", json=speech)).status_code == 200
        assert (await c.get("/no-such-page")).status_code == 404
    async with await connect(server.ws_url) as ws:
        await send(ws, type="bogus")
        await send(ws, type="start")
        rec = await recv_until(ws, Received(), stop="ready")
        await send(ws, type="text", text="Dashboards need data.")
        await send(ws, type="end")
        await recv_until(ws, rec)
    live = scrape(server.http)

    problems = dashboard_problems(live)
    assert not problems, "\n".join(problems)


def dashboard_problems(
    live: Scrape, only: set[str] | None = None, may_be_empty: Iterable[str] = MAY_BE_EMPTY
) -> list[str]:
    """What the dashboard's queries read that ``live`` does not expose: a metric, a
    sample (outside ``may_be_empty``), a label matched on or grouped by. ``only``: the
    queries that read one of these families."""
    problems: list[str] = []
    for where, q in _queries(_dashboard()):
        families = {f.name for m in q.metrics if (f := _family(live, m)) is not None}
        if only is not None and not families & only:
            continue
        for metric, matched in q.selectors:
            family = _family(live, metric)
            if family is None:
                problems.append(f"{where}: {metric} is not exposed")
                continue
            if not family.samples:  # (and so its labels cannot be seen here)
                if family.name not in may_be_empty:
                    problems.append(f"{where}: {metric} has no sample")
                continue
            if missing := matched - _labels(family):
                problems.append(f"{where}: {metric} has no label {sorted(missing)}")
        for grouping, metrics in q.groupings:
            seen = [f for m in metrics if (f := _family(live, m)) and f.samples]
            known = set().union(*(_labels(f) for f in seen))
            if seen and not grouping <= known:
                problems.append(f"{where}: no label {sorted(grouping - known)} to group by")
    return problems


def _labels(family: Metric) -> set[str]:
    return {k for s in family.samples for k in s.labels} | ADDED_LABELS
