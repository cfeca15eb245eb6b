"""GET /metrics: who may read it, and counters that move when an upload is accepted and stored."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import override_settings
from prometheus_client import REGISTRY

from tests.conftest import error_code
from tests.ops.scrape import series
from tests.uploads.conftest import payload, post_upload
from uploads.models import Upload, UploadStatus

pytestmark = pytest.mark.django_db

OUTSIDE = "203.0.113.9"  # a documentation address: not loopback, not in any default allowance


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(client: Any, **extra: Any) -> Any:
    return client.get("/metrics", **extra)


def test_loopback_reads_metrics_in_prometheus_format(client: Any) -> None:
    response = scrape(client)  # the test client's address is 127.0.0.1

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    body = response.content.decode()
    for name in ["poolhub_uploads_accepted_total", "poolhub_uploads_stored_total", "poolhub_uploads_failed_total",
                 "poolhub_upload_store_seconds_bucket", "poolhub_staging_bytes", "poolhub_staging_budget_bytes",
                 "poolhub_websocket_connections", "poolhub_groups{status=\"open\"}",
                 "poolhub_celery_queue_length", "poolhub_webhook_deliveries_by_status"]:
        assert name in body, name


@pytest.mark.parametrize("headers", [{}, {"HTTP_AUTHORIZATION": "Bearer wrong-token"},
                                     {"HTTP_AUTHORIZATION": "Basic c2NyYXBlcjpzM2NyZXQ="}])
@override_settings(METRICS_TOKEN="metrics-token-for-tests")
def test_outside_the_allowed_networks_without_the_token_is_404(client: Any, headers: dict[str, str]) -> None:
    response = scrape(client, REMOTE_ADDR=OUTSIDE, **headers)

    assert response.status_code == 404
    assert error_code(response) == "not_found"
    assert b"poolhub_" not in response.content


@override_settings(METRICS_TOKEN="metrics-token-for-tests")
def test_the_token_opens_metrics_from_anywhere(client: Any) -> None:
    response = scrape(client, REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION="Bearer metrics-token-for-tests")

    assert response.status_code == 200
    assert b"poolhub_uploads_accepted_total" in response.content


def test_a_proxied_request_does_not_pass_on_the_proxy_address(client: Any) -> None:
    """Through an ingress or reverse proxy on an allowed address, only the token opens /metrics."""
    assert scrape(client, HTTP_X_FORWARDED_FOR=OUTSIDE).status_code == 404


@override_settings(METRICS_ALLOWED_CIDRS=["203.0.113.0/24"])
def test_allowed_networks_are_configurable(client: Any) -> None:
    assert scrape(client, REMOTE_ADDR=OUTSIDE).status_code == 200
    assert scrape(client).status_code == 404  # loopback is no longer in the list


def test_an_upload_moves_accepted_stored_and_the_store_histogram(api: Any, pool: Any, contributor: Any,
                                                               client: Any,
                                                               django_capture_on_commit_callbacks: Any) -> None:
    before = series(scrape(client).content.decode())

    with django_capture_on_commit_callbacks(execute=True):  # the store task runs inline, on commit
        response = post_upload(api(contributor), pool, payload(50_000, seed=13))

    assert response.status_code == 202, response.content
    assert Upload.objects.get(id=response.json()["id"]).status == UploadStatus.STORED
    after = series(scrape(client).content.decode())
    for name in ["poolhub_uploads_accepted_total", "poolhub_uploads_stored_total",
                 "poolhub_upload_store_seconds_count", "poolhub_upload_store_attempts_total"]:
        assert after[name] == before[name] + 1, name
    assert after["poolhub_uploads_failed_total"] == before["poolhub_uploads_failed_total"]
    assert after['poolhub_events_total{type="upload.stored"}'] == before.get(
        'poolhub_events_total{type="upload.stored"}', 0) + 1
    view = 'poolhub_http_requests_total{method="POST",status="202",view="api/v1/pools/<uuid:pool_id>/uploads"}'
    assert after[view] == before.get(view, 0) + 1
    assert after['poolhub_groups{status="open"}'] == 1


def test_a_refused_upload_counts_as_a_request_but_not_as_accepted(api: Any, pool: Any, contributor: Any,
                                                                 client: Any) -> None:
    accepted = sample("poolhub_uploads_accepted_total")

    response = post_upload(api(contributor), pool, b"")

    assert response.status_code == 400
    assert sample("poolhub_uploads_accepted_total") == accepted
    assert sample("poolhub_http_requests_total", view="api/v1/pools/<uuid:pool_id>/uploads", method="POST",
                  status="400") >= 1


def _worker_scrape(**environ: str) -> tuple[str, bytes]:
    from poolhub.metrics import _worker_metrics_app

    seen: list[str] = []
    body = b"".join(_worker_metrics_app({"PATH_INFO": "/metrics", "REMOTE_ADDR": "127.0.0.1", **environ},
                                        lambda status, headers: seen.append(status)))
    return seen[0], body


@override_settings(METRICS_TOKEN="metrics-token-for-tests")
def test_the_worker_metrics_port_follows_the_same_rule() -> None:
    assert _worker_scrape()[0] == "200 OK"
    assert b"poolhub_uploads_stored_total" in _worker_scrape()[1]
    assert _worker_scrape(REMOTE_ADDR=OUTSIDE)[0].startswith("404")
    assert _worker_scrape(REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION="Bearer metrics-token-for-tests")[0] == "200 OK"
    assert _worker_scrape(HTTP_X_FORWARDED_FOR=OUTSIDE)[0].startswith("404")
    assert _worker_scrape(PATH_INFO="/other")[0].startswith("404")
    assert json.loads(_worker_scrape(PATH_INFO="/other")[1]) == {
        "error": {"code": "not_found", "message": "no such endpoint", "details": {}}}


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_probes_and_scrapes_by_pod_address_are_answered(client: Any, path: str) -> None:
    """Kubelet and Prometheus send `Host: <pod ip>:8000`, which ALLOWED_HOSTS does not list."""
    response = client.get(path, HTTP_HOST="10.1.2.3:8000")

    assert response.status_code == 200, response.content


def test_other_paths_still_refuse_an_unknown_host(client: Any) -> None:
    assert client.get("/api/v1/auth/validate", HTTP_HOST="10.1.2.3:8000").status_code == 400
