"""Streamed responses that keep memory bounded under both ASGI and the sync test client.

Django serves a *sync* iterator under ASGI by first reading it whole into a list (with a
warning); an async iterator is served chunk by chunk. So under ASGI we wrap the sync chunk
generator in an async one that pulls each chunk in a worker thread, and the ASGI server's flow
control (the send awaits a slow reader) bounds what is buffered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header


async def _pull(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    try:
        while (chunk := await asyncio.to_thread(next, chunks, b"")) != b"":
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            await asyncio.to_thread(close)


def _nonempty(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """b"" marks the end in `_pull`, so empty chunks are dropped here."""
    for chunk in chunks:
        if chunk:
            yield chunk


def streamed_attachment(*, request: Any, chunks: Iterator[bytes], filename: str, content_type: str,
                        length: int | None) -> StreamingHttpResponse:
    raw = getattr(request, "_request", request)
    body = _nonempty(chunks)
    content: Iterator[bytes] | AsyncIterator[bytes] = _pull(body) if isinstance(raw, ASGIRequest) else body
    response = StreamingHttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(True, filename) or "attachment"
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    if length is not None:
        response["Content-Length"] = str(length)
    return response
