"""The one streaming helper for downloads: safe headers, exact Content-Length, its source always closed."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from typing import cast

import pytest
from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from django.test import RequestFactory

from poolhub.downloads import streamed_download


class Source:
    """A chunk source that records whether it was closed."""

    def __init__(self, chunks: list[bytes], fail_after: int | None = None) -> None:
        self.chunks = chunks
        self.fail_after = fail_after
        self.closed = 0

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self.fail_after is not None and self.fail_after == 0:
            raise OSError("the file store went away")
        if not self.chunks:
            raise StopIteration
        if self.fail_after is not None:
            self.fail_after -= 1
        return self.chunks.pop(0)

    def close(self) -> None:
        self.closed += 1


def asgi_request() -> ASGIRequest:
    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": []}
    return ASGIRequest(scope, io.BytesIO())


# response.close() sends request_finished, whose close_old_connections touches the database
# connection an earlier test left open: allowed here so the file passes in any order.
pytestmark = pytest.mark.django_db


def download(source: Source, length: int, request: object | None = None) -> StreamingHttpResponse:
    return streamed_download(request=request or RequestFactory().get("/"), source=source, length=length,
                             filename="report <1>.bin", content_type="text/html")


def body(response: StreamingHttpResponse) -> Iterator[bytes]:
    return cast(Iterator[bytes], response.streaming_content)  # sync here: a WSGI-style request


def test_a_download_is_an_attachment_no_browser_renders_or_sniffs() -> None:
    response = download(Source([b"<script>", b"alert(1)</script>"]), 25)
    assert response["Content-Length"] == "25"
    assert response["Content-Disposition"].startswith("attachment;")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]
    assert "default-src 'none'" in response["Content-Security-Policy"]
    assert response["Cache-Control"] == "private, no-store"


def test_the_source_is_closed_once_after_the_whole_body() -> None:
    source = Source([b"abc", b"", b"def"])
    response = download(source, 6)
    assert b"".join(body(response)) == b"abcdef"
    response.close()
    assert source.closed == 1


def test_the_source_is_closed_when_the_client_goes_away_midway() -> None:
    source = Source([b"abc", b"def", b"ghi"])
    response = download(source, 9)
    assert next(iter(body(response))) == b"abc"
    response.close()  # what the server does when the client disconnects
    assert source.closed == 1


def test_the_source_is_closed_when_it_fails() -> None:
    source = Source([b"abc", b"def"], fail_after=1)
    response = download(source, 6)
    with pytest.raises(OSError, match="went away"):
        b"".join(body(response))
    assert source.closed == 1


def test_a_short_source_is_an_error_not_a_short_body_and_a_long_one_is_cut() -> None:
    short = Source([b"abc"])
    with pytest.raises(OSError, match="3 bytes short"):
        b"".join(body(download(short, 6)))
    assert short.closed == 1
    long = Source([b"abc", b"defgh", b"ijk"])
    assert b"".join(body(download(long, 5))) == b"abcde"
    assert long.closed == 1


def test_under_asgi_the_body_is_pulled_chunk_by_chunk_and_the_source_closed() -> None:
    source = Source([b"abc", b"def", b"ghi"])
    response = download(source, 9, request=asgi_request())
    assert response.is_async

    async def first_chunk() -> bytes:
        async for chunk in response:  # as Django's ASGI handler consumes it
            return bytes(chunk)
        return b""

    assert asyncio.run(first_chunk()) == b"abc"
    assert source.chunks == [b"def", b"ghi"]  # nothing read ahead
    response.close()  # Django's ASGI handler closes the response after sending or on a disconnect
    assert source.closed == 1
