"""The ASGI guard: an oversized upload body is refused with 413 before it is read, on a live server."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from accounts.tokens import token_pair_issue
from tests import live
from tests.uploads.conftest import WHEN, payload, staged_keys
from uploads.models import Upload

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
CAP = 1024 * 1024  # the live server's POOLHUB_MAX_FILE_BYTES


@pytest.fixture
def small_limit_server(transactional_db) -> Iterator[str]:
    process, url = live.start_web(live.child_env(POOLHUB_MAX_FILE_BYTES=str(CAP)))
    try:
        yield url
    finally:
        live.stop(process)


def raw_post(url: str, path: str, headers: dict[str, str], chunks: Iterator[bytes]) -> tuple[int, dict]:
    """Send a request by hand (so the test controls how much body goes out) and read the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
        sock.sendall(head.encode())
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed without reading the rest: what we want
        response = b""
        while b"\r\n\r\n" not in response or len(response.split(b"\r\n\r\n", 1)[1]) < 2:
            data = sock.recv(65536)
            if not data:
                break
            response += data
    status_line, _, rest = response.partition(b"\r\n")
    body = rest.split(b"\r\n\r\n", 1)[1]
    return int(status_line.split()[1]), json.loads(body[body.index(b"{"):body.rindex(b"}") + 1])


def test_declared_oversized_body_is_refused_without_reading_it(small_limit_server, pool, contributor):
    token = token_pair_issue(user=contributor)["access"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "multipart/form-data; boundary=x",
               "Content-Length": str(50 * CAP)}
    status, body = raw_post(small_limit_server, f"/api/v1/pools/{pool.id}/uploads", headers, iter([]))
    assert status == 413
    assert body["error"]["code"] == "file_too_large"
    assert Upload.objects.count() == 0


def test_chunked_oversized_body_is_cut_off(small_limit_server, pool, contributor):
    token = token_pair_issue(user=contributor)["access"]
    boundary = "poolhubboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"timestamp\"\r\n\r\n{WHEN}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    block = payload(64 * 1024)

    def chunked() -> Iterator[bytes]:
        for piece in [head] + [block] * (20 * CAP // len(block)):
            yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        yield b"0\r\n\r\n"

    headers = {"Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={boundary}",
               "Transfer-Encoding": "chunked"}
    status, body = raw_post(small_limit_server, f"/api/v1/pools/{pool.id}/uploads", headers, chunked())
    assert status == 413
    assert body["error"]["code"] == "file_too_large"
    assert Upload.objects.count() == 0
    assert staged_keys() == []
