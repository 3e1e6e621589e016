"""helm lint, helm template with every values file, kubernetes-validate --strict, resource lists."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from .conftest import (
    CHART,
    FULLNAME,
    GOOD_VALUES,
    KUBE_VERSION,
    NAMESPACE,
    Renderer,
    run,
)

# Kinds kubernetes-validate has no schema for; each is checked by its own tests.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}
BASE = {
    ("ConfigMap", FULLNAME),
    ("Deployment", FULLNAME),
    ("PodDisruptionBudget", FULLNAME),
    ("Secret", FULLNAME),
    ("Service", FULLNAME),
    ("ServiceAccount", FULLNAME),
}


@pytest.mark.parametrize("name", list(GOOD_VALUES))
def test_helm_lint_strict(helm: Path, name: str) -> None:
    values = GOOD_VALUES[name]
    cmd = [helm, "lint", "--strict", "--kube-version", KUBE_VERSION, "--namespace", NAMESPACE]
    cmd += [CHART] + (["--values", values] if values else [])
    proc = run(cmd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("name", list(GOOD_VALUES))
def test_rendered_manifests_validate_strictly(
    render: Renderer, kubernetes_validate: Path, name: str
) -> None:
    rendered = render(name)
    proc = run([kubernetes_validate, "-k", KUBE_VERSION.rsplit(".", 1)[0], "--strict", "-"],
               stdin=rendered.text)  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    lines = [line for line in output.splitlines() if line.strip()]
    passed = [line for line in lines if line.startswith("INFO") and " passed " in line]
    warned = [line for line in lines if line.startswith("WARN")]
    others = [line for line in lines if line not in passed and line not in warned]
    assert not others, output
    built_in = [d for d in rendered.docs if d["kind"] not in CUSTOM_KINDS]
    assert len(passed) == len(built_in), output
    # Only the custom resources may lack a schema, and nothing else may be warned about.
    for line in warned:
        assert "Couldn't find schema for kind" in line, line
        assert any(f"kind {kind} " in line for kind in CUSTOM_KINDS), line


@pytest.mark.parametrize("breakage", ["unknown field", "wrong type"])
def test_kubernetes_validate_rejects_a_bad_manifest(
    render: Renderer, kubernetes_validate: Path, breakage: str
) -> None:
    """The validator really is strict: an unknown field or a wrong type fails."""
    bad = yaml.safe_load(yaml.safe_dump(render("default").deployment))
    if breakage == "unknown field":
        bad["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
        expected = "httpGett"
    else:
        bad["spec"]["replicas"] = "two"
        expected = "spec.replicas"
    proc = run([kubernetes_validate, "-k", "1.33", "--strict", "-"], stdin=yaml.safe_dump(bad))
    assert proc.returncode != 0
    assert expected in proc.stdout + proc.stderr


def test_default_resources(render: Renderer) -> None:
    assert set(render("default").kinds()) == BASE


def test_all_features_resources(render: Renderer) -> None:
    assert set(render("all-features").kinds()) == BASE | {
        ("ConfigMap", f"{FULLNAME}-dashboard"),
        ("HorizontalPodAutoscaler", FULLNAME),
        ("Ingress", f"{FULLNAME}-webhooks"),
        ("NetworkPolicy", FULLNAME),
        ("PrometheusRule", FULLNAME),
        ("Service", f"{FULLNAME}-webhooks"),
        ("ServiceMonitor", FULLNAME),
    }


def test_existing_secret_creates_no_secret(render: Renderer) -> None:
    kinds = set(render("keda-existing-secret").kinds())
    assert ("Secret", FULLNAME) not in kinds
    assert ("ScaledObject", FULLNAME) in kinds
    assert ("ServiceAccount", FULLNAME) not in kinds
    assert ("PodDisruptionBudget", FULLNAME) not in kinds


def test_everything_is_namespaced_and_labelled(render: Renderer) -> None:
    for doc in render("all-features").docs:
        meta = doc["metadata"]
        assert meta["namespace"] == NAMESPACE, meta["name"]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/name"] == "semarize-connector"
        assert labels["app.kubernetes.io/instance"] == "conn"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


NOTES_PROBE = """apiVersion: v1
kind: ConfigMap
metadata:
  name: notes-under-test
data:
  notes: |-
    {{- tpl (.Files.Get "notes-under-test.txt") . | nindent 4 }}
"""


def render_notes(helm: Path, tmp_path: Path, values: Path | None) -> str:
    """`helm template` never renders NOTES.txt (only an install does, against a cluster): render
    it through tpl in a copy of the chart."""
    chart = tmp_path / "chart"
    if not chart.exists():
        shutil.copytree(CHART, chart)
        shutil.copy(CHART / "templates" / "NOTES.txt", chart / "notes-under-test.txt")
        (chart / "templates" / "notes-under-test.yaml").write_text(NOTES_PROBE)
    cmd = [helm, "template", "conn", chart, "--namespace", NAMESPACE]
    cmd += ["--kube-version", KUBE_VERSION, "--show-only", "templates/notes-under-test.yaml"]
    proc = run([*cmd, *(["--values", values] if values else [])])
    assert proc.returncode == 0, proc.stderr
    return str(yaml.safe_load(proc.stdout)["data"]["notes"])


def test_notes(helm: Path, tmp_path: Path) -> None:
    default = render_notes(helm, tmp_path, GOOD_VALUES["default"])
    assert f"deployment/{FULLNAME}" in default
    assert "WARNING: no API key" in default
    assert "WARNING: neither config.semarize.kit_code" in default
    full = render_notes(helm, tmp_path, GOOD_VALUES["all-features"])
    assert "WARNING" not in full
    assert "https://hooks.example.com/webhooks/semarize" in full
    assert "smz_live_TESTKEY" not in full
    existing = render_notes(helm, tmp_path, GOOD_VALUES["keda-existing-secret"])
    assert "Secret semarize-credentials, key api-key" in existing
    assert "WARNING" not in existing
