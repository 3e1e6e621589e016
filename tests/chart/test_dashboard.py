"""The Grafana dashboard: structure, units, datasource variable, $__rate_interval, and every
query parsed by promtool (each written as a recording rule)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import CHART, METRIC_NAME, exported_series, run

DASHBOARD = CHART / "dashboards" / "semarize-connector.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# What Grafana substitutes before a query reaches Prometheus.
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$namespace": "semarize",
    "$job": "conn-semarize-connector",
    "$pod": ".*",
}
RANGE_FUNCTIONS = re.compile(r"\b(rate|irate|increase)\(")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found += [panel, *panel.get("panels", [])]
    return [p for p in found if p["type"] != "row"]


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (f"{p['title']}/{t['refId']}", t["expr"]) for p in panels(dashboard) for t in p["targets"]
    ]


def test_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "semarize-connector"
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert "id" not in dashboard or dashboard["id"] is None  # importable anywhere


def test_datasource_variable(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "job", "pod"):
        assert variables[name]["datasource"] == DATASOURCE
        assert METRIC_NAME.findall(variables[name]["definition"])
    assert variables["pod"]["includeAll"] is True and variables["pod"]["multi"] is True


def test_every_panel_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_every_panel_has_a_unit_and_a_description(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
        assert panel.get("description"), panel["title"]


def test_rates_use_rate_interval(dashboard: dict[str, Any]) -> None:
    for where, expr in queries(dashboard):
        for match in RANGE_FUNCTIONS.finditer(expr):
            depth, end = 1, match.end()
            while depth:
                depth += {"(": 1, ")": -1}.get(expr[end], 0)
                end += 1
            assert expr[match.end() : end - 1].endswith("[$__rate_interval]"), where
        assert not re.search(r"\[\d+[smhdwy]\]", expr), f"{where}: fixed range in {expr}"


def test_queries_use_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    exported = exported_series()
    for where, expr in queries(dashboard):
        used = set(METRIC_NAME.findall(expr))
        assert used, where
        assert used <= exported.keys(), (where, used - exported.keys())
        assert 'namespace="$namespace", job="$job", pod=~"$pod"' in expr, where


def test_every_query_parses(dashboard: dict[str, Any], promtool: Path, tmp_path: Path) -> None:
    rules = []
    for index, (where, expr) in enumerate(queries(dashboard)):
        for variable, value in SUBSTITUTIONS.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"{where}: unknown variable in {expr}"
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = run([promtool, "check", "rules", path])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout


def test_layout(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))


def test_covers_what_operators_need(dashboard: dict[str, Any]) -> None:
    """Issue 5 item 4: each required view exists (found by its query)."""
    exprs = [expr for _, expr in queries(dashboard)]
    by_panel = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in panels(dashboard)}

    def has(*fragments: str) -> bool:
        return any(all(f in e for f in fragments) for e in exprs)

    assert has("rate(semarize_connector_records_consumed_total")  # throughput
    assert has("sum by (outcome)", "semarize_connector_records_finished_total")  # outcomes
    for q in ("0.5", "0.95", "0.99"):  # latency percentiles
        assert has(f"histogram_quantile({q}", "semarize_connector_end_to_end_latency_seconds")
    assert any(  # in flight against the concurrency limit, in one panel
        "in_flight_records" in e and "concurrency_limit" in e for e in by_panel.values()
    )
    assert has("by (topic, partition)", "semarize_connector_consumer_lag")  # lag per partition
    assert has("sum by (outcome)", 'outcome!="succeeded"')  # dead letters by kind
    assert has("sum by (status)", "semarize_connector_http_requests_total")  # status mix
    assert has('status="429"')  # 429s
    assert has("semarize_connector_circuit_state")  # circuit state
