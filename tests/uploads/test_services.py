"""Acceptance and storage through the services, as the websocket transfer uses them."""

from __future__ import annotations

import hashlib
import os

import pytest

from poolhub.filestore import Bucket, file_chunks
from tests.uploads.conftest import WHEN_DT as WHEN
from uploads.models import Event, Upload
from uploads.services import StoreOutcome, upload_accept, upload_store
from uploads.staging import StagingWriter, staging_exists, staging_used_bytes


def stage(data: bytes, **kwargs):
    writer = StagingWriter(max_bytes=kwargs.pop("max_bytes", 64 * 1024 * 1024), filename="data.bin", **kwargs)
    for start in range(0, len(data), 100_000):
        writer.write(data[start:start + 100_000])
    return writer.finish()


@pytest.mark.django_db
def test_accepted_upload_is_stored_byte_exact(pool, contributor, django_capture_on_commit_callbacks):
    data = os.urandom(2_500_000)
    staged = stage(data)
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    with django_capture_on_commit_callbacks(execute=True):
        upload = upload_accept(pool=pool, uploader=contributor, staged=staged, timestamp=WHEN, filename="a.bin")
    upload.refresh_from_db()
    assert upload.status == "stored"
    assert upload.attempts == 1
    assert b"".join(file_chunks(bucket=Bucket.UPLOADS, file_id=upload.id)) == data
    assert not staging_exists(key=staged.key)
    assert staging_used_bytes() == 0
    assert list(Event.objects.filter(stream_id=upload.id).values_list("type", flat=True)) == [
        "upload.cached", "upload.storing", "upload.stored"]
    assert upload_store(upload_id=upload.id).outcome is StoreOutcome.NOTHING_TO_DO
    assert Upload.objects.count() == 1
