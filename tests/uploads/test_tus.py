"""tus 1.0.0 in process: the protocol's answers, and every REST check through the completing request."""

from __future__ import annotations

import base64
import hashlib
import time
from datetime import timedelta
from typing import Any

import pytest

from accounts.models import LatePolicy, Membership, Role
from tests.conftest import error_code, make_user
from tests.uploads.conftest import WHEN, WHEN_DT, payload, sha
from uploads.models import Upload
from uploads.staging import staging_used_bytes
from uploads.transfer_limits import transfer_release, transfer_reserve
from uploads.tus import tus_uploads_expire

pytestmark = pytest.mark.django_db

TUS = {"HTTP_TUS_RESUMABLE": "1.0.0"}
OFFSET_STREAM = "application/offset+octet-stream"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def metadata(filename: str | None = "update.bin", timestamp: str | None = WHEN, sha256: str | None = None) -> str:
    pairs = {"filename": filename, "timestamp": timestamp, "sha256": sha256}
    return ",".join(f"{key} {b64(value)}" for key, value in pairs.items() if value is not None)


def create(client: Any, pool: Any, length: int, meta: str | None = None, body: bytes = b"", **headers: str) -> Any:
    extra = {"HTTP_UPLOAD_LENGTH": str(length), "HTTP_UPLOAD_METADATA": meta if meta is not None else metadata(),
             **TUS, **headers}
    if body:
        return client.generic("POST", f"/api/v1/pools/{pool.id}/tus", body, content_type=OFFSET_STREAM, **extra)
    return client.generic("POST", f"/api/v1/pools/{pool.id}/tus", b"", **extra)


def location(response: Any) -> str:
    assert response.status_code == 201, response.content
    return str(response["Location"]).split("testserver", 1)[-1]


def patch(client: Any, url: str, offset: int, body: bytes, **headers: str) -> Any:
    return client.generic("PATCH", url, body, content_type=OFFSET_STREAM, HTTP_UPLOAD_OFFSET=str(offset),
                          **TUS, **headers)


def head(client: Any, url: str) -> Any:
    return client.generic("HEAD", url, **TUS)


def checksum(algorithm: str, body: bytes) -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, body).digest()).decode()}"


def send_all(client: Any, pool: Any, data: bytes, meta: str | None = None, step: int = 300_000) -> Any:
    url = location(create(client, pool, len(data), meta))
    response = None
    for start in range(0, len(data), step):
        response = patch(client, url, start, data[start:start + step])
        if response.status_code != 204:
            return response
    return response


# --- discovery and creation --------------------------------------------------------------------

def test_options_names_the_version_extensions_checksums_and_the_pools_limit(api, pool, contributor):
    pool.max_file_bytes = 5_000_000
    pool.save()
    response = api(contributor).options(f"/api/v1/pools/{pool.id}/tus")
    assert response.status_code == 204
    assert response["Tus-Version"] == "1.0.0"
    assert set(response["Tus-Extension"].split(",")) >= {"creation", "creation-with-upload", "termination",
                                                          "expiration", "checksum"}
    assert response["Tus-Max-Size"] == "5000000"
    assert set(response["Tus-Checksum-Algorithm"].split(",")) == {"sha1", "sha256"}
    assert response["Tus-Resumable"] == "1.0.0"


def test_creation_then_head_then_chunks_complete_an_upload(api, pool, contributor, django_capture_on_commit_callbacks):
    client = api(contributor)
    data = payload(700_000, seed=5)
    created = create(client, pool, len(data), metadata(sha256=sha(data)))
    url = location(created)
    assert url.startswith("/api/v1/tus/")
    assert created["Upload-Expires"].endswith("GMT")
    status = head(client, url)
    assert (status.status_code, status["Upload-Offset"], status["Upload-Length"]) == (200, "0", str(len(data)))
    assert status["Cache-Control"] == "no-store"
    first = patch(client, url, 0, data[:400_000])
    assert (first.status_code, first["Upload-Offset"]) == (204, "400000")
    assert "Poolhub-Upload-Id" not in first
    assert head(client, url)["Upload-Offset"] == "400000"
    with django_capture_on_commit_callbacks(execute=True):
        last = patch(client, url, 400_000, data[400_000:])
    assert (last.status_code, last["Upload-Offset"]) == (204, str(len(data)))
    upload = Upload.objects.get(id=last["Poolhub-Upload-Id"])
    assert (upload.status, upload.size, upload.sha256) == ("stored", len(data), sha(data))
    assert upload.filename == "update.bin"
    assert upload.timestamp == WHEN_DT
    content = api(contributor).get(f"/api/v1/uploads/{upload.id}/content")
    assert b"".join(content.streaming_content) == data
    # The completion is remembered: HEAD (a lost answer) names the upload; nothing is staged twice.
    again = head(client, url)
    assert (again["Upload-Offset"], again["Poolhub-Upload-Id"]) == (str(len(data)), str(upload.id))
    assert staging_used_bytes() == 0


def test_creation_with_upload_completes_a_small_file_in_one_request(api, pool, contributor):
    data = payload(5_000, seed=6)
    response = create(api(contributor), pool, len(data), body=data, HTTP_UPLOAD_CHECKSUM=checksum("sha256", data))
    assert response.status_code == 201
    assert response["Upload-Offset"] == str(len(data))
    assert Upload.objects.get(id=response["Poolhub-Upload-Id"]).sha256 == sha(data)


def test_creation_with_part_of_the_file_is_resumed_by_patch(api, pool, contributor):
    client = api(contributor)
    data = payload(9_000, seed=7)
    response = create(client, pool, len(data), body=data[:4_000])
    assert (response.status_code, response["Upload-Offset"]) == (201, "4000")
    last = patch(client, location(response), 4_000, data[4_000:])
    assert Upload.objects.get(id=last["Poolhub-Upload-Id"]).sha256 == sha(data)


# --- protocol errors ---------------------------------------------------------------------------

def test_a_wrong_upload_checksum_is_460_and_keeps_nothing_of_that_request(api, pool, contributor):
    client = api(contributor)
    data = payload(50_000, seed=8)
    url = location(create(client, pool, len(data)))
    good = patch(client, url, 0, data[:20_000], HTTP_UPLOAD_CHECKSUM=checksum("sha1", data[:20_000]))
    assert (good.status_code, good["Upload-Offset"]) == (204, "20000")
    bad = patch(client, url, 20_000, data[20_000:], HTTP_UPLOAD_CHECKSUM=checksum("sha256", b"other bytes"))
    assert (bad.status_code, error_code(bad)) == (460, "checksum_mismatch")
    assert head(client, url)["Upload-Offset"] == "20000"
    assert staging_used_bytes() == 20_000
    unknown = patch(client, url, 20_000, data[20_000:], HTTP_UPLOAD_CHECKSUM="md5 AAAA")
    assert (unknown.status_code, error_code(unknown)) == (400, "unsupported_checksum")


def test_an_offset_mismatch_is_409(api, pool, contributor):
    client = api(contributor)
    url = location(create(client, pool, 10_000))
    patch(client, url, 0, payload(3_000))
    response = patch(client, url, 0, payload(3_000))
    assert (response.status_code, error_code(response)) == (409, "conflict")
    assert response.json()["error"]["details"]["offset"] == 3_000


def test_a_concurrent_patch_is_409_never_interleaved(api, pool, contributor):
    from poolhub.redis import redis_client

    client = api(contributor)
    url = location(create(client, pool, 10_000))
    tus_id = url.rsplit("/", 1)[-1]
    lock = redis_client().lock(f"poolhub:tus:{tus_id}:lock", timeout=30)  # as a PATCH in flight holds it
    assert lock.acquire(blocking=False)
    try:
        response = patch(client, url, 0, payload(1_000))
        assert (response.status_code, error_code(response)) == (409, "upload_locked")
    finally:
        lock.release()
    assert head(client, url)["Upload-Offset"] == "0"


def test_another_users_head_patch_and_delete_are_404(api, pool, contributor, manager, admin_user):
    url = location(create(api(contributor), pool, 10_000))
    for other in (manager, admin_user):
        assert head(api(other), url).status_code == 404
        assert patch(api(other), url, 0, payload(100)).status_code == 404
        assert api(other).generic("DELETE", url, **TUS).status_code == 404
    assert head(api(contributor), url)["Upload-Offset"] == "0"


def test_termination_releases_the_staged_bytes(api, pool, contributor):
    client = api(contributor)
    url = location(create(client, pool, 10_000))
    patch(client, url, 0, payload(4_000))
    assert staging_used_bytes() == 4_000
    assert client.generic("DELETE", url, **TUS).status_code == 204
    assert staging_used_bytes() == 0
    assert head(client, url).status_code == 404


def test_expiry_releases_the_staged_bytes(api, pool, contributor, settings):
    client = api(contributor)
    url = location(create(client, pool, 10_000))
    patch(client, url, 0, payload(6_000))
    assert staging_used_bytes() == 6_000
    assert tus_uploads_expire(now=time.time() + settings.POOLHUB_TUS_EXPIRY_SECONDS + 1) == 1
    assert staging_used_bytes() == 0
    assert head(client, url).status_code == 404


def test_method_override_and_version_and_content_type(api, pool, contributor):
    client = api(contributor)
    url = location(create(client, pool, 10_000))
    overridden = client.generic("POST", url, payload(1_000), content_type=OFFSET_STREAM, HTTP_UPLOAD_OFFSET="0",
                                HTTP_X_HTTP_METHOD_OVERRIDE="PATCH", **TUS)
    assert (overridden.status_code, overridden["Upload-Offset"]) == (204, "1000")
    no_version = client.generic("HEAD", url)
    assert (no_version.status_code, no_version["Tus-Version"]) == (412, "1.0.0")
    wrong_type = client.generic("PATCH", url, b"x", content_type="text/plain", HTTP_UPLOAD_OFFSET="1000", **TUS)
    assert wrong_type.status_code == 415
    deleted = client.generic("POST", url, b"", HTTP_X_HTTP_METHOD_OVERRIDE="DELETE", **TUS)
    assert deleted.status_code == 204


def test_cors_for_the_configured_origin(api, pool, contributor, settings):
    settings.POOLHUB_TUS_CORS_ORIGINS = ["https://page.example"]
    preflight = api(None).options(f"/api/v1/pools/{pool.id}/tus", HTTP_ORIGIN="https://page.example",
                                  HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST")
    assert preflight.status_code == 204
    assert preflight["Access-Control-Allow-Origin"] == "https://page.example"
    assert "Upload-Offset" in preflight["Access-Control-Allow-Headers"]
    assert "PATCH" in preflight["Access-Control-Allow-Methods"]
    created = create(api(contributor), pool, 100, HTTP_ORIGIN="https://page.example")
    assert created["Access-Control-Allow-Origin"] == "https://page.example"
    assert "Location" in created["Access-Control-Expose-Headers"]
    other = create(api(contributor), pool, 100, HTTP_ORIGIN="https://elsewhere.example")
    assert "Access-Control-Allow-Origin" not in other


# --- every REST check through tus --------------------------------------------------------------

def test_creation_refuses_what_rest_refuses_before_any_byte(api, pool, contributor, listener, outsider):
    pool.max_file_bytes = 1_000
    pool.save()
    cases = [
        (api(contributor), 1_001, metadata(), 413, "file_too_large"),
        (api(contributor), 0, metadata(), 400, "empty_file"),
        (api(contributor), 100, metadata(timestamp=None), 400, "invalid_timestamp"),
        (api(contributor), 100, metadata(timestamp="yesterday"), 400, "invalid_timestamp"),
        (api(contributor), 100, metadata(filename=None), 400, "invalid"),
        (api(contributor), 100, metadata(sha256="abc"), 400, "invalid"),
        (api(listener), 100, metadata(), 403, "forbidden"),
        (api(outsider), 100, metadata(), 404, "not_found"),
        (api(None), 100, metadata(), 401, "not_authenticated"),
    ]
    for client, length, meta, status, code in cases:
        response = create(client, pool, length, meta)
        assert (response.status_code, error_code(response)) == (status, code), (length, meta)
        assert response["Tus-Resumable"] == "1.0.0"
    assert staging_used_bytes() == 0


def test_the_completing_request_refuses_a_forbidden_type_with_415(api, pool, contributor):
    script = b"#!/bin/sh\necho hi\n" + b"x" * 20_000
    response = send_all(api(contributor), pool, script, step=10_000)
    assert (response.status_code, error_code(response)) == (415, "forbidden_type")
    assert Upload.objects.count() == 0
    assert staging_used_bytes() == 0


def test_the_completing_request_refuses_a_declared_sha256_mismatch(api, pool, contributor):
    data = payload(30_000, seed=9)
    response = send_all(api(contributor), pool, data, metadata(sha256=sha(b"something else")), step=10_000)
    assert (response.status_code, error_code(response)) == (400, "checksum_mismatch")
    assert (Upload.objects.count(), staging_used_bytes()) == (0, 0)


def test_the_completing_request_checks_the_role_again(api, pool, contributor):
    client = api(contributor)
    data = payload(20_000, seed=10)
    url = location(create(client, pool, len(data)))
    patch(client, url, 0, data[:10_000])
    Membership.objects.filter(pool=pool, user=contributor).update(role=Role.LISTENER)
    response = patch(client, url, 10_000, data[10_000:])
    assert (response.status_code, error_code(response)) == (403, "forbidden")
    assert (Upload.objects.count(), staging_used_bytes()) == (0, 0)


def test_the_completing_request_applies_the_late_policy(api, pool, contributor):
    pool.late_policy = LatePolicy.REJECT
    pool.save()
    old = (WHEN_DT - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    client = api(contributor)
    data = payload(20_000, seed=11)
    url = location(create(client, pool, len(data), metadata(timestamp=old)))
    patch(client, url, 0, data[:10_000])  # its window (an hour, three hours ago) has closed
    response = patch(client, url, 10_000, data[10_000:])
    assert (response.status_code, error_code(response)) == (409, "late_upload")
    assert (Upload.objects.count(), staging_used_bytes()) == (0, 0)


def test_the_staging_budget_is_honoured(api, pool, contributor, settings):
    settings.POOLHUB_STAGING_BUDGET_BYTES = 2 * settings.POOLHUB_STAGING_CHUNK_BYTES
    client = api(contributor)
    data = payload(3 * settings.POOLHUB_STAGING_CHUNK_BYTES, seed=12)
    url = location(create(client, pool, len(data)))
    response = patch(client, url, 0, data)
    assert (response.status_code, error_code(response)) == (503, "staging_full")
    assert response["Retry-After"]
    offset = int(head(client, url)["Upload-Offset"])
    assert offset == staging_used_bytes() <= settings.POOLHUB_STAGING_BUDGET_BYTES
    settings.POOLHUB_STAGING_BUDGET_BYTES = 4 * settings.POOLHUB_STAGING_CHUNK_BYTES  # room again: resume
    done = patch(client, url, offset, data[offset:])
    assert Upload.objects.get(id=done["Poolhub-Upload-Id"]).sha256 == sha(data)


def test_the_users_cap_is_honoured(api, pool, contributor, settings):
    settings.POOLHUB_USER_STAGING_BYTES = 10_000
    settings.POOLHUB_WS_MAX_OPEN_TRANSFERS = 2
    client = api(contributor)
    first = location(create(client, pool, 6_000))
    over = create(client, pool, 5_000)
    assert (over.status_code, error_code(over)) == (503, "staging_full")
    assert over.json()["error"]["details"]["scope"] == "user"
    location(create(client, pool, 4_000))
    too_many = create(client, pool, 1)
    assert (too_many.status_code, error_code(too_many)) == (503, "staging_full")
    other = make_user("another-contributor")  # the cap is per user
    Membership.objects.create(pool=pool, user=other, role=Role.CONTRIBUTOR)
    location(create(api(other), pool, 6_000))
    client.generic("DELETE", first, **TUS)  # terminating one frees its share
    location(create(client, pool, 5_000))


def test_tus_uploads_and_websocket_transfers_share_one_cap(api, pool, contributor, settings):
    settings.POOLHUB_USER_STAGING_BYTES = 10_000
    transfer_reserve(user_id=contributor.pk, transfer_id="a-socket-transfer", size=8_000)
    over = create(api(contributor), pool, 3_000)
    assert (over.status_code, error_code(over)) == (503, "staging_full")
    transfer_release(user_id=contributor.pk, transfer_id="a-socket-transfer")
    location(create(api(contributor), pool, 3_000))
