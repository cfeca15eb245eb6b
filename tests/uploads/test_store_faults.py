"""The file store failing: counted attempts, then `failed` with the bytes kept, then a re-drive."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pymongo
import pytest
from django.core.management import call_command

from poolhub.filestore import Bucket, file_chunks, file_write, mongo_db
from poolhub.redis import redis_client
from tests.uploads.conftest import gridfs_counts, payload, post_upload, staged_keys
from uploads.models import Event, Upload
from uploads.services import StoreOutcome, _attempt_begin, upload_store
from uploads.staging import staging_exists, staging_used_bytes
from uploads.tasks import upload_store as upload_store_task

pytestmark = pytest.mark.django_db


def fail_point(mode: Any, **data: Any) -> None:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(os.environ["MONGO_URL"])
    try:
        command: dict[str, Any] = {"configureFailPoint": "failCommand", "mode": mode}
        if data:
            command["data"] = data
        client.admin.command(command)
    finally:
        client.close()


@pytest.fixture
def store_down() -> Iterator[None]:
    """Every write refused. (tests/uploads/test_e2e.py uses error 91, "shutting down", with a real
    worker; it behaves the same but makes the driver rediscover the server for seconds each try.)"""
    fail_point("alwaysOn", failCommands=["insert"], errorCode=2)
    yield
    fail_point("off")


def event_types(upload: Upload) -> list[str]:
    return list(Event.objects.filter(stream_id=upload.id).order_by("seq").values_list("type", flat=True))


def accept(api, pool, user, data, capture) -> Upload:
    with capture(execute=True):
        response = post_upload(api(user), pool, data)
    assert response.status_code == 202
    return Upload.objects.get(id=response.json()["id"])


def test_store_down_gives_three_attempts_then_failed_with_bytes_kept(
        api, pool, contributor, store_down, django_capture_on_commit_callbacks):
    data = payload(400 * 1024)
    upload = accept(api, pool, contributor, data, django_capture_on_commit_callbacks)
    upload.refresh_from_db()
    assert upload.status == "failed"
    assert upload.attempts == 3
    assert event_types(upload) == ["upload.cached"] + ["upload.storing", "upload.store_failed"] * 3 + [
        "upload.failed"]
    assert staging_exists(key=upload.staging_key)
    assert redis_client().ttl(f"poolhub:staging:{upload.staging_key}:data") == -1  # kept until re-driven
    assert gridfs_counts() == (0, 0)
    body = api(contributor).get(f"/api/v1/uploads/{upload.id}").json()
    assert (body["status"], body["attempts"]) == ("failed", 3)
    assert body["events"][-1]["data"]["status"] == "failed"
    # Still downloadable from staging while failed.
    assert b"".join(api(contributor).get(f"/api/v1/uploads/{upload.id}/content").streaming_content) == data


def test_failed_upload_is_redriven_to_stored_once_the_store_is_back(
        api, pool, contributor, django_capture_on_commit_callbacks):
    data = payload(300 * 1024, seed=2)
    fail_point("alwaysOn", failCommands=["insert"], errorCode=2)
    try:
        upload = accept(api, pool, contributor, data, django_capture_on_commit_callbacks)
    finally:
        fail_point("off")
    upload.refresh_from_db()
    assert upload.status == "failed"
    with django_capture_on_commit_callbacks(execute=True):
        call_command("redrive_uploads", str(upload.id))
    upload.refresh_from_db()
    assert upload.status == "stored"
    assert upload.attempts == 1
    assert event_types(upload)[-3:] == ["upload.redriven", "upload.storing", "upload.stored"]
    assert b"".join(file_chunks(bucket=Bucket.UPLOADS, file_id=upload.id)) == data
    assert staged_keys() == []
    assert staging_used_bytes() == 0
    assert gridfs_counts()[0] == 1


def test_a_transient_failure_is_retried_to_stored(api, pool, contributor, django_capture_on_commit_callbacks):
    data = payload(100 * 1024, seed=3)
    fail_point({"times": 2}, failCommands=["insert"], errorCode=2)  # not retryable by the driver itself
    try:
        upload = accept(api, pool, contributor, data, django_capture_on_commit_callbacks)
    finally:
        fail_point("off")
    upload.refresh_from_db()
    assert upload.status == "stored"
    assert upload.attempts == 3
    assert event_types(upload).count("upload.store_failed") == 2
    assert b"".join(file_chunks(bucket=Bucket.UPLOADS, file_id=upload.id)) == data


def test_orphan_chunks_of_an_interrupted_try_are_removed_first(
        api, pool, contributor, django_capture_on_commit_callbacks):
    data = payload(600 * 1024, seed=4)
    response = post_upload(api(contributor), pool, data)  # accepted, store task not run yet
    upload = Upload.objects.get(id=response.json()["id"])
    chunks = mongo_db()[f"{Bucket.UPLOADS}.chunks"]
    chunks.insert_many([{"files_id": str(upload.id), "n": n, "data": b"garbage" * 100} for n in range(5)])
    assert upload_store(upload_id=upload.id).outcome is StoreOutcome.STORED
    assert b"".join(file_chunks(bucket=Bucket.UPLOADS, file_id=upload.id)) == data
    assert chunks.count_documents({"data": b"garbage" * 100}) == 0


def test_replayed_store_task_is_a_no_op(api, pool, contributor, django_capture_on_commit_callbacks):
    upload = accept(api, pool, contributor, payload(1000, seed=5), django_capture_on_commit_callbacks)
    before = (event_types(upload), gridfs_counts())
    assert upload_store_task.apply(args=(str(upload.id),)).get() == "nothing_to_do"
    upload.refresh_from_db()
    assert upload.status == "stored"
    assert upload.attempts == 1
    assert (event_types(upload), gridfs_counts()) == before


def test_a_lost_last_attempt_fails_unless_the_file_made_it(api, pool, contributor, store_down):
    upload = Upload.objects.get(id=post_upload(api(contributor), pool, payload(5000, seed=6)).json()["id"])
    assert upload_store(upload_id=upload.id).outcome is StoreOutcome.RETRY
    assert upload_store(upload_id=upload.id).outcome is StoreOutcome.RETRY
    assert _attempt_begin(upload_id=upload.id) is not None  # the third try counted, then its worker died
    assert upload_store(upload_id=upload.id).outcome is StoreOutcome.FAILED
    upload.refresh_from_db()
    assert (upload.status, upload.attempts) == ("failed", 3)
    assert staging_exists(key=upload.staging_key)


def test_a_lost_last_attempt_that_wrote_the_file_is_stored(api, pool, contributor,
                                                           django_capture_on_commit_callbacks):
    data = payload(5000, seed=7)
    upload = Upload.objects.get(id=post_upload(api(contributor), pool, data).json()["id"])
    for _ in range(3):
        _attempt_begin(upload_id=upload.id)  # three tries counted; the last one wrote the file and died
    file_write(bucket=Bucket.UPLOADS, file_id=upload.id, filename="x", chunks=[data], metadata={})
    with django_capture_on_commit_callbacks(execute=True):
        assert upload_store(upload_id=upload.id).outcome is StoreOutcome.STORED
    upload.refresh_from_db()
    assert upload.status == "stored"
    assert gridfs_counts()[0] == 1
    assert not staging_exists(key=upload.staging_key)


def test_redrive_refuses_an_upload_that_did_not_fail(api, pool, contributor, capsys):
    upload = Upload.objects.get(id=post_upload(api(contributor), pool, payload(10)).json()["id"])
    with pytest.raises(Exception, match="could not be re-driven"):
        call_command("redrive_uploads", str(upload.id))
