"""The Grafana dashboard (deploy/grafana/dashboards/kmta.json): valid JSON Grafana can load,
and every metric its queries name is one kmta's processes register (or Prometheus's ``up``).
Every process kind registers its metrics from ``kmta.pipeline.metrics`` (one module, so this
list is the whole list)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from kmta.pipeline.metrics import metric_names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "kmta.json"
PROMETHEUS_OWN = {"up"}  # series Prometheus adds to every target
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "bool", "offset", "inf", "nan"}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"(?<![\w$.:])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")


def promql_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    keywords, label names (in ``{...}`` or ``by (...)``), ranges, numbers or strings."""
    s = _STRINGS.sub('""', expr)
    s = re.sub(r"\{[^}]*\}", "", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)  # ranges, [$__rate_interval]
    s = _GROUPING.sub("", s)
    s = re.sub(r"\$\w+", "", s)  # Grafana variables
    return {m for m in _NAME.findall(s) if m.lower() not in KEYWORDS}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    out = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((\w+),\s*\w+\)", q)
        assert m, f"variable {var['name']}: {q}"
        out.append((f"${var['name']}", m[1]))
    return out


def test_the_parser_finds_metric_names() -> None:
    assert promql_metrics('histogram_quantile(0.95, sum by (le, isp) (rate('
                          'kmta_smtp_reply_seconds_bucket{isp=~"$isp"}[$__rate_interval])))'
                          ) == {"kmta_smtp_reply_seconds_bucket"}
    assert promql_metrics('max by (isp) (a_total{x="by (y)"}) > 0 or on (isp) b') == {
        "a_total", "b"}
    assert promql_metrics("up{job=~\"kmta-.*\"}") == {"up"}


def test_the_dashboard_is_one_grafana_can_load(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "kmta-overview" and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        assert set(p["gridPos"]) == {"x", "y", "w", "h"}
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        for t in p.get("targets", []):
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
            assert t["expr"].count("{") == t["expr"].count("}"), t["expr"]
        refs = [t["refId"] for t in p.get("targets", [])]
        assert len(refs) == len(set(refs))


def test_it_has_the_panels_an_operator_looks_at_first(dashboard: dict[str, Any]) -> None:
    used = {m for _, expr in queries(dashboard) for m in promql_metrics(expr)}
    assert {"kmta_messages_total", "kmta_isp_speed_messages_per_second",
            "kmta_isp_speed_limit_messages_per_second", "kmta_isp_locked",
            "kmta_consumer_lag_messages", "kmta_deferrals_total"} <= used
    exprs = " ".join(e for _, e in queries(dashboard))
    assert 'outcome=~"delivered|deferred|bounced"' in exprs
    assert "sum by (instance)" in exprs  # per-node throughput


def test_every_queried_metric_exists(dashboard: dict[str, Any]) -> None:
    known = metric_names() | PROMETHEUS_OWN
    missing = {(title, m) for title, expr in queries(dashboard)
               for m in promql_metrics(expr) if m not in known}
    assert not missing, f"queried but never registered: {sorted(missing)}"
