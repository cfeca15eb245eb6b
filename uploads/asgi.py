"""An ASGI guard in front of Django for the upload endpoints: stop reading an oversized body at once.

Django's ASGI handler receives the whole request body (spooling it to a temporary file beyond
FILE_UPLOAD_MAX_MEMORY_SIZE) before the view runs, so without this a client could make the server
read and spool gigabytes only to be told 413. The guard answers 413 `file_too_large` as soon as
the declared Content-Length, or the bytes actually received, pass the most any upload request
may carry (the server's file limit, or for a batch the staging budget, plus room for the form).
The pool's own, smaller limit is enforced by the upload handler while it parses the body.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.conf import settings

from poolhub.errors import error_body

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Any  # Django's handler and plain ASGI callables type their arguments differently

_UPLOAD_PATH = re.compile(r"^/api/v1/pools/[0-9a-fA-F-]{36}/(uploads|batches)/?$")
FORM_ALLOWANCE = 4 * 1024 * 1024  # form fields, manifest and multipart headers


def body_cap(kind: str) -> int:
    largest_file = int(settings.POOLHUB_MAX_FILE_BYTES)
    if kind == "batches":
        many = largest_file * int(settings.DATA_UPLOAD_MAX_NUMBER_FILES)
        return min(many, max(largest_file, int(settings.POOLHUB_STAGING_BUDGET_BYTES))) + FORM_ALLOWANCE
    return largest_file + FORM_ALLOWANCE


def _too_large_body(cap: int) -> bytes:
    return json.dumps(error_body("file_too_large", f"the request is larger than {cap} bytes",
                                 {"max_request_bytes": cap})).encode()


class UploadBodyLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        _startup_staging_check()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _UPLOAD_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        cap = body_cap(match.group(1))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            await _send_413(send, cap)
            return
        await _Guarded(self.app, cap).run(scope, receive, send)


def _startup_staging_check() -> None:
    """At web start-up, say loudly if staging's Redis may evict (uploads are then refused with 503)."""
    import redis

    from uploads.staging import _policy_verdict

    try:
        _policy_verdict()  # logs CRITICAL (policy) or WARNING (CONFIG disabled) itself
    except redis.RedisError as exc:
        logger.warning("staging Redis not reachable at start-up (%s); its eviction policy is checked "
                       "before the first upload", exc)


async def _send_413(send: Send, cap: int) -> None:
    body = _too_large_body(cap)
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class _Guarded:
    """Counts received bytes; past the cap it answers 413 itself and tells Django the client left."""

    def __init__(self, app: ASGIApp, cap: int) -> None:
        self.app = app
        self.cap = cap
        self.received = 0
        self.refused = False

    async def run(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def guarded_receive() -> Message:
            if self.refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.cap:
                    self.refused = True
                    await _send_413(send, self.cap)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not self.refused:
                await send(message)

        await self.app(scope, guarded_receive, guarded_send)
