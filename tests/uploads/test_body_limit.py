"""The ASGI guard: every endpoint refuses a body over its own limit with 413 before reading it, declared
or chunked, authenticated or not, on a live server."""

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


def raw_post(url: str, path: str, headers: dict[str, str], chunks: Iterator[bytes],
             method: str = "POST") -> tuple[int, dict]:
    """Send a request by hand (so the test controls how much body goes out) and read the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        head = f"{method} {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n" + "".join(
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


GIB_10 = str(10 * 1024 ** 3)


def chunked_bytes(total: int, piece: bytes = b"[" * 65536) -> Iterator[bytes]:
    for _ in range(total // len(piece)):
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"


@pytest.mark.parametrize("path", ["/api/v1/auth/login", "/api/v1/auth/signup", "/api/v1/auth/refresh",
                                  "/api/v1/pools", "/api/v1/no/such/endpoint", "/admin/login/", "/"])
def test_an_unauthenticated_huge_declared_body_is_refused_at_once(small_limit_server, path):
    headers = {"Content-Type": "application/json", "Content-Length": GIB_10}
    status, body = raw_post(small_limit_server, path, headers, iter([]))
    assert status == 413
    assert body["error"]["code"] == "request_too_large"
    assert body["error"]["details"]["max_request_bytes"] < 3 * 1024 * 1024


def test_a_chunked_login_body_is_cut_off_after_a_few_kib(small_limit_server):
    headers = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    status, body = raw_post(small_limit_server, "/api/v1/auth/login", headers, chunked_bytes(64 * CAP))
    assert status == 413
    assert body["error"]["details"]["max_request_bytes"] <= 8192


def test_a_result_over_the_servers_limit_is_refused_before_it_is_read(small_limit_server, pool, exporter):
    token = token_pair_issue(user=exporter)["access"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "multipart/form-data; boundary=x",
               "Content-Length": GIB_10}
    status, body = raw_post(small_limit_server, f"/api/v1/groups/{pool.id}/result", headers, iter([]))
    assert (status, body["error"]["code"]) == (413, "file_too_large")
    assert body["error"]["details"]["max_request_bytes"] < 128 * 1024 * 1024


def test_a_batch_has_a_sane_cap(small_limit_server, pool, contributor):
    token = token_pair_issue(user=contributor)["access"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "multipart/form-data; boundary=x",
               "Content-Length": str(1024 ** 3)}
    status, body = raw_post(small_limit_server, f"/api/v1/pools/{pool.id}/batches", headers, iter([]))
    assert (status, body["error"]["code"]) == (413, "file_too_large")


def test_small_bodies_still_reach_their_views(small_limit_server, contributor):
    import httpx

    from tests.conftest import PASSWORD

    response = httpx.post(f"{small_limit_server}/api/v1/auth/login",
                          json={"username": contributor.username, "password": PASSWORD})
    assert response.status_code == 200
