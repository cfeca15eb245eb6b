"""The one streaming helper for HTTP downloads (upload content, result content, group archive).

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
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header

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


def streamed_download(*, request: Any, source: Iterator[bytes], length: int, filename: str, content_type: str,
                      status: int = 200, headers: Mapping[str, str] | None = None) -> StreamingHttpResponse:
    """A streamed attachment of `length` bytes from `source` (closed when done), for a DRF or
    Django request. `headers` adds to (or overrides) the ones above."""
    raw = getattr(request, "_request", request)
    body: _SyncBody | _AsyncBody = (
        _AsyncBody(source, length) if isinstance(raw, ASGIRequest) else _SyncBody(source, length))
    response = StreamingHttpResponse(body, content_type=content_type, status=status)
    response["Content-Length"] = str(length)
    response["Content-Disposition"] = content_disposition_header(True, filename) or "attachment"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = SANDBOX
    response["Cache-Control"] = "private, no-store"
    for name, value in (headers or {}).items():
        response[name] = value
    return response
