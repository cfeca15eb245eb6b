"""deploy/grafana and deploy/prometheus: they parse, and every query names a series poolhub exports.

The alert rules also go through `promtool check rules` when promtool is installed (Debian's
`prometheus` package has it); a schema check of the rule file runs everywhere.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from poolhub.metrics import metrics_text

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "poolhub.json"
PROMTOOL = shutil.which("promtool")
SERIES = re.compile(r"\b(poolhub_[a-z0-9_]+)")

RULES_SCHEMA = {
    "type": "object", "required": ["groups"], "additionalProperties": False,
    "properties": {"groups": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["name", "rules"], "additionalProperties": False,
        "properties": {
            "name": {"type": "string"}, "interval": {"type": "string"},
            "rules": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["alert", "expr", "labels", "annotations"], "additionalProperties": False,
                "properties": {
                    "alert": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9]*$"},
                    "expr": {"type": "string", "minLength": 1},
                    "for": {"type": "string", "pattern": "^[0-9]+[smhd]$"},
                    "labels": {"type": "object", "required": ["severity"],
                               "properties": {"severity": {"enum": ["info", "warning", "critical"]}}},
                    "annotations": {"type": "object", "required": ["summary", "description", "runbook"]},
                }}},
        }}}},
}


@pytest.fixture
def exported(db: Any) -> set[str]:
    """Every sample name /metrics can carry (counters with `_total`, histograms with their parts)."""
    text = metrics_text().decode()
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        names.add(name)
        if kind == "counter":
            names.add(name if name.endswith("_total") else f"{name}_total")
        if kind == "histogram":
            names.update({f"{name}_bucket", f"{name}_count", f"{name}_sum"})
    return names


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in board["panels"] for target in panel.get("targets", [])]


def test_the_alert_rules_have_the_shape_prometheus_loads() -> None:
    jsonschema.validate(yaml.safe_load(ALERTS.read_text()), RULES_SCHEMA)
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)")
def test_promtool_accepts_the_rules_and_the_compose_config(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    checked = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The compose configuration, with its container paths pointed at this checkout.
    (tmp_path / "token").write_text("example-token")
    config = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    config = config.replace("/etc/prometheus/alerts.yml", str(ALERTS)).replace("/run/secrets/metrics_token",
                                                                              str(tmp_path / "token"))
    (tmp_path / "prometheus.yml").write_text(config)
    checked = subprocess.run([PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_queries_series_poolhub_exports(exported: set[str]) -> None:
    for rule in rules():
        named = set(SERIES.findall(rule["expr"]))
        assert named or rule["expr"].startswith("up{"), rule["alert"]
        assert named <= exported, (rule["alert"], named - exported)


def test_the_alerts_the_issue_asks_for_exist() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in rules()}
    assert "poolhub_upload_store_failures_total" in exprs["PoolhubStoreFailing"]
    assert "poolhub_staging_budget_bytes" in exprs["PoolhubStagingAbove80Percent"]
    assert "0.8" in exprs["PoolhubStagingAbove80Percent"]
    assert "poolhub_celery_queue_length" in exprs["PoolhubQueueGrowing"]
    no_stores = exprs["PoolhubNoStoresWhileUploadsArrive"]
    assert "poolhub_uploads_accepted_total" in no_stores and "poolhub_uploads_stored_total" in no_stores
    assert "poolhub_webhook_deliveries_total" in exprs["PoolhubWebhookFailures"]


def test_every_alert_has_a_runbook_entry() -> None:
    runbook = (ROOT / "docs" / "operations.md").read_text()
    for rule in rules():
        assert f"### {rule['alert']}" in runbook, f"docs/operations.md has no section for {rule['alert']}"
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{rule['alert'].lower()}"


def test_every_dashboard_query_names_series_poolhub_exports(exported: set[str]) -> None:
    queries = dashboard_exprs()
    assert queries
    for title, expr in queries:
        named = set(SERIES.findall(expr))
        assert named, (title, expr)
        assert named <= exported, (title, named - exported)


def test_the_dashboard_covers_ingest_store_failures_staging_sockets_and_rounds() -> None:
    board = json.loads(DASHBOARD.read_text())
    rows = {panel["title"] for panel in board["panels"] if panel["type"] == "row"}
    assert {"Ingest", "Store latency", "Failures", "Staging and queue", "Sockets", "Rounds"} <= rows
    # Every query reads the Prometheus the viewer picks (provisioned in compose, any one when imported).
    datasources = {target["datasource"]["uid"] for panel in board["panels"] for target in panel.get("targets", [])}
    assert datasources == {"${datasource}"}
    [variable] = board["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == ("datasource", "datasource", "prometheus")
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))


def test_the_observability_profile_runs_prometheus_grafana_and_flower_on_files_that_exist() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]

    for name in ("prometheus", "grafana", "flower"):
        assert services[name]["profiles"] == ["observability"], name
        for port in services[name]["ports"]:
            assert port.startswith("127.0.0.1:"), (name, port)
        for volume in services[name].get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    for name in ("web", "worker", "beat", "migrate"):
        assert "profiles" not in services[name]
        assert services[name]["environment"]["LOG_FORMAT"] == "json", name
    assert services["worker"]["environment"]["WORKER_METRICS_PORT"] == "9808"
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert {job["job_name"] for job in scrape["scrape_configs"]} == {"poolhub-web", "poolhub-worker"}
