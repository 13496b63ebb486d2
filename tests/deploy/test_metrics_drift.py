"""Dashboards and alerts never drift from the code.

Every metric a Grafana panel, a dashboard variable or an alert rule names must exist in
tests/proxy/metrics.golden (the exposition shape pinned by the proxy tests), and every
label it groups or matches by must be one of those metrics' labels or a scrape target
label. Every SPEC metric is shown somewhere on the dashboard, and every alert the issue
asks for exists.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "proxy" / "metrics.golden"
DASHBOARD = REPO / "deploy" / "grafana" / "gateway-dashboard.json"
ALERTS = REPO / "deploy" / "prometheus" / "gateway-alerts.yaml"

# Labels Prometheus adds to every scraped series (PodMonitor / pod-annotation relabelling).
TARGET_LABELS = {"job", "instance", "namespace", "pod", "container"}
# Series Prometheus itself makes, with their labels.
SYNTHETIC = {"up": set()}
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile", "stddev", "group",
    "rate", "irate", "increase", "delta", "histogram_quantile", "clamp_min", "clamp_max", "abs",
    "absent", "absent_over_time", "max_over_time", "min_over_time", "avg_over_time", "vector", "scalar", "time",
    "label_values",  # Grafana variable query
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
}
SPEC_METRICS = [
    "gateway_jwt_verify_seconds", "gateway_jwt_cache_lookups_total", "gateway_requests_total",
    "gateway_request_duration_seconds", "gateway_upstream_duration_seconds", "gateway_jwks_refresh_total",
    "gateway_jwks_keys", "gateway_config_reloads_total", "gateway_inflight_requests",
]


def golden() -> dict[str, set[str]]:
    shapes: dict[str, set[str]] = {}
    for line in GOLDEN.read_text().splitlines():
        m = re.fullmatch(r"(\w+) (\w+) \{([\w,]*)\}", line.strip())
        assert m, f"unexpected golden line {line!r}"
        labels = set(filter(None, m.group(3).split(",")))
        if m.group(1).endswith("_bucket"):
            labels.add("le")
        shapes[m.group(1)] = labels
    return shapes


def analyse(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) used by a PromQL expression (Grafana variables allowed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\$\{?\w+\}?", "", text)  # $__rate_interval, $namespace
    labels: set[str] = set()
    for body in re.findall(r"\{([^}]*)\}", text):
        labels |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", body))
    text = re.sub(r"\{[^}]*\}", " ", text)
    for clause in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        labels |= {w.strip() for w in clause.split(",") if w.strip()}
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r" \1 ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    m = re.fullmatch(r"\s*label_values\(\s*(\w+)?\s*,?\s*(\w+)\s*\)\s*", text)
    if m:  # Grafana: label_values(metric{...}, label)
        return ({m.group(1)} if m.group(1) else set()), labels | {m.group(2)}
    words = set(re.findall(r"\b[a-zA-Z_:][\w:]*\b", text))
    functions = set(re.findall(r"\b([a-zA-Z_]\w*)\s*\(", text))
    unknown = functions - PROMQL_WORDS
    assert not unknown, f"unknown PromQL functions {unknown} in {expr!r}: extend PROMQL_WORDS if real"
    metrics = {w for w in words - PROMQL_WORDS - functions if not re.fullmatch(r"e\d*|inf|nan", w, re.I)}
    return metrics, labels


def dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r}", target["expr"]))
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            out.append((f"variable {var['name']}", q))
    return out


def alert_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [(f"alert {r['alert']}", r["expr"]) for g in rules["groups"] for r in g["rules"]]


@pytest.mark.parametrize("where,expr", dashboard_exprs() + alert_exprs())
def test_every_metric_and_label_exists(where: str, expr: str) -> None:
    shapes = golden() | SYNTHETIC
    metrics, labels = analyse(expr)
    assert metrics, f"{where}: no metric found in {expr!r}"
    missing = metrics - shapes.keys()
    assert not missing, f"{where}: {sorted(missing)} not in tests/proxy/metrics.golden"
    allowed = set().union(*(shapes[m] for m in metrics)) | TARGET_LABELS
    assert labels <= allowed, f"{where}: labels {sorted(labels - allowed)} are on none of {sorted(metrics)}"


def test_analyser_catches_drift() -> None:
    metrics, labels = analyse('sum by (route, codee) (rate(gateway_request_total{code=~"5.."}[5m]))')
    assert metrics == {"gateway_request_total"} and labels == {"route", "codee", "code"}
    assert "gateway_request_total" not in golden()


def test_dashboard_covers_every_spec_metric() -> None:
    used = set()
    for _, expr in dashboard_exprs():
        used |= analyse(expr)[0]
    for metric in SPEC_METRICS:
        assert any(u == metric or u.startswith(metric + "_") for u in used), f"dashboard shows no {metric}"


def test_dashboard_is_importable() -> None:
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"] and dash["schemaVersion"] >= 36
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"


def test_alerts_the_issue_asks_for() -> None:
    rules = {r["alert"]: r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    for name in ("GatewayJWKSRefreshFailing", "GatewayNotReady", "GatewayDown", "GatewayVerificationLatencyHigh",
                 "GatewayUpstream5xxRatioHigh", "GatewayConfigReloadFailing"):
        assert name in rules
        assert rules[name]["labels"]["severity"] in ("warning", "critical")
        assert rules[name]["annotations"]["summary"]
    assert 'code=~"502|504"' in rules["GatewayUpstream5xxRatioHigh"]["expr"]
    assert "gateway_jwt_verify_seconds_bucket" in rules["GatewayVerificationLatencyHigh"]["expr"]
    # Every alert is exercised by the promtool unit tests.
    tests = yaml.safe_load((ALERTS.parent / "gateway-alerts.test.yaml").read_text())
    tested = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", [])
              if any(t.get("exp_alerts") or [])}
    assert tested == set(rules), f"alerts without a firing unit test: {set(rules) - tested}"
