"""End to end: a live ASGI server and a real Celery worker store uploads; faults with the real worker."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from django.core.management import call_command

from accounts.tokens import token_pair_issue
from celery_app import app
from poolhub.filestore import GRIDFS_CHUNK_BYTES, Bucket, file_chunks, mongo_db
from tests import live
from tests.uploads.conftest import WHEN, gridfs_counts, payload, post_upload, sha, staged_keys
from tests.uploads.test_store_faults import fail_point
from uploads.models import Event, Upload
from uploads.projections import projections_rebuild
from uploads.staging import staging_exists

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def status_of(upload_id: str) -> str:
    return Upload.objects.get(id=upload_id).status


def wait_status(upload_id: str, status: str, timeout: float = 120) -> Upload:
    live.wait_for(lambda: status_of(upload_id) == status, timeout=timeout, what=f"upload {upload_id} {status}")
    return Upload.objects.get(id=upload_id)


def types(upload: Upload) -> list[str]:
    return list(Event.objects.filter(stream_id=upload.id).order_by("seq").values_list("type", flat=True))


@pytest.fixture
def start_worker(transactional_db: Any) -> Iterator[Callable[..., Any]]:
    """Start real workers with extra environment (fast retries, short locks); all stopped at the end."""
    started: list[Any] = []
    app.conf.task_always_eager = False

    def start(**env: str) -> Any:
        process = live.start_worker(live.child_env(POOLHUB_STORE_RETRY_BASE_SECONDS="1",
                                                   POOLHUB_STORE_LOCK_SECONDS="5", **env))
        started.append(process)
        return process

    yield start
    for process in started:
        live.stop(process)
    app.conf.task_always_eager = True


def test_single_and_batch_stored_by_the_worker_and_downloaded(live_server_url, celery_worker, pool, contributor):
    headers = {"Authorization": f"Bearer {token_pair_issue(user=contributor)['access']}"}
    files = {"one": payload(1, seed=1), "small": payload(200 * 1024, seed=2), "big": payload(10 * 1024 * 1024, seed=3)}
    with httpx.Client(base_url=f"{live_server_url}/api/v1", headers=headers, timeout=120) as client:
        single = client.post(f"/pools/{pool.id}/uploads", data={"timestamp": WHEN, "sha256": sha(files["big"])},
                             files={"file": ("big.bin", files["big"])})
        assert single.status_code == 202, single.text
        manifest = {"items": [{"file": "one", "timestamp": WHEN}, {"file": "small", "timestamp": WHEN}]}
        batch = client.post(f"/pools/{pool.id}/batches", data={"manifest": json.dumps(manifest)},
                            files={name: (f"{name}.bin", files[name]) for name in ("one", "small")})
        assert batch.status_code == 202, batch.text
        expected = {single.json()["id"]: files["big"]}
        expected.update({u["id"]: files[name] for u, name in zip(batch.json()["uploads"], ("one", "small"),
                                                                   strict=True)})
        for upload_id, data in expected.items():
            upload = wait_status(upload_id, "stored")
            assert types(upload) == ["upload.cached", "upload.storing", "upload.stored"]
            content = client.get(f"/uploads/{upload_id}/content")
            assert content.status_code == 200
            assert content.headers["x-content-type-options"] == "nosniff"
            assert content.content == data
    assert staged_keys() == []
    assert projections_rebuild(fix=False) == []


def test_store_down_three_attempts_then_failed_then_redriven(start_worker, api, pool, contributor):
    start_worker()
    data = payload(300 * 1024, seed=4)
    fail_point("alwaysOn", failCommands=["insert"], errorCode=91)
    try:
        upload_id = post_upload(api(contributor), pool, data).json()["id"]
        upload = wait_status(upload_id, "failed")
    finally:
        fail_point("off")
    assert upload.attempts == 3
    assert types(upload).count("upload.store_failed") == 3
    assert staging_exists(key=upload.staging_key)
    assert gridfs_counts() == (0, 0)
    call_command("redrive_uploads", upload_id)
    upload = wait_status(upload_id, "stored")
    assert b"".join(file_chunks(bucket=Bucket.UPLOADS, file_id=upload_id)) == data
    assert not staging_exists(key=upload.staging_key)
    assert projections_rebuild(fix=False) == []


def test_worker_killed_mid_store_leaves_the_file_stored_exactly_once(start_worker, api, pool, contributor):
    data = payload(10 * 1024 * 1024, seed=5)
    chunks = mongo_db()[f"{Bucket.UPLOADS}.chunks"]
    worker = start_worker()
    # Each GridFS insert now takes 300 ms, so the store is caught with some chunks written.
    fail_point("alwaysOn", failCommands=["insert"], blockConnection=True, blockTimeMS=300)
    try:
        upload_id = post_upload(api(contributor), pool, data).json()["id"]
        live.wait_for(lambda: chunks.count_documents({"files_id": upload_id}) >= 3, timeout=60,
                      what="the store to be under way")
        live.stop(worker, sig=signal.SIGKILL)
    finally:
        fail_point("off")
    assert status_of(upload_id) == "cached"
    assert gridfs_counts()[0] == 0  # no files document: the write was cut short
    start_worker()
    # RabbitMQ redelivers the unacknowledged message at once; a Redis broker only after its visibility
    # timeout, so do what beat does for uploads left cached.
    call_command("redrive_uploads", "--stuck", "--older-than", "0")
    upload = wait_status(upload_id, "stored")
    assert upload.attempts == 2  # the killed try counted
    assert gridfs_counts() == (1, -(-len(data) // GRIDFS_CHUNK_BYTES))
    assert b"".join(file_chunks(bucket=Bucket.UPLOADS, file_id=upload_id)) == data
    assert not staging_exists(key=upload.staging_key)
    assert projections_rebuild(fix=False) == []
