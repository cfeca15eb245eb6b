"""A whole round against real processes with LOG_FORMAT=json and shared multiprocess metrics.

The ASGI server and a Celery worker write their logs to files; every line must be one JSON object
with the ids of what it is about, the upload's request id must reach the worker's line that stores
it, no token or password may appear anywhere, and /metrics on the web process must show what the
worker process counted.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from accounts.models import Membership, Pool, Role, User
from tests import live
from tests.ops.scrape import series

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORDS = {"station-1": "sunny-meadow-kettle-4411", "aggregator": "quiet-harbour-lantern-9087"}
FIELDS = {"ts", "level", "logger", "message"}


class Stack:
    """uvicorn and a Celery worker writing JSON logs to files; `stop()` ends both (their
    shutdown lines are part of what is checked)."""

    def __init__(self, tmp_path: Path) -> None:
        from celery_app import app

        # Store kicks that earlier tests' servers left in the queue would make this worker store
        # the upload in their batch, under their request id: start from an empty queue.
        app.control.purge()
        metrics_dir = tmp_path / "metrics"
        metrics_dir.mkdir()
        env = live.child_env(LOG_FORMAT="json", LOG_LEVEL="INFO", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
                             POOLHUB_FAST_PASSWORD_HASHER="1")
        self.web_log, self.worker_log = tmp_path / "web.log", tmp_path / "worker.log"
        self.processes: list[Any] = []
        with self.web_log.open("wb") as web_out, self.worker_log.open("wb") as worker_out:
            web, self.url = live.start_web(env, log_level="info", output=web_out)
            self.processes.append(web)
            self.processes.append(live.start_worker(env, log_level="INFO", output=worker_out))

    def stop(self) -> None:
        for process in reversed(self.processes):
            live.stop(process)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = Stack(tmp_path)
    try:
        yield running
    finally:
        running.stop()


def _records(path: Path) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"{path.name} line {number} is not JSON: {line!r}")
        assert isinstance(record, dict), line
        assert set(record) >= FIELDS, line
        datetime.fromisoformat(record["ts"])
        records.append(record)
    return records


def _login(http: httpx.Client, username: str) -> dict[str, str]:
    response = http.post("/api/v1/auth/login", json={"username": username, "password": PASSWORDS[username]})
    assert response.status_code == 200, response.text
    return {"access": response.json()["access"], "refresh": response.json()["refresh"]}


def test_a_round_logs_json_lines_with_ids_and_no_secrets(stack: Stack) -> None:
    url, web_log, worker_log = stack.url, stack.web_log, stack.worker_log
    pool = Pool.objects.create(name="json-logs", window_seconds=3600, grace_seconds=60)
    users = {name: User.objects.create_user(username=name, password=password) for name, password in PASSWORDS.items()}
    Membership.objects.create(pool=pool, user=users["station-1"], role=Role.CONTRIBUTOR)
    Membership.objects.create(pool=pool, user=users["aggregator"], role=Role.EXPORTER)
    request_id = f"round-{uuid.uuid4()}"
    data = b"PHUB-UPDATE\x00" + hashlib.sha256(b"json-logs").digest() * 2000
    when = (datetime.now(UTC) - timedelta(minutes=5)).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    secrets: list[str] = list(PASSWORDS.values())

    with httpx.Client(base_url=url, timeout=60) as http:
        station = _login(http, "station-1")
        aggregator = _login(http, "aggregator")
        secrets += [*station.values(), *aggregator.values()]
        sent = http.post(f"/api/v1/pools/{pool.id}/uploads",
                         headers={"Authorization": f"Bearer {station['access']}", "X-Request-ID": request_id},
                         data={"timestamp": when, "sha256": hashlib.sha256(data).hexdigest()},
                         files={"file": ("update.bin", data, "application/octet-stream")})
        assert sent.status_code == 202, sent.text
        assert sent.headers["X-Request-ID"] == request_id
        upload = sent.json()

        def stored() -> bool:
            got = http.get(f"/api/v1/uploads/{upload['id']}", headers={"Authorization": f"Bearer {station['access']}"})
            return bool(got.json()["status"] == "stored")

        live.wait_for(stored, timeout=60, what="the upload to be stored")
        exporter = {"Authorization": f"Bearer {aggregator['access']}"}
        group = upload["group"]
        closed = http.post(f"/api/v1/groups/{group}/close", headers=exporter)
        assert closed.status_code == 200, closed.text
        assert closed.headers["X-Request-ID"] != request_id  # a new request gets a new id
        lease = http.post(f"/api/v1/groups/{group}/claim", headers=exporter).json()["lease_id"]
        archive = http.get(f"/api/v1/groups/{group}/archive", params={"lease": lease}, headers=exporter)
        assert archive.status_code == 200
        result = http.post(f"/api/v1/groups/{group}/result", headers=exporter, data={"lease_id": lease},
                           files={"file": ("result.bin", b"PHUB-RESULT\x00" + data[:5000], "application/octet-stream")})
        assert result.status_code == 201, result.text
        latest = http.get(f"/api/v1/pools/{pool.id}/results/latest",
                          headers={"Authorization": f"Bearer {station['access']}"})
        assert latest.status_code == 200
        with connect(url.replace("http://", "ws://") + "/ws/", open_timeout=30) as socket:
            socket.send(json.dumps({"type": "connect", "access_token": station["access"]}))
            assert json.loads(socket.recv(timeout=30))["type"] == "connected"
            while_open = series(http.get("/metrics").text)
        live.wait_for(lambda: series(http.get("/metrics").text)["poolhub_websocket_connections"] == 0,
                      what="the closed socket to be counted out")
        refreshed = http.post("/api/v1/auth/refresh", json={"refresh": station["refresh"]})
        assert refreshed.status_code == 200
        secrets += [refreshed.json()["access"], refreshed.json()["refresh"]]
        assert http.post("/api/v1/auth/logout", json={"refresh": refreshed.json()["refresh"]},
                         headers={"Authorization": f"Bearer {refreshed.json()['access']}"}).status_code == 204
        metrics = series(http.get("/metrics").text)
    stack.stop()

    # /metrics on the web process adds up what every process counted: the worker stored the upload.
    assert metrics["poolhub_uploads_accepted_total"] >= 1
    assert metrics["poolhub_uploads_stored_total"] >= 1
    assert metrics["poolhub_upload_store_seconds_count"] >= 1
    assert metrics['poolhub_celery_tasks_total{outcome="success",task="uploads_store_pending"}'] >= 1
    assert metrics["poolhub_results_total"] >= 1
    assert metrics["poolhub_broadcast_seconds_count"] >= 1
    upload_view = 'poolhub_http_requests_total{method="POST",status="202",view="api/v1/pools/<uuid:pool_id>/uploads"}'
    assert metrics[upload_view] == 1
    assert while_open["poolhub_websocket_connections"] == 1

    live_web, live_worker = _records(web_log), _records(worker_log)
    text = web_log.read_text() + worker_log.read_text()
    for secret in secrets:
        assert secret not in text
    assert "eyJ" not in text  # no JWT, whole or in part

    upload_lines = [r for r in live_web if r.get("request_id") == request_id]
    assert upload_lines, "the upload request's lines carry its request id"
    access = [r for r in upload_lines if r["logger"] == "uvicorn.access"]
    assert len(access) == 1, upload_lines
    assert access[0]["status"] == 202
    assert access[0]["user_id"] == str(users["station-1"].id)
    assert access[0]["pool_id"] == str(pool.id)
    assert access[0]["upload_id"] == upload["id"]
    group_lines = [r for r in live_web if r["logger"] == "uvicorn.access" and "/close" in r["message"]]
    assert group_lines and group_lines[0]["group_id"] == group

    # The worker's line for the event that stored it carries the request id of the upload's POST.
    store = [r for r in live_worker if r["logger"] == "poolhub.events" and r["message"] == "upload.stored"]
    assert [r["upload_id"] for r in store] == [upload["id"]]
    assert store[0]["request_id"] == request_id
    assert store[0]["task_id"] and store[0]["pool_id"] == str(pool.id) and store[0]["group_id"] == group
    accepted = [r for r in live_web if r["logger"] == "poolhub.events" and r["message"] == "upload.cached"]
    assert [(r["upload_id"], r["request_id"], r["user_id"]) for r in accepted] == [
        (upload["id"], request_id, str(users["station-1"].id))]
    task_lines = [r for r in live_worker if r.get("task_id") == store[0]["task_id"]]
    assert all(r.get("request_id") == request_id for r in task_lines), task_lines
    assert any("Warm shutdown" in r["message"] for r in live_worker)  # printed by a signal handler, as JSON
