"""deploy/k8s: every overlay renders and every manifest is valid for the pinned Kubernetes version.

Rendering: `kubectl kustomize` (kustomize built into kubectl) where kubectl is installed. Without
it, the overlay tests are skipped, and every manifest file is still validated on its own (so a
machine without kubectl checks the base's schema, not the overlays' patches). Validation:
kubernetes-validate's bundled OpenAPI schemas, strict (unknown fields are errors); KEDA's custom
resources, which it has no schema for, against the fields KEDA requires.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.33.0"  # the oldest Kubernetes the manifests are written for
OVERLAYS = ["small", "large", "keda"]
KUBECTL = shutil.which("kubectl")
PATCHES = {Path("overlays/large/resources.yaml")}

# The parts of KEDA's CRDs (keda.sh/v1alpha1) that a ScaledObject here must get right.
KEDA_SCHEMAS: dict[str, dict[str, Any]] = {
    "ScaledObject": {
        "type": "object", "required": ["spec"],
        "properties": {"spec": {
            "type": "object", "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"]},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["type", "metadata"],
                    "properties": {"metadata": {"type": "object",
                                                "additionalProperties": {"type": "string"}}}}},
            }}},
    },
    "TriggerAuthentication": {
        "type": "object", "required": ["spec"],
        "properties": {"spec": {"type": "object", "properties": {"secretTargetRef": {
            "type": "array", "items": {"type": "object", "required": ["parameter", "name", "key"]}}}}},
    },
}


@functools.cache
def _kustomize(overlay: str) -> str:
    assert KUBECTL is not None
    return subprocess.run([KUBECTL, "kustomize", str(K8S / "overlays" / overlay)], check=True,
                          capture_output=True, text=True, timeout=120).stdout


def render(overlay: str) -> list[dict[str, Any]]:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed: overlays are not rendered (each file is still validated)")
    return [doc for doc in yaml.safe_load_all(_kustomize(overlay)) if doc]


def validate(doc: dict[str, Any]) -> None:
    if doc["apiVersion"].startswith("keda.sh/"):
        jsonschema.validate(doc, KEDA_SCHEMAS[doc["kind"]])
        return
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc["spec"]["template"]["spec"]
            for doc in docs if doc["kind"] in ("Deployment", "Job")}


def manifest_files() -> list[Path]:
    return sorted(path for path in K8S.rglob("*.yaml") if path.name != "kustomization.yaml")


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_file_is_valid_on_its_own(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        if path.relative_to(K8S) in PATCHES:
            continue  # a partial object: only meaningful rendered (test_overlays_render_and_validate)
        validate(doc)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_render_and_validate(overlay: str) -> None:
    docs = render(overlay)

    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Service", "Ingress", "ConfigMap", "Job", "PodDisruptionBudget"} <= kinds
    for doc in docs:
        validate(doc)
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "poolhub", doc["metadata"]
    assert "Secret" not in kinds, "secrets are created by the operator, never shipped in an overlay"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_web_worker_and_beat_are_shaped_for_production(overlay: str) -> None:
    docs = render(overlay)
    deployments = by_kind(docs, "Deployment")
    web, worker, beat = (deployments[f"poolhub-{name}"] for name in ("web", "worker", "beat"))

    assert web["spec"]["replicas"] >= 2
    container = web["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "preStop" in container["lifecycle"]
    assert "--timeout-graceful-shutdown" in " ".join(container["command"])
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 360  # the store task's limit
    for name, spec in pod_specs(docs).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["automountServiceAccountToken"] is False, name
        for box in spec.get("initContainers", []) + spec["containers"]:
            assert box["securityContext"]["readOnlyRootFilesystem"] is True, (name, box["name"])
            assert box["securityContext"]["allowPrivilegeEscalation"] is False, (name, box["name"])
            assert box["resources"]["requests"]["cpu"] and box["resources"]["limits"]["memory"], (name, box["name"])
            assert {ref.get("configMapRef", ref.get("secretRef", {})).get("name") for ref in box["envFrom"]} == {
                "poolhub-config", "poolhub-secrets"}, (name, box["name"])
    for name in ("poolhub-web", "poolhub-worker", "poolhub-beat"):
        init = pod_specs(docs)[name]["initContainers"][0]
        assert "migrate --check" in " ".join(init["command"]), name
    assert "migrate --noinput" in " ".join(pod_specs(docs)["poolhub-migrate"]["containers"][0]["command"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_scale_by_exactly_one_autoscaler(overlay: str) -> None:
    docs = render(overlay)
    hpas, scaled = by_kind(docs, "HorizontalPodAutoscaler"), by_kind(docs, "ScaledObject")

    targets = [doc["spec"]["scaleTargetRef"]["name"] for doc in [*hpas.values(), *scaled.values()]]
    assert targets.count("poolhub-worker") == 1, targets
    if overlay == "keda":
        trigger = scaled["poolhub-worker"]["spec"]["triggers"][0]
        assert trigger["type"] == "rabbitmq" and trigger["metadata"]["queueName"] == "poolhub"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_disruption_budgets_and_services_select_running_pods(overlay: str) -> None:
    docs = render(overlay)
    pod_labels = [doc["spec"]["template"]["metadata"]["labels"] for doc in docs if doc["kind"] == "Deployment"]

    def selects(selector: dict[str, str]) -> bool:
        return any(selector.items() <= labels.items() for labels in pod_labels)

    for pdb in by_kind(docs, "PodDisruptionBudget").values():
        assert selects(pdb["spec"]["selector"]["matchLabels"]), pdb["metadata"]["name"]
    for service in by_kind(docs, "Service").values():
        assert selects(service["spec"]["selector"]), service["metadata"]["name"]


def _mebibytes(size: str) -> float:
    number, unit = re.fullmatch(r"(\d+)([kmg]?)", size.lower()).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1 / 2**20, "k": 1 / 1024, "m": 1, "g": 1024}[unit]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ingress_carries_64_mib_uploads_and_idle_websockets(overlay: str) -> None:
    ingress = by_kind(render(overlay), "Ingress")["poolhub"]
    notes = ingress["metadata"]["annotations"]

    assert _mebibytes(notes["nginx.ingress.kubernetes.io/proxy-body-size"]) > 64
    assert notes["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 600
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "poolhub-web"


def test_the_config_map_sets_json_logs_and_only_documented_settings() -> None:
    docs = render("small")
    config = by_kind(docs, "ConfigMap")["poolhub-config"]["data"]
    documented = (ROOT / "docs" / "configuration.md").read_text()

    assert config["LOG_FORMAT"] == "json"
    for key in config:
        assert f"`{key}`" in documented, f"{key} is not in docs/configuration.md"


def test_the_secret_is_an_example_without_real_values() -> None:
    [secret] = [doc for doc in yaml.safe_load_all((K8S / "secret.example.yaml").read_text()) if doc]
    validate(secret)
    documented = (ROOT / "docs" / "configuration.md").read_text()

    for key, value in secret["stringData"].items():
        assert "CHANGE-ME" in value, f"{key} must be a placeholder"
        assert f"`{key}`" in documented, f"{key} is not in docs/configuration.md"
