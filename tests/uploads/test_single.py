"""POST /pools/{pool}/uploads: accepted files are stored byte-exact; every refusal leaves nothing."""

from __future__ import annotations

import pytest

from poolhub.filestore import Bucket, file_chunks
from tests.conftest import error_code
from tests.uploads.conftest import WHEN, assert_nothing_left, payload, post_upload, sha
from uploads.models import Event, Upload

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
    assert b"".join(file_chunks(bucket=Bucket.UPLOADS, file_id=upload.id)) == data
    types = list(Event.objects.filter(stream_id=upload.id).values_list("type", flat=True))
    assert types == ["upload.cached", "upload.storing", "upload.stored"]


ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00" + b"\x00" * 200
PE = b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 52 + b"\x80\x00\x00\x00" + b"\x00" * 64 + b"PE\x00\x00" + b"\x00" * 100
MACHO = b"\xcf\xfa\xed\xfe\x07\x00\x00\x01" + b"\x00" * 200


@pytest.mark.parametrize(("data", "name"), [
    (ELF, "weights.bin"),
    (PE, "model.dat"),
    (MACHO, "update.bin"),
    (b"#!/bin/sh\nrm -rf /\n", "notes.txt"),
    (b"<?php system($_GET['c']); ?>", "image.png"),
    (b"<!DOCTYPE html><html><script>alert(1)</script></html>", "readme.txt"),
    (b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>", "chart.csv"),
    (b"const x = require('child_process');\n", "data.json"),
    (b"import os\nos.system('id')\n", "data.csv"),
], ids=["elf", "pe", "macho", "shebang", "php", "html", "svg", "js", "python"])
def test_executables_and_scripts_are_refused_whatever_their_name(api, pool, contributor, data, name):
    response = post_upload(api(contributor), pool, data, name=name)
    assert response.status_code == 415
    assert error_code(response) == "forbidden_type"
    assert_nothing_left()


def test_pool_allowed_types_decide_from_the_content(api, pool, contributor, django_capture_on_commit_callbacks):
    pool.allowed_types = ["image/png"]
    pool.save()
    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + payload(500)
    refused = post_upload(api(contributor), pool, b"just text, named like a picture\n", name="photo.png")
    assert refused.status_code == 415
    assert error_code(refused) == "forbidden_type"
    assert_nothing_left()
    with django_capture_on_commit_callbacks(execute=True):
        accepted = post_upload(api(contributor), pool, png, name="photo.dat")
    assert accepted.status_code == 202
    assert accepted.json()["content_type"] == "image/png"


def test_empty_file_is_refused(api, pool, contributor):
    response = post_upload(api(contributor), pool, b"")
    assert response.status_code == 400
    assert error_code(response) == "empty_file"
    assert_nothing_left()


def test_missing_file_is_refused(api, pool, contributor):
    response = api(contributor).post(f"/api/v1/pools/{pool.id}/uploads", {"timestamp": WHEN}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "file"
    assert_nothing_left()


def test_file_over_the_pool_limit_is_refused(api, pool, contributor):
    pool.max_file_bytes = 300 * 1024
    pool.save()
    response = post_upload(api(contributor), pool, payload(300 * 1024 + 1))
    assert response.status_code == 413
    assert error_code(response) == "file_too_large"
    assert_nothing_left()


def test_file_at_the_pool_limit_is_accepted(api, pool, contributor):
    pool.max_file_bytes = 300 * 1024
    pool.save()
    assert post_upload(api(contributor), pool, payload(300 * 1024)).status_code == 202


def test_file_over_the_server_limit_is_refused(api, pool, contributor, settings):
    settings.POOLHUB_MAX_FILE_BYTES = 1000
    response = post_upload(api(contributor), pool, payload(1001))
    assert response.status_code == 413
    assert error_code(response) == "file_too_large"
    assert_nothing_left()


def test_declared_checksum_must_match(api, pool, contributor):
    data = payload(5000)
    response = post_upload(api(contributor), pool, data, sha256=sha(b"something else"))
    assert response.status_code == 400
    assert error_code(response) == "checksum_mismatch"
    assert_nothing_left()


def test_malformed_checksum_is_refused(api, pool, contributor):
    response = post_upload(api(contributor), pool, payload(10), sha256="xyz")
    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "sha256"
    assert_nothing_left()


@pytest.mark.parametrize("timestamp", [None, "", "yesterday", "2026-11-28T10:15:00", "2026-13-01T00:00:00Z",
                                       "2999-01-01T00:00:00Z"],
                         ids=["missing", "blank", "unparseable", "no-offset", "bad-month", "far-future"])
def test_bad_timestamps_are_refused(api, pool, contributor, timestamp):
    response = post_upload(api(contributor), pool, payload(100), timestamp=timestamp)
    assert response.status_code == 400
    assert error_code(response) == "invalid_timestamp"
    assert_nothing_left()


def test_timestamp_with_an_offset_is_stored_in_utc(api, pool, contributor):
    response = post_upload(api(contributor), pool, payload(100), timestamp=WHEN.replace("Z", "+00:00"))
    assert response.status_code == 202
    assert response.json()["timestamp"] == WHEN


@pytest.mark.parametrize("persona", ["listener", "exporter"])
def test_members_without_an_upload_role_get_403(api, pool, persona, request):
    user = request.getfixturevalue(persona)
    response = post_upload(api(user), pool, payload(100))
    assert response.status_code == 403
    assert error_code(response) == "forbidden"
    assert_nothing_left()


def test_manager_may_upload(api, pool, manager):
    assert post_upload(api(manager), pool, payload(100)).status_code == 202


def test_outsider_gets_404_like_an_unknown_pool(api, pool, outsider, other_pool):
    response = post_upload(api(outsider), pool, payload(100))
    assert response.status_code == 404
    assert error_code(response) == "not_found"
    other_pool.id = "00000000-0000-0000-0000-000000000000"
    missing = post_upload(api(outsider), other_pool, payload(100))
    assert missing.status_code == 404
    assert_nothing_left()


def test_anonymous_gets_401(api, pool):
    response = post_upload(api(None), pool, payload(100))
    assert response.status_code == 401
    assert_nothing_left()


def test_same_file_and_timestamp_returns_the_existing_upload(api, pool, contributor):
    data = payload(2000)
    first = post_upload(api(contributor), pool, data)
    second = post_upload(api(contributor), pool, data, name="renamed.bin")
    assert second.status_code == 202
    assert second.json()["id"] == first.json()["id"]
    assert Upload.objects.count() == 1
    assert Event.objects.filter(type="upload.cached").count() == 1


def test_upload_joins_its_window_group(api, pool, contributor):
    body = post_upload(api(contributor), pool, payload(100)).json()
    upload = Upload.objects.get(id=body["id"])
    assert body["group"] == str(upload.group_id)
    assert upload.group is not None
    assert upload.group.window_start <= upload.timestamp < upload.group.window_end
