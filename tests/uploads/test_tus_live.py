"""tus against the live ASGI server with a stock client (tuspy), and the real worker storing the result."""

from __future__ import annotations

import base64
import hashlib
import io
import socket
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError, TusUploadFailed

from accounts.models import LatePolicy
from accounts.tokens import token_pair_issue
from poolhub.filestore import Bucket, file_chunks
from tests import live
from tests.uploads.conftest import WHEN, WHEN_DT, payload, sha
from uploads.models import Upload
from uploads.staging import staging_used_bytes
from uploads.tus import tus_uploads_expire

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MB = 1024 * 1024


def auth(user: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_pair_issue(user=user)['access']}"}


def uploader(base: str, pool: Any, user: Any, data: bytes, **kwargs: Any) -> Any:
    client = tus_client.TusClient(f"{base}/api/v1/pools/{pool.id}/tus", headers=auth(user))
    return client.uploader(file_stream=io.BytesIO(data), metadata={"filename": "big.bin", "timestamp": WHEN},
                           **kwargs)


def cut_patch(url: str, user: Any, offset: int, body: bytes, send: int) -> None:
    """A PATCH whose connection drops after `send` of its `len(body)` bytes."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        head = (f"PATCH {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nTus-Resumable: 1.0.0\r\n"
                f"Authorization: {auth(user)['Authorization']}\r\nUpload-Offset: {offset}\r\n"
                f"Content-Type: application/offset+octet-stream\r\nContent-Length: {len(body)}\r\n\r\n")
        sock.sendall(head.encode() + body[:send])


def test_a_10_mb_upload_cut_mid_patch_resumes_from_head_in_a_fresh_client_and_is_stored_byte_exact(
        live_server_url, celery_worker, pool, contributor):
    data = payload(10 * MB, seed=21)
    first = uploader(live_server_url, pool, contributor, data, chunk_size=2 * MB)
    first.upload(stop_at=4 * MB)  # two chunks arrive
    assert first.offset == 4 * MB
    cut_patch(first.url, contributor, 4 * MB, data[4 * MB:6 * MB], send=MB)  # the third is cut halfway
    # A fresh client (a restarted device) with only the URL: HEAD gives the offset, then the rest.
    resumed = uploader(live_server_url, pool, contributor, data, chunk_size=2 * MB, url=first.url)
    assert resumed.offset == 4 * MB  # what the server holds: the cut request kept nothing half-done
    resumed.upload()
    upload_id = resumed.request.response_headers["poolhub-upload-id"]
    live.wait_for(lambda: Upload.objects.get(id=upload_id).status == "stored", timeout=120, what="stored")
    assert hashlib.sha256(b"".join(file_chunks(bucket=Bucket.UPLOADS, file_id=upload_id))).hexdigest() == sha(data)
    live.wait_for(lambda: staging_used_bytes() == 0, timeout=30, what="staging released")


def test_tuspy_with_checksums_creation_with_upload_and_the_errors_over_the_live_server(
        live_server_url, pool, contributor, manager):
    # tuspy sends an Upload-Checksum (sha1) with every chunk.
    data = payload(3 * MB + 5, seed=22)
    checked = uploader(live_server_url, pool, contributor, data, chunk_size=MB, upload_checksum=True)
    checked.upload()
    assert Upload.objects.get(id=checked.request.response_headers["poolhub-upload-id"]).sha256 == sha(data)

    with httpx.Client(base_url=live_server_url, headers={**auth(contributor), "Tus-Resumable": "1.0.0"},
                      timeout=60) as http:
        small = payload(4_000, seed=23)
        meta = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in
                        {"filename": "small.bin", "timestamp": WHEN}.items())
        created = http.post(f"/api/v1/pools/{pool.id}/tus", content=small, headers={
            "Upload-Length": str(len(small)), "Upload-Metadata": meta,
            "Content-Type": "application/offset+octet-stream"})
        assert created.status_code == 201
        assert Upload.objects.get(id=created.headers["poolhub-upload-id"]).sha256 == sha(small)

        url = http.post(f"/api/v1/pools/{pool.id}/tus", headers={"Upload-Length": "100",
                                                                 "Upload-Metadata": meta}).headers["location"]
        patch_headers = {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
        wrong = http.patch(url, content=b"x" * 50, headers={
            **patch_headers, "Upload-Checksum": "sha1 " + base64.b64encode(hashlib.sha1(b"y").digest()).decode()})
        assert (wrong.status_code, wrong.json()["error"]["code"]) == (460, "checksum_mismatch")
        http.patch(url, content=b"x" * 50, headers=patch_headers)
        mismatch = http.patch(url, content=b"x" * 50, headers=patch_headers)
        assert (mismatch.status_code, mismatch.json()["error"]["details"]["offset"]) == (409, 50)
        foreign = {**auth(manager), "Tus-Resumable": "1.0.0"}
        assert http.head(url, headers=foreign).status_code == 404
        assert http.patch(url, content=b"x" * 50, headers={**patch_headers, "Upload-Offset": "50",
                                                           **foreign}).status_code == 404
        assert http.delete(url).status_code == 204

    # A REST check failing at completion reaches tuspy with the REST status and body.
    script = b"#!/bin/sh\n" + b"echo hi\n" * 1000
    refused = uploader(live_server_url, pool, contributor, script, chunk_size=4_000)
    with pytest.raises((TusUploadFailed, TusCommunicationError)) as failure:
        refused.upload()
    assert failure.value.status_code == 415
    assert b"forbidden_type" in (failure.value.response_content or b"")


@pytest.fixture
def small_server(transactional_db: Any) -> Any:
    """A live server with a 3 MiB staging budget and a 6 MiB per-user cap on unfinished tus uploads."""
    process, url = live.start_web(live.child_env(POOLHUB_STAGING_BUDGET_BYTES=str(3 * MB),
                                                 POOLHUB_USER_STAGING_BYTES=str(6 * MB)))
    try:
        yield url
    finally:
        live.stop(process)


def failure_of(upload: Any) -> tuple[int, bytes]:
    with pytest.raises((TusUploadFailed, TusCommunicationError)) as failure:
        upload.upload()
    return failure.value.status_code, failure.value.response_content or b""


def test_budget_cap_expiry_and_the_rest_checks_through_tuspy(small_server, pool, contributor, listener):
    # The staging budget: a 4 MiB file cannot be staged whole; 503 staging_full, and the bytes
    # staged so far are what HEAD reports.
    big = uploader(small_server, pool, contributor, payload(4 * MB, seed=31), chunk_size=4 * MB)
    status, body = failure_of(big)
    assert (status, b"staging_full" in body) == (503, True)
    assert big.get_offset() == staging_used_bytes() <= 3 * MB

    # The user's cap: 4 MiB declared are open; another 4 MiB is refused at creation.
    status, body = failure_of(uploader(small_server, pool, contributor, payload(4 * MB, seed=32)))
    assert (status, b'"scope": "user"' in body or b'"scope":"user"' in body) == (503, True)

    # Expiry releases the staged bytes and the user's share.
    assert tus_uploads_expire(now=2 ** 40) >= 1
    assert staging_used_bytes() == 0
    with httpx.Client(headers={**auth(contributor), "Tus-Resumable": "1.0.0"}) as http:
        assert http.head(big.url).status_code == 404
    small = uploader(small_server, pool, contributor, payload(100_000, seed=33))
    small.upload()
    assert small.request.response_headers["poolhub-upload-id"]

    # Every REST check through tus, with the REST status and code.
    old = (WHEN_DT - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    pool.late_policy = LatePolicy.REJECT
    pool.max_file_bytes = 1 * MB
    pool.save()
    client = tus_client.TusClient(f"{small_server}/api/v1/pools/{pool.id}/tus", headers=auth(contributor))
    data = payload(200_000, seed=34)
    cases = [
        (client, payload(MB + 1, seed=35), {"filename": "a.bin", "timestamp": WHEN}, 413, b"file_too_large"),
        (client, data, {"filename": "a.bin"}, 400, b"invalid_timestamp"),
        (client, data, {"filename": "a.bin", "timestamp": WHEN, "sha256": "0" * 64}, 400, b"checksum_mismatch"),
        (client, data, {"filename": "a.bin", "timestamp": old}, 409, b"late_upload"),
        (tus_client.TusClient(client.url, headers=auth(listener)), data, {"filename": "a.bin", "timestamp": WHEN},
         403, b"forbidden"),
    ]
    for tus, content, meta, expected_status, code in cases:
        status, body = failure_of(tus.uploader(file_stream=io.BytesIO(content), metadata=meta, chunk_size=100_000))
        assert (status, code in body) == (expected_status, True), (meta, body)
    assert staging_used_bytes() == 100_000  # only the accepted upload's bytes (no worker here stores them)
