"""The Grafana dashboard only queries metrics and labels nodelocaldns exports.

The upstream chart's dashboard went blank when CoreDNS 1.7 renamed its metrics; this keeps ours
tied to metrics/catalog.py, the table the exposition code serves from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodelocaldns.metrics.catalog import FAMILIES, exported_names

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "nodelocaldns-dashboard.json"
# Labels Prometheus adds when scraping (kubernetes_sd / ServiceMonitor), not the exporter.
TARGET_LABELS = {"instance", "job", "pod", "namespace", "node", "container", "service", "endpoint"}
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range", "__range_s", "__interval_ms"}
KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}
KEYWORDS |= {"inf", "nan", "Inf", "NaN"}

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{([^{}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_IDENT = re.compile(r"(?<![A-Za-z0-9_:.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")


def parse_promql(expr: str) -> tuple[set[str], set[str], set[str]]:
    """(metric names, label names in matchers, label names in by/without/on/ignoring)."""
    text = _STRING.sub('""', expr)
    matcher_labels = {m for body in _MATCHERS.findall(text) for m in _MATCHER_LABEL.findall(body)}
    text = _MATCHERS.sub(" ", text)
    grouping = {g.strip() for body in _GROUPING.findall(text) for g in body.split(",") if g.strip()}
    text = _GROUPING.sub(" ", text)
    text = _RANGE.sub(" ", text)
    metrics = {name for name, call in _IDENT.findall(text) if not call and name not in KEYWORDS}
    return metrics, matcher_labels, grouping


def _label_values(query: str) -> tuple[set[str], set[str]]:
    """Grafana's label_values(metric, label) -> ({metric}, {label})."""
    m = re.fullmatch(r"\s*label_values\(\s*(.*?)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", query)
    assert m, f"unsupported variable query {query!r}"
    metrics, matchers, _ = parse_promql(m.group(1))
    return metrics, matchers | {m.group(2)}


def labels_of(sample: str) -> set[str]:
    for family in FAMILIES:
        if sample == family.name or (family.kind == "histogram" and sample.rsplit("_", 1)[0] == family.name):
            extra = {"le"} if sample.endswith("_bucket") else set()
            return set(family.labels) | extra
    raise AssertionError(f"{sample} is not in the metric catalog")


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


def targets() -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in all_panels(load()["panels"]) for t in p.get("targets", [])]


def test_parser_finds_metrics_and_labels() -> None:
    """The extraction the tests below rely on can see a wrong name."""
    expr = (
        "histogram_quantile(0.99, sum by (le, zone) (rate(coredns_dns_request_duration_seconds_bucket"
        '{instance=~"($host):[0-9]+", server!="x"}[$__rate_interval]))) / on (zone) group_left '
        "sum without (type) (coredns_dns_requests_totl offset 5m) and bool vector(1)"
    )
    metrics, matchers, grouping = parse_promql(expr)
    assert metrics == {"coredns_dns_request_duration_seconds_bucket", "coredns_dns_requests_totl"}
    assert matchers == {"instance", "server"} and grouping == {"le", "zone", "type"}
    assert not metrics <= exported_names()


@pytest.mark.parametrize(("title", "target"), targets(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_query_uses_exported_metrics_and_their_labels(title: str, target: dict[str, Any]) -> None:
    metrics, matchers, grouping = parse_promql(target["expr"])
    assert metrics, f"{title}: no metric found in {target['expr']!r}"
    assert metrics <= exported_names(), f"{title}: unknown {sorted(metrics - exported_names())}"
    known = TARGET_LABELS.union(*(labels_of(m) for m in metrics))
    assert matchers | grouping <= known, (
        f"{title}: labels {sorted((matchers | grouping) - known)} do not exist"
    )
    # A legend can only show labels that survive the aggregation.
    legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
    assert legend <= grouping, f"{title}: legend uses {sorted(legend - grouping)}, aggregated away"


def test_variables_use_exported_metrics() -> None:
    variables = load()["templating"]["list"]
    for var in variables:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        metrics, labels = _label_values(query)
        assert metrics <= exported_names()
        assert labels <= TARGET_LABELS.union(*(labels_of(m) for m in metrics))
    defined = {v["name"] for v in variables} | GRAFANA_BUILTINS
    used = {name for _, t in targets() for name in re.findall(r"\$\{?(\w+)", t["expr"])}
    used |= {name for p in all_panels(load()["panels"]) for name in re.findall(r"\$\{?(\w+)", json.dumps(p))}
    assert used <= defined, f"undefined variables {sorted(used - defined)}"


def test_the_panels_the_issue_asks_for_are_there() -> None:
    used = set().union(*(parse_promql(t["expr"])[0] for _, t in targets()))
    wanted = {
        "coredns_dns_requests_total",  # QPS by zone/type
        "coredns_dns_responses_total",  # rcodes
        "coredns_cache_hits_total",
        "coredns_cache_requests_total",  # hit ratio per block
        "coredns_cache_entries",
        "coredns_dns_request_duration_seconds_bucket",  # latency quantiles
        "coredns_proxy_request_duration_seconds_bucket",  # upstream latency
        "coredns_proxy_healthcheck_failures_total",  # upstream health
        "coredns_nodecache_setup_errors_total",
        "coredns_reload_failed_total",
    }
    assert wanted <= used, sorted(wanted - used)
    grouped = {g for _, t in targets() for g in parse_promql(t["expr"])[2]}
    assert {"zone", "type", "rcode", "zones", "server", "to", "errortype"} <= grouped


def test_layout_is_valid() -> None:
    dash = load()
    panels = list(all_panels(dash["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, f"{p['title']} overlaps another panel"
        cells |= area
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert p["targets"] and all(t["refId"] for t in p["targets"])
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
