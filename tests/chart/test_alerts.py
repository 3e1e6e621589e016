"""The PrometheusRule: extracted from the rendered chart, checked and unit-tested by promtool."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import HERE, METRIC_NAME, Renderer, exported_series, run

REQUIRED_ALERTS = {
    "SemarizeConnectorLagGrowing",
    "SemarizeConnectorPartitionStuck",
    "SemarizeConnectorCircuitOpen",
    "SemarizeConnectorHalted",
    "SemarizeConnectorDeadLetterRateHigh",
    "SemarizeConnectorDeadLetterRefused",
    "SemarizeConnectorNotConsuming",
    "SemarizeConnectorRateLimited",
    "SemarizeConnectorBrokerUnreachable",
}


def rule_groups(render: Renderer, *extra: str) -> list[dict[str, Any]]:
    groups = render("all-features", *extra).get("PrometheusRule")["spec"]["groups"]
    assert isinstance(groups, list)
    return groups


def alerts(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def test_every_alert_is_there_and_documented(render: Renderer) -> None:
    rules = alerts(rule_groups(render))
    assert set(rules) == REQUIRED_ALERTS
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        # Scoped to this release, so two releases never mix.
        assert 'job="conn-semarize-connector", namespace="semarize"' in rule["expr"], name


def test_alerts_use_only_exported_metrics(render: Renderer) -> None:
    exported = exported_series()
    for name, rule in alerts(rule_groups(render)).items():
        used = set(METRIC_NAME.findall(rule["expr"]))
        assert used, name
        assert used <= exported.keys(), (name, used - exported.keys())


def test_promtool_checks_the_rules(render: Renderer, promtool: Path, tmp_path: Path) -> None:
    """Syntax of every expression and annotation template (with annotations kept)."""
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule_groups(render)}, sort_keys=False))
    proc = run([promtool, "check", "rules", path])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(REQUIRED_ALERTS)} rules found" in proc.stdout


def test_promtool_unit_tests(render: Renderer, promtool: Path, tmp_path: Path) -> None:
    """tests/chart/rules_test.yml against the rendered rules (annotations stripped)."""
    groups = rule_groups(render)
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    shutil.copy(HERE / "rules_test.yml", tmp_path / "rules_test.yml")
    proc = run([promtool, "test", "rules", tmp_path / "rules_test.yml"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_unit_tests_cover_every_alert() -> None:
    spec = yaml.safe_load((HERE / "rules_test.yml").read_text())
    tested: dict[str, set[bool]] = {}
    for case in spec["tests"]:
        for check in case.get("alert_rule_test", []):
            tested.setdefault(check["alertname"], set()).add(bool(check["exp_alerts"]))
    assert set(tested) == REQUIRED_ALERTS
    for name, outcomes in tested.items():
        assert outcomes == {True, False}, f"{name}: needs a firing and a silent case"


def test_alerts_can_be_switched_off_and_tuned(render: Renderer) -> None:
    groups = rule_groups(
        render,
        "--set", "prometheusRule.alerts.rateLimited.enabled=false",
        "--set", "prometheusRule.alerts.lagGrowing.threshold=50000",
        "--set", "prometheusSelector=service=\"x\"",
    )  # fmt: skip
    rules = alerts(groups)
    assert "SemarizeConnectorRateLimited" not in rules
    assert "> 50000" in rules["SemarizeConnectorLagGrowing"]["expr"]
    assert (
        'semarize_connector_consumer_lag{service="x"}'
        in rules["SemarizeConnectorLagGrowing"]["expr"]
    )


@pytest.mark.parametrize("name", ["default", "keda-kafka"])
def test_no_rule_unless_asked(render: Renderer, name: str) -> None:
    assert not render(name).all("PrometheusRule")
