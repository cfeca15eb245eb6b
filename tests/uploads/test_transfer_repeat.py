"""A repeated websocket `complete-upload` returns the same upload and drops nothing, also when the
first completion's record was lost (the server stopped between accepting and answering)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from poolhub.filestore import Bucket, file_chunks
from poolhub.redis import redis_client
from tests.uploads.conftest import WHEN, payload
from tests.uploads.test_handoff import broker_down, relay  # noqa: F401 (fixture)
from uploads import transfers
from uploads.models import Upload
from uploads.staging import staging_exists

pytestmark = pytest.mark.django_db


def transfer(user: Any, pool: Any, data: bytes) -> tuple[str, transfers.Writers]:
    writers: transfers.Writers = {}
    started = transfers.transfer_start(user=user, frame={
        "pool": str(pool.id), "size": len(data), "timestamp": WHEN, "sha256": hashlib.sha256(data).hexdigest(),
        "filename": "readings.bin"})
    transfer_id = started["transfer_id"]
    transfers.transfer_write(user=user, writers=writers, frame={
        "transfer_id": transfer_id, "offset": 0, "data": base64.b64encode(data).decode()})
    return transfer_id, writers


def test_completing_twice_after_a_lost_record_keeps_the_uploads_bytes(
        pool, contributor, broker_down, settings, django_capture_on_commit_callbacks):  # noqa: F811
    data = payload(20 * 1024, seed=5)
    transfer_id, writers = transfer(contributor, pool, data)
    state: dict[Any, Any] = redis_client().hgetall(f"{transfers.PREFIX}{transfer_id}")
    with django_capture_on_commit_callbacks(execute=True):
        first = transfers.transfer_complete(user=contributor, frame={"transfer_id": transfer_id}, writers=writers)
    # The server stopped after the accept committed and before it recorded the completion.
    redis_client().delete(f"{transfers.PREFIX}{transfer_id}:done")
    redis_client().hset(f"{transfers.PREFIX}{transfer_id}", mapping=state)
    redis_client().zadd(transfers.DEADLINES, {transfer_id: 4102444800})
    with django_capture_on_commit_callbacks(execute=True):
        again = transfers.transfer_complete(user=contributor, frame={"transfer_id": transfer_id}, writers={})
    assert again["id"] == first["id"]
    upload = Upload.objects.get(id=first["id"])
    assert Upload.objects.count() == 1
    assert staging_exists(key=upload.staging_key)  # its own bytes were not dropped as a duplicate's
    relay(settings, django_capture_on_commit_callbacks, broker_down)
    upload.refresh_from_db()
    assert upload.status == "stored"
    assert b"".join(file_chunks(bucket=Bucket.UPLOADS, file_id=upload.id)) == data


def test_completing_twice_returns_the_same_upload(pool, contributor, broker_down,  # noqa: F811
                                                  django_capture_on_commit_callbacks):
    data = payload(10 * 1024, seed=6)
    transfer_id, writers = transfer(contributor, pool, data)
    with django_capture_on_commit_callbacks(execute=True):
        first = transfers.transfer_complete(user=contributor, frame={"transfer_id": transfer_id}, writers=writers)
        again = transfers.transfer_complete(user=contributor, frame={"transfer_id": transfer_id}, writers=writers)
    assert again["id"] == first["id"]
    assert staging_exists(key=Upload.objects.get(id=first["id"]).staging_key)
