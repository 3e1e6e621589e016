"""What matters in the rendered workload: probes, secrets, grace periods, security, exposure."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import FULLNAME, GOOD_VALUES, REPO, Renderer

ALL_VALUES = list(GOOD_VALUES)
SECRET_VALUES = yaml.safe_load((GOOD_VALUES["all-features"] or Path()).read_text())["secrets"]
CONFIG_PATH = "/etc/semarize-connector/config.yaml"


def env_by_name(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def port_number(container: dict[str, Any], name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    return int(ports[name])


@pytest.mark.parametrize("name", ALL_VALUES)
def test_probes_point_at_the_ops_endpoints(render: Renderer, name: str) -> None:
    rendered = render(name)
    container = rendered.container
    ops_port = rendered.config.get("ops", {}).get("port", 8000)
    assert port_number(container, "ops") == ops_port
    expected = {
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
        "startupProbe": "/healthz",
    }
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] == "ops", probe
    # The readiness probe is not the liveness probe: not ready must not mean restarted.
    assert container["livenessProbe"]["failureThreshold"] >= 3


@pytest.mark.parametrize("name", ALL_VALUES)
def test_the_config_file_is_mounted_where_the_command_reads_it(render: Renderer, name: str) -> None:
    rendered = render(name)
    container = rendered.container
    assert container["args"] == ["run", "--config", CONFIG_PATH]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["config"]["mountPath"] == str(Path(CONFIG_PATH).parent)
    assert mounts["config"]["readOnly"] is True
    volumes = {v["name"]: v for v in rendered.deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == FULLNAME
    assert "config.yaml" in rendered.get("ConfigMap")["data"]


@pytest.mark.parametrize("name", ALL_VALUES)
def test_the_api_key_comes_from_the_secret(render: Renderer, name: str) -> None:
    rendered = render(name)
    env = env_by_name(rendered.container)
    values = yaml.safe_load(GOOD_VALUES[name].read_text()) if GOOD_VALUES[name] else {}
    secrets = values.get("secrets", {})
    secret_name = secrets.get("existingSecret") or FULLNAME
    key = secrets.get("apiKeyKey", "SEMARIZE_API_KEY")
    ref = env["SEMARIZE_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": secret_name, "key": key}
    webhooks = rendered.config.get("webhooks", {}).get("enabled", False)
    if webhooks:
        ref = env["SEMARIZE_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"]
        assert ref == {
            "name": secret_name,
            "key": secrets.get("webhookSecretKey", "SEMARIZE_WEBHOOK_SECRET"),
        }
    else:
        assert "SEMARIZE_WEBHOOK_SECRET" not in env
    salt = env["CONNECTOR_IDEMPOTENCY_SALT"]["valueFrom"]["secretKeyRef"]
    assert salt["name"] == secret_name and salt["optional"] is True
    # No environment variable carries a literal secret.
    for var in env.values():
        if any(word in var["name"].upper() for word in ("KEY", "SECRET", "PASSWORD", "SALT")):
            assert "value" not in var, var


def test_the_created_secret_holds_the_values(render: Renderer) -> None:
    secret = render("all-features").get("Secret")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data == {
        "SEMARIZE_API_KEY": SECRET_VALUES["apiKey"],
        "SEMARIZE_WEBHOOK_SECRET": SECRET_VALUES["webhookSecret"],
        "CONNECTOR_IDEMPOTENCY_SALT": SECRET_VALUES["idempotencySalt"],
    }
    assert secret["type"] == "Opaque"


def test_nothing_secret_outside_the_secret(render: Renderer) -> None:
    rendered = render("all-features")
    secret_texts = [SECRET_VALUES[k] for k in ("apiKey", "webhookSecret", "idempotencySalt")]
    secret_texts += [base64.b64encode(s.encode()).decode() for s in secret_texts]
    for doc in rendered.docs:
        if doc["kind"] == "Secret":
            continue
        text = yaml.safe_dump(doc)
        for secret in secret_texts:
            assert secret not in text, (doc["kind"], doc["metadata"]["name"])
    config = rendered.config
    assert "api_key" not in config.get("semarize", {})
    assert "secret" not in config.get("webhooks", {})
    assert "idempotency_salt" not in config.get("pipeline", {})
    for client in ("consumer", "producer"):
        settings = config["kafka"][client]
        assert settings["sasl.password"] == "${KAFKA_SASL_PASSWORD}"
    env = env_by_name(rendered.container)
    assert env["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "kafka-credentials"


@pytest.mark.parametrize("name", ALL_VALUES)
def test_termination_grace_exceeds_the_shutdown_grace(render: Renderer, name: str) -> None:
    rendered = render(name)
    grace = rendered.config.get("shutdown", {}).get("grace_seconds", 30)
    pod = rendered.deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > grace
    if name == "default":
        assert pod["terminationGracePeriodSeconds"] == grace + 15


def test_termination_grace_follows_the_shutdown_grace(render: Renderer) -> None:
    rendered = render("default", "--set", "config.shutdown.grace_seconds=120")
    pod = rendered.deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 135


@pytest.mark.parametrize("name", ALL_VALUES)
def test_pod_identity_and_hardening(render: Renderer, name: str) -> None:
    rendered = render(name)
    pod = rendered.deployment["spec"]["template"]["spec"]
    container = rendered.container
    env = env_by_name(container)
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_config_changes_roll_the_pods(render: Renderer) -> None:
    def checksum(*extra: str) -> str:
        meta = render("default", *extra).deployment["spec"]["template"]["metadata"]
        return str(meta["annotations"]["checksum/config"])

    assert checksum() != checksum("--set", "config.pipeline.max_in_flight=64")


def test_ops_port_is_never_exposed(render: Renderer) -> None:
    rendered = render("all-features")
    ops_port = rendered.config["ops"]["port"]
    webhook_port = rendered.config["webhooks"]["port"]
    assert port_number(rendered.container, "webhooks") == webhook_port
    ops_service = rendered.get("Service")
    assert ops_service["spec"]["type"] == "ClusterIP"
    # Halted and draining pods are not ready, and must still be scraped.
    assert ops_service["spec"]["publishNotReadyAddresses"] is True
    assert "publishNotReadyAddresses" not in rendered.get("Service", f"{FULLNAME}-webhooks")["spec"]
    assert [p["targetPort"] for p in ops_service["spec"]["ports"]] == ["ops"]
    hooks = rendered.get("Service", f"{FULLNAME}-webhooks")
    assert [(p["port"], p["targetPort"]) for p in hooks["spec"]["ports"]] == [
        (webhook_port, "webhooks")
    ]
    ingress = rendered.get("Ingress", f"{FULLNAME}-webhooks")
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert [p["path"] for p in paths] == ["/webhooks/semarize"]
    for path in paths:
        backend = path["backend"]["service"]
        assert backend == {"name": f"{FULLNAME}-webhooks", "port": {"name": "webhooks"}}
    assert "defaultBackend" not in ingress["spec"]
    assert ingress["spec"]["tls"][0]["hosts"] == ["hooks.example.com"]
    # No Service other than the ClusterIP ops Service reaches the ops port.
    for service in rendered.all("Service"):
        if service["metadata"]["name"] != FULLNAME:
            for port in service["spec"]["ports"]:
                assert port["targetPort"] != "ops" and port["port"] != ops_port


def test_no_webhook_exposure_by_default(render: Renderer) -> None:
    rendered = render("default")
    assert rendered.maybe("Service", f"{FULLNAME}-webhooks") is None
    assert not rendered.all("Ingress")
    assert [p["name"] for p in rendered.container["ports"]] == ["ops"]


def test_monitoring_targets_the_ops_port(render: Renderer) -> None:
    rendered = render("all-features")
    monitor = rendered.get("ServiceMonitor")
    service = rendered.get("Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    hooks = rendered.get("Service", f"{FULLNAME}-webhooks")
    assert not selector.items() <= hooks["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "ops"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


@pytest.mark.parametrize("name", ["default", "all-features", "keda-kafka"])
def test_selectors_match_the_pods(render: Renderer, name: str) -> None:
    rendered = render(name)
    pod_labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    selectors = [rendered.deployment["spec"]["selector"]["matchLabels"]]
    selectors += [s["spec"]["selector"] for s in rendered.all("Service")]
    selectors += [p["spec"]["selector"]["matchLabels"] for p in rendered.all("PodDisruptionBudget")]
    selectors += [n["spec"]["podSelector"]["matchLabels"] for n in rendered.all("NetworkPolicy")]
    for selector in selectors:
        assert selector and selector.items() <= pod_labels.items()


def test_disruption_budget_lets_one_pod_go_at_a_time(render: Renderer) -> None:
    pdb = render("default").get("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    strategy = render("default").deployment["spec"]["strategy"]
    assert strategy["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_autoscalers_are_capped_at_the_partition_count(render: Renderer) -> None:
    hpa = render("all-features").get("HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] == 4  # maxReplicas 10, partitions 4
    assert hpa["spec"]["minReplicas"] == 2
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME,
    }  # fmt: skip
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "semarize_connector_consumer_lag"
    assert "replicas" not in render("all-features").deployment["spec"]

    keda = render("keda-kafka")
    scaled = keda.get("ScaledObject")
    assert scaled["spec"]["maxReplicaCount"] == 3  # maxReplicas 10, partitions 3
    assert scaled["spec"]["minReplicaCount"] == 0
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == "semarize-connector"
    assert trigger["metadata"]["topic"] == "transcripts"
    assert trigger["metadata"]["allowIdleConsumers"] == "false"
    assert trigger["authenticationRef"] == {"name": "kafka-sasl"}
    assert scaled["spec"]["scaleTargetRef"]["name"] == FULLNAME
    assert "replicas" not in keda.deployment["spec"]

    prom = render("keda-existing-secret").get("ScaledObject")
    assert prom["spec"]["maxReplicaCount"] == 12  # maxReplicas 50, partitions 12
    query = prom["spec"]["triggers"][0]["metadata"]["query"]
    assert 'semarize_connector_consumer_lag{job="conn-semarize-connector"' in query


def test_network_policy_opens_only_what_is_needed(render: Renderer) -> None:
    rendered = render("all-features")
    policy = rendered.get("NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    ingress_ports = sorted(p["port"] for rule in policy["ingress"] for p in rule["ports"])
    assert ingress_ports == sorted([rendered.config["ops"]["port"],
                                    rendered.config["webhooks"]["port"]])  # fmt: skip
    assert all(rule.get("from") for rule in policy["ingress"])
    egress_ports = sorted({p["port"] for rule in policy["egress"] for p in rule["ports"]})
    assert egress_ports == [53, 443, 9093]


def test_the_dashboard_configmap_ships_the_dashboard_file(render: Renderer) -> None:
    configmap = render("all-features").get("ConfigMap", f"{FULLNAME}-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Semarize"}
    shipped = configmap["data"]["semarize-connector.json"]
    source = (REPO / "helm/semarize-connector/dashboards/semarize-connector.json").read_text()
    assert shipped == source.rstrip("\n")


@pytest.mark.parametrize("name", ALL_VALUES)
def test_the_connector_accepts_the_rendered_config(
    render: Renderer, name: str, tmp_path: Path
) -> None:
    """`semarize-connector check-config` (static checks only, no connection) on the ConfigMap."""
    if not (REPO / "connector" / "cli.py").exists():
        pytest.skip("connector/cli.py (check-config) is not there yet")
    exe = shutil.which("semarize-connector", path=str(REPO / ".venv" / "bin"))
    if exe is None:
        pytest.skip("semarize-connector is not installed in .venv: run `make install`")
    rendered = render(name)
    path = tmp_path / "config.yaml"
    path.write_text(rendered.get("ConfigMap")["data"]["config.yaml"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEMARIZE_", "CONNECTOR_"))}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    # What the Deployment provides from the Secret, the downward API and extraEnv.
    env |= {"SEMARIZE_API_KEY": "smz_test_key", "SEMARIZE_WEBHOOK_SECRET": "whsec_test",
            "KAFKA_SASL_PASSWORD": "pw", "POD_NAME": "conn-semarize-connector-abc12"}  # fmt: skip
    if not rendered.config.get("semarize", {}).get("kit_code") and not rendered.config.get(
        "semarize", {}
    ).get("kit_version_id"):
        env["SEMARIZE_KIT_CODE"] = "CallRev1"  # the defaults leave the Kit to the user
    proc = subprocess.run(
        [exe, "check-config", "--config", str(path)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "smz_test_key" not in proc.stdout + proc.stderr
