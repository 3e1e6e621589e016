"""Chart tests: helm, promtool and kubernetes-validate from <repo>/.local/bin.

`make chart-tools` installs them. A missing tool fails the tests when CI is set and skips them
(with a message) otherwise.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".local" / "bin"
CHART = REPO / "helm" / "semarize-connector"
HERE = Path(__file__).resolve().parent
VALUES = HERE / "values"
BAD_VALUES = HERE / "bad-values"
KUBE_VERSION = "1.33.0"
RELEASE = "conn"
NAMESPACE = "semarize"
FULLNAME = f"{RELEASE}-semarize-connector"

# Values files rendered by the tests: None is the chart's defaults.
GOOD_VALUES: dict[str, Path | None] = {
    "default": None,
    "all-features": VALUES / "all-features.yaml",
    "keda-existing-secret": VALUES / "keda-existing-secret.yaml",
    "keda-kafka": VALUES / "keda-kafka.yaml",
}


def find_tool(name: str) -> Path:
    path = BIN / name
    if path.is_file() and os.access(path, os.X_OK):
        return path
    message = f"{name} not found in {BIN}: run `make chart-tools` (tools/chart-tools.sh)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def run(cmd: list[str | Path], stdin: str | None = None, timeout: float = 120) -> Any:
    return subprocess.run(
        [str(c) for c in cmd],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def helm() -> Path:
    return find_tool("helm")


@pytest.fixture(scope="session")
def promtool() -> Path:
    return find_tool("promtool")


@pytest.fixture(scope="session")
def kubernetes_validate() -> Path:
    return find_tool("kubernetes-validate")


@dataclass
class Rendered:
    """One `helm template` output, parsed."""

    text: str
    docs: list[dict[str, Any]] = field(default_factory=list)

    def kinds(self) -> list[tuple[str, str]]:
        return sorted((d["kind"], d["metadata"]["name"]) for d in self.docs)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str = FULLNAME) -> dict[str, Any]:
        found = [d for d in self.all(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, got {self.kinds()}"
        return found[0]

    def maybe(self, kind: str, name: str = FULLNAME) -> dict[str, Any] | None:
        found = [d for d in self.all(kind) if d["metadata"]["name"] == name]
        return found[0] if found else None

    @property
    def deployment(self) -> dict[str, Any]:
        return self.get("Deployment")

    @property
    def container(self) -> dict[str, Any]:
        containers = self.deployment["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1
        return containers[0]

    @property
    def config(self) -> dict[str, Any]:
        """The connector's config.yaml from the ConfigMap."""
        data = yaml.safe_load(self.get("ConfigMap")["data"]["config.yaml"])
        assert isinstance(data, dict)
        return data


Renderer = Callable[..., Rendered]


def helm_template(helm: Path, values: Path | None, *extra: str) -> Any:
    cmd: list[str | Path] = [
        helm, "template", RELEASE, CHART, "--namespace", NAMESPACE,
        "--kube-version", KUBE_VERSION,
    ]  # fmt: skip
    if values is not None:
        cmd += ["--values", values]
    return run([*cmd, *extra])


@pytest.fixture(scope="session")
def render(helm: Path) -> Renderer:
    """render(name_or_path, *extra_helm_args) -> Rendered; cached per arguments."""
    cache: dict[tuple[Any, ...], Rendered] = {}

    def _render(values: str | Path | None = "default", *extra: str) -> Rendered:
        path = GOOD_VALUES[values] if isinstance(values, str) else values
        key = (path, extra)
        if key not in cache:
            proc = helm_template(helm, path, *extra)
            assert proc.returncode == 0, proc.stderr
            docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
            cache[key] = Rendered(proc.stdout, docs)
        return cache[key]

    return _render


def exported_series() -> dict[str, str]:
    """Every series name connector/metrics.py exports -> the metric's type.

    Counters as name_total, histograms as name_bucket / name_sum / name_count, gauges as is.
    """
    from connector import metrics

    names: dict[str, str] = {}
    for family in metrics.REGISTRY.collect():
        if family.type == "counter":
            names[f"{family.name}_total"] = "counter"
        elif family.type == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                names[family.name + suffix] = "histogram"
        else:
            names[family.name] = family.type
    return names


METRIC_NAME = re.compile(r"\bsemarize_connector_[a-z0-9_]+")
