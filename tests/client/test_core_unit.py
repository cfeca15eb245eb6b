"""Pure unit tests: the multipart encoder, typed errors, backoff, the archive helpers."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import httpx
import pytest

from poolhub_client import (
    AuthError,
    Conflict,
    NotFound,
    PoolhubClient,
    ServerError,
    Throttled,
    Tokens,
    Unavailable,
    ValidationError,
)
from poolhub_client._core import FileSource, backoff_delay, jwt_expiry, single_upload_body
from poolhub_client.archive import archive_upload_ids, xor_bytes, xor_files
from poolhub_client.errors import error_from_response


def test_the_multipart_body_is_as_long_as_announced_and_ends_with_the_sha256_of_what_was_sent():
    data = bytes(range(256)) * 3000
    body = single_upload_body(FileSource(io.BytesIO(data), "x.bin"), "2026-11-28T10:15:00Z", None)
    sent = b"".join(body.iter_chunks())
    assert len(sent) == len(body)
    assert hashlib.sha256(data).hexdigest().encode() in sent[-200:]
    assert b"".join(body.iter_chunks()) == sent  # a second pass (a retry) sends the same bytes


@pytest.mark.parametrize(("status", "code", "cls"), [
    (400, "empty_file", ValidationError), (401, "invalid_credentials", AuthError), (404, "not_found", NotFound),
    (409, "lease_expired", Conflict), (429, "throttled", Throttled), (503, "staging_full", Unavailable),
    (502, "bad_gateway", ServerError),
])
def test_errors_map_to_typed_exceptions_with_the_contract_fields(status, code, cls):
    body = {"error": {"code": code, "message": "m", "details": {"field": "file"}}}
    error = error_from_response(status, body, "7")
    assert isinstance(error, cls)
    assert (error.status, error.code, error.message, error.details) == (status, code, "m", {"field": "file"})
    assert error.retry_after == 7


def test_a_non_contract_error_body_still_gives_a_typed_error():
    error = error_from_response(500, "<html>oops</html>")
    assert isinstance(error, ServerError) and error.status == 500


def test_backoff_never_undercuts_retry_after_and_is_capped():
    assert all(backoff_delay(attempt, retry_after=4) >= 4 for attempt in range(1, 6))
    assert all(backoff_delay(attempt, cap=2) <= 2 for attempt in range(1, 20))


def test_429_is_retried_as_retry_after_says_then_raised():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(429, json={"error": {"code": "throttled", "message": "slow down", "details": {}}},
                              headers={"Retry-After": "0"})

    client = PoolhubClient("http://poolhub.test", tokens=Tokens(access="a"), transport=httpx.MockTransport(handler),
                           max_retries=2)
    with pytest.raises(Throttled) as throttled:
        client.list_pools()
    assert throttled.value.code == "throttled" and len(calls) == 3


def test_jwt_expiry_is_read_without_verification():
    import base64

    claims = base64.urlsafe_b64encode(json.dumps({"exp": 1700000000}).encode()).rstrip(b"=").decode()
    assert jwt_expiry(f"x.{claims}.y") == 1700000000
    assert jwt_expiry("not-a-jwt") is None


def test_archive_helpers_read_the_manifest_and_xor_the_files(tmp_path):
    files = {"u1": b"\x01\x02\x03", "u2": b"\xff\x00"}
    path = tmp_path / "group.tar"
    manifest = {"uploads": [{"id": key, "path": f"files/{key}/f.bin"} for key in files]}
    with tarfile.open(path, "w") as archive:
        for name, data in [("manifest.json", json.dumps(manifest).encode())] + [
                (f"files/{k}/f.bin", v) for k, v in files.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    assert archive_upload_ids(path) == {"u1", "u2"}
    assert xor_files(path, tmp_path / "out.bin").read_bytes() == b"\xfe\x02\x03" == xor_bytes(list(files.values()))
