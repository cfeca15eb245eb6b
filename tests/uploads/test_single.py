"""POST /pools/{pool}/uploads: accepted files are stored byte-exact; every refusal leaves nothing."""

from __future__ import annotations

import pytest

from tests.uploads.conftest import WHEN, payload, post_upload, sha
from uploads.models import Event, Upload
from uploads.storage import upload_file_iter

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("size", [1, 200 * 1024, 10 * 1024 * 1024])
def test_upload_is_stored_byte_exact(api, pool, contributor, size, django_capture_on_commit_callbacks):
    data = payload(size)
    with django_capture_on_commit_callbacks(execute=True):
        response = post_upload(api(contributor), pool, data, sha256=sha(data))
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["size"] == size
    assert body["sha256"] == sha(data)
    assert body["status"] == "cached"
    assert body["timestamp"] == WHEN
    upload = Upload.objects.get(id=body["id"])
    assert upload.status == "stored"
    assert b"".join(upload_file_iter(upload_id=upload.id)) == data
    types = list(Event.objects.filter(stream_id=upload.id).values_list("type", flat=True))
    assert types == ["upload.cached", "upload.storing", "upload.stored"]
