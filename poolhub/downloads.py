"""The one streaming helper for HTTP downloads (upload content, result content, group archive),
with HTTP Range (RFC 9110) on top: `ranged_download`.

Every download is an attachment that a browser never renders or sniffs: `Content-Disposition:
attachment`, `X-Content-Type-Options: nosniff`, `Content-Security-Policy: default-src 'none';
sandbox`, `Cache-Control: private, no-store`. `Content-Length` is what the body holds: a source
that yields more is cut and one that yields fewer ends in an error (the server then aborts the
connection, so a client never takes a short body for a whole one).

The source is closed exactly once, whether the body was sent whole, the client went away, or the
source failed: its `close()` is registered with the response (Django closes a response after
sending it, under WSGI and ASGI) and the iteration closes it when it ends.

Django serves a *sync* iterator under ASGI by first reading it whole into a list (with a
warning); an async iterator is served chunk by chunk. So under ASGI the sync source is pulled one
chunk at a time in a worker thread, and the ASGI server's flow control (each send awaits a slow
reader) bounds what is buffered.

Ranges: `Accept-Ranges: bytes` and a strong `ETag` on every answer; a single `Range: bytes=...`
is answered 206 with `Content-Range` and only those bytes are read from the source; a range
that starts past the end is 416 with `Content-Range: bytes */<length>`; `If-Range` with any
other validator than the current strong ETag (another ETag, a weak one, a date) gets the whole
body. A malformed Range header or several ranges are ignored (200 with the whole body), as RFC
9110 allows. Parsing is werkzeug's (`parse_range_header`, `parse_if_range_header`), a well-kept
implementation of these headers' grammar.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.utils.http import content_disposition_header
from werkzeug.http import parse_if_range_header, parse_range_header

from poolhub.errors import error_body

SANDBOX = "default-src 'none'; sandbox"


class _Body:
    """A sync chunk source sent as exactly `length` bytes, then closed (once, thread-safely)."""

    def __init__(self, source: Iterator[bytes], length: int) -> None:
        self._source = source
        self._left = length
        self._lock = threading.Lock()
        self._closed = False

    def pull(self) -> bytes | None:
        """The next non-empty chunk, or None at the end (the source is closed then)."""
        with self._lock:
            if self._closed:
                return None
            try:
                while self._left > 0:
                    chunk = next(self._source, None)
                    if chunk is None:
                        raise OSError(f"the download's source ended {self._left} bytes short")
                    if chunk:
                        chunk = chunk[:self._left]
                        self._left -= len(chunk)
                        return chunk
            except BaseException:
                self._close_locked()
                raise
            self._close_locked()
            return None

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self._source, "close", None)
        if close is not None:
            close()


class _SyncBody(_Body):
    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        chunk = self.pull()
        if chunk is None:
            raise StopIteration
        return chunk


class _AsyncBody(_Body):
    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        chunk = await asyncio.to_thread(self.pull)
        if chunk is None:
            raise StopAsyncIteration
        return chunk


def _attachment_headers(response: HttpResponseBase, *, length: int, filename: str,
                        headers: Mapping[str, str] | None) -> None:
    response["Content-Length"] = str(length)
    response["Content-Disposition"] = content_disposition_header(True, filename) or "attachment"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = SANDBOX
    response["Cache-Control"] = "private, no-store"
    for name, value in (headers or {}).items():
        response[name] = value


def _head(*, length: int, filename: str, content_type: str, status: int,
          headers: Mapping[str, str] | None) -> HttpResponse:
    response = HttpResponse(content_type=content_type, status=status)
    _attachment_headers(response, length=length, filename=filename, headers=headers)
    return response


def streamed_download(*, request: Any, source: Iterator[bytes], length: int, filename: str, content_type: str,
                      status: int = 200, headers: Mapping[str, str] | None = None) -> StreamingHttpResponse:
    """A streamed attachment of `length` bytes from `source` (closed when done), for a DRF or
    Django request. `headers` adds to (or overrides) the ones above."""
    raw = getattr(request, "_request", request)
    body: _SyncBody | _AsyncBody = (
        _AsyncBody(source, length) if isinstance(raw, ASGIRequest) else _SyncBody(source, length))
    response = StreamingHttpResponse(body, content_type=content_type, status=status)
    _attachment_headers(response, length=length, filename=filename, headers=headers)
    return response


class _Unsatisfiable:
    """The requested range starts at or past the end."""


UNSATISFIABLE = _Unsatisfiable()


def requested_span(*, headers: Mapping[str, str], length: int, etag: str) -> tuple[int, int] | _Unsatisfiable | None:
    """What a request's Range and If-Range ask of a body of `length` bytes whose strong ETag is
    `etag` (quoted): (start, stop) with stop exclusive, UNSATISFIABLE, or None for the whole body."""
    header = headers.get("Range")
    if not header:
        return None
    if_range = headers.get("If-Range")
    if if_range is not None:
        validator = parse_if_range_header(if_range)
        if if_range.strip().startswith("W/") or validator.etag is None or f'"{validator.etag}"' != etag:
            return None  # the body changed (or the client cannot tell): send it whole
    ranges = parse_range_header(header)
    if ranges is None or ranges.units != "bytes" or len(ranges.ranges) != 1:
        return None
    span = ranges.range_for_length(length)
    return UNSATISFIABLE if span is None else span


def ranged_download(*, request: Any, length: int, etag: str, read: Callable[[int, int], Iterator[bytes]],
                    filename: str, content_type: str, headers: Mapping[str, str] | None = None) -> HttpResponseBase:
    """A download that honours Range and If-Range. `etag` is the body's strong validator (unquoted:
    the same bytes always have it, other bytes never); `read(start, stop)` gives those bytes and
    is called before the response starts, so it can still raise into an error answer."""
    raw = getattr(request, "_request", request)
    tag = f'"{etag}"'
    common = {"Accept-Ranges": "bytes", "ETag": tag, **(headers or {})}
    span = requested_span(headers=raw.headers, length=length, etag=tag)
    if isinstance(span, _Unsatisfiable):
        response = JsonResponse(error_body("range_not_satisfiable", f"the range is outside the {length} bytes",
                                           {"length": length}), status=416)
        response["Content-Range"] = f"bytes */{length}"
        for name, value in common.items():
            response[name] = value
        return response
    if span is None:
        start, stop, status = 0, length, 200
    else:
        start, stop = span
        status = 206
        common["Content-Range"] = f"bytes {start}-{stop - 1}/{length}"
    if raw.method == "HEAD":  # the same headers, and nothing read from the source
        return _head(length=stop - start, filename=filename, content_type=content_type, status=status,
                     headers=common)
    return streamed_download(request=request, source=read(start, stop), length=stop - start, filename=filename,
                             content_type=content_type, status=status, headers=common)
