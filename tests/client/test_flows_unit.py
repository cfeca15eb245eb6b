"""Resumable transfers in the SDK, against an in-process server that cuts connections on purpose.

The sync and async clients drive the same flows (poolhub_client.flows), so each scenario runs
on both. The live-server versions are in test_resume_live.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from poolhub_client import AsyncPoolhubClient, PoolhubClient
from poolhub_client._core import Tokens
from poolhub_client.errors import ChecksumMismatch
from poolhub_client.flows import TusState

BASE = "http://poolhub.test"
TOKENS = Tokens(access="not-a-jwt", refresh=None)


class CutStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that breaks off with a network error after `cut` bytes (never, when cut is None)."""

    def __init__(self, data: bytes, cut: int | None) -> None:
        self.data = data
        self.cut = cut

    def _pieces(self) -> Iterator[bytes]:
        end = len(self.data) if self.cut is None else self.cut
        for start in range(0, end, 64 * 1024):
            yield self.data[start:min(end, start + 64 * 1024)]
        if self.cut is not None:
            raise httpx.ReadError("connection reset by peer")

    def __iter__(self) -> Iterator[bytes]:
        yield from self._pieces()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._pieces():
            yield piece


class FileServer:
    """Serves one file with an ETag and byte ranges; the first `cuts` responses break off halfway."""

    def __init__(self, data: bytes, *, cuts: int = 1, ranges: bool = True) -> None:
        self.data = data
        self.cuts = cuts
        self.ranges = ranges
        self.etag = '"' + hashlib.sha256(data).hexdigest() + '"'
        self.range_requests: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        start = 0
        status = 200
        range_header = request.headers.get("Range")
        if range_header and self.ranges and request.headers.get("If-Range") == self.etag:
            self.range_requests.append(range_header)
            start = int(re.fullmatch(r"bytes=(\d+)-", range_header).group(1))  # type: ignore[union-attr]
            status = 206
        body = self.data[start:]
        cut = len(body) // 2 if self.cuts > 0 else None
        self.cuts -= 1
        headers = {"ETag": self.etag, "Content-Length": str(len(body)), "Accept-Ranges": "bytes",
                   "Content-Disposition": 'attachment; filename="model.bin"'}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{len(self.data) - 1}/{len(self.data)}"
        return httpx.Response(status, headers=headers, stream=CutStream(body, cut))


class TusServer:
    """A small tus 1.0 server; the PATCHes listed in `cut_patches` store half their bytes and then break."""

    def __init__(self, *, cut_patches: tuple[int, ...] = (2,)) -> None:
        self.uploads: dict[str, bytearray] = {}
        self.lengths: dict[str, int] = {}
        self.patches = 0
        self.posts = 0
        self.cut_patches = cut_patches

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path.endswith("/tus"):
            self.posts += 1
            upload_id = f"t{self.posts}"
            self.uploads[upload_id] = bytearray()
            self.lengths[upload_id] = int(request.headers["Upload-Length"])
            return httpx.Response(201, headers={"Location": f"/api/v1/tus/{upload_id}", "Tus-Resumable": "1.0.0"})
        match = re.fullmatch(r"/api/v1/tus/(\w+)", path)
        if match and request.method in {"HEAD", "PATCH"}:
            upload_id = match.group(1)
            if upload_id not in self.uploads:
                return httpx.Response(404, json={"error": {"code": "not_found", "message": "no such upload",
                                                           "details": {}}})
            stored = self.uploads[upload_id]
            if request.method == "HEAD":
                return httpx.Response(200, headers={"Upload-Offset": str(len(stored)),
                                                    "Upload-Length": str(self.lengths[upload_id])})
            assert int(request.headers["Upload-Offset"]) == len(stored), "the client sent from a stale offset"
            body = request.read()
            self.patches += 1
            if self.patches in self.cut_patches:
                stored += body[: len(body) // 2]
                raise httpx.WriteError("connection reset while sending")
            stored += body
            headers = {"Upload-Offset": str(len(stored))}
            if len(stored) == self.lengths[upload_id]:
                headers["Poolhub-Upload-Id"] = f"up-{upload_id}"
            return httpx.Response(204, headers=headers)
        match = re.fullmatch(r"/api/v1/uploads/up-(\w+)", path)
        if match:
            data = bytes(self.uploads[match.group(1)])
            return httpx.Response(200, json={"id": f"up-{match.group(1)}", "size": len(data),
                                             "sha256": hashlib.sha256(data).hexdigest(), "status": "cached"})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path, "details": {}}})


def run(client_kind: str, handler: Any, call: Any) -> Any:
    """Run `call(client)` on a sync or an async client over `handler`, with instant retries."""
    kwargs: dict[str, Any] = {"tokens": TOKENS, "max_retry_wait": 1, "tus_threshold": 1024}
    if client_kind == "sync":
        with PoolhubClient(BASE, transport=httpx.MockTransport(handler), **kwargs) as client:
            client._retry_delay = lambda attempt, error: 0.0  # type: ignore[method-assign]
            return call(client)

    async def main() -> Any:
        async with AsyncPoolhubClient(BASE, transport=httpx.MockTransport(handler), **kwargs) as client:
            client._retry_delay = lambda attempt, error: 0.0  # type: ignore[method-assign]
            return await call(client)

    return asyncio.run(main())


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_download_resumes_from_where_it_broke_off(kind: str, tmp_path: Path) -> None:
    data = os.urandom(700_000)
    server = FileServer(data, cuts=2)
    path = run(kind, server, lambda c: c.download_result("r1", tmp_path, sha256=hashlib.sha256(data).hexdigest()))
    assert Path(path).read_bytes() == data
    assert len(server.range_requests) == 2  # two cuts, each resumed with a Range, not restarted
    assert not list(tmp_path.glob("*.part"))


def test_download_restarts_when_the_server_sends_the_whole_body_again(kind: str, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    server = FileServer(data, cuts=1, ranges=False)
    path = run(kind, server, lambda c: c.download_upload("u1", tmp_path / "out.bin"))
    assert Path(path).read_bytes() == data


def test_download_with_wrong_checksum_leaves_no_file(kind: str, tmp_path: Path) -> None:
    server = FileServer(os.urandom(10_000), cuts=0)
    with pytest.raises(ChecksumMismatch):
        run(kind, server, lambda c: c.download_result("r1", tmp_path / "out.bin", sha256="0" * 64))
    assert list(tmp_path.iterdir()) == []


def test_large_upload_goes_over_tus_and_resumes_after_a_cut(kind: str) -> None:
    data = os.urandom(2_500_000)
    server = TusServer(cut_patches=(2,))
    seen: list[int] = []

    def call(client: Any) -> Any:
        return client.upload("pool-1", data, filename="model.bin", progress=lambda done, total: seen.append(done),
                             tus=TusState())

    upload = run(kind, server, call)
    assert upload["sha256"] == hashlib.sha256(data).hexdigest()
    assert bytes(server.uploads["t1"]) == data
    assert server.posts == 1  # resumed the same upload, not a new one
    assert seen[-1] == len(data)


def test_tus_upload_continues_a_previous_runs_location(kind: str) -> None:
    data = os.urandom(1_000_000)
    server = TusServer(cut_patches=())
    server.uploads["t9"] = bytearray(data[:300_000])  # what a killed run had sent
    server.lengths["t9"] = len(data)
    state = TusState(location=f"{BASE}/api/v1/tus/t9")
    upload = run(kind, server, lambda c: c.upload("pool-1", data, tus=state))
    assert upload["id"] == "up-t9"
    assert bytes(server.uploads["t9"]) == data
    assert server.posts == 0


def test_tus_location_the_server_forgot_starts_over(kind: str) -> None:
    data = os.urandom(200_000)
    server = TusServer(cut_patches=())
    kept: list[str] = []
    state = TusState(location=f"{BASE}/api/v1/tus/gone", on_location=kept.append)
    upload = run(kind, server, lambda c: c.upload("pool-1", data, tus=state))
    assert upload["size"] == len(data)
    assert server.posts == 1
    assert kept == [f"{BASE}/api/v1/tus/t1"]


def test_small_files_stay_on_the_single_request_path() -> None:
    requests: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(f"{request.method} {request.url.path}")
        return httpx.Response(202, json={"id": "u1", "status": "cached"})

    run("sync", handler, lambda c: c.upload("pool-1", b"x" * 100))
    assert requests == ["POST /api/v1/pools/pool-1/uploads"]


class WrongRangeServer(FileServer):
    """Answers a Range request with a 206 that starts at byte 0 instead of where it was asked."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("Range"):
            self.range_requests.append(request.headers["Range"])
            headers = {"ETag": self.etag, "Content-Length": str(len(self.data)),
                       "Content-Range": f"bytes 0-{len(self.data) - 1}/{len(self.data)}"}
            return httpx.Response(206, headers=headers, stream=CutStream(self.data, None))
        return super().__call__(request)


def test_a_206_that_is_not_the_rest_asked_for_is_not_appended(kind: str, tmp_path: Path) -> None:
    data = os.urandom(900_000)  # cut at half: past the client's first 256 KiB chunk
    server = WrongRangeServer(data, cuts=1)
    path = run(kind, server, lambda c: c.download_archive("g1", "lease-1", tmp_path / "group.tar"))
    assert Path(path).read_bytes() == data  # no sha256 to catch it for an archive: the bytes must be right
    assert len(server.range_requests) == 1
