"""An ASGI guard in front of everything HTTP: no request body is read past its endpoint's limit.

Django's ASGI handler receives the whole request body (spooling it to a temporary file beyond
FILE_UPLOAD_MAX_MEMORY_SIZE) before any view runs, authenticated or not, so without this a client
could make the server read and spool gigabytes (`POST /auth/login` with a 10 GiB body) only to be
told 400 or 413. The guard wraps the whole HTTP application, so a fast path mounted beside Django
is covered too. Each endpoint has its own cap (`body_cap`): a few KiB for the auth endpoints and
JSON, the server's file limit for uploads and tus, the result limit for results, a batch cap for
batches. It answers 413 as soon as the declared Content-Length, or the bytes actually received
(chunked bodies have no declared length), pass that cap; the view is then told the client left.
The pool's own, smaller limits are enforced by the handlers while they parse the body.

This is what nginx's `client_max_body_size` and uvicorn's `h11_max_incomplete_event_size` do for
headers; uvicorn has no body limit of its own, so it lives here, before the framework.
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

FORM_ALLOWANCE = 4 * 1024 * 1024  # form fields, manifest and multipart headers beside the files
_UUID = r"[0-9a-fA-F-]{36}"
# (path, kind): the first match decides; every other path takes the JSON cap.
_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"^/api/v1/pools/{_UUID}/uploads/?$"), "file"),
    (re.compile(rf"^/api/v1/pools/{_UUID}/tus/?$"), "file"),
    (re.compile(r"^/api/v1/tus/[^/]+/?$"), "file"),
    (re.compile(rf"^/api/v1/pools/{_UUID}/batches/?$"), "batch"),
    (re.compile(rf"^/api/v1/groups/{_UUID}/result/?$"), "result"),
    (re.compile(r"^/api/v1/auth/"), "auth"),
    (re.compile(r"^/admin/"), "form"),
]
_FILE_KINDS = frozenset({"file", "batch", "result"})


def body_kind(path: str) -> str:
    return next((kind for pattern, kind in _ROUTES if pattern.match(path)), "json")


def body_cap(kind: str) -> int:
    """The most bytes a request body of this kind may carry."""
    if kind == "file":
        return int(settings.POOLHUB_MAX_FILE_BYTES) + FORM_ALLOWANCE
    if kind == "batch":
        return int(settings.POOLHUB_MAX_BATCH_BYTES) + FORM_ALLOWANCE
    if kind == "result":
        return int(settings.POOLHUB_MAX_RESULT_BYTES) + FORM_ALLOWANCE
    if kind == "auth":
        return int(settings.POOLHUB_MAX_AUTH_BODY_BYTES)
    if kind == "form":  # the admin's forms: Django's own limit on non-file form data
        return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) + 64 * 1024
    return int(settings.POOLHUB_MAX_JSON_BODY_BYTES)


def _too_large_body(kind: str, cap: int) -> bytes:
    code = "file_too_large" if kind in _FILE_KINDS else "request_too_large"
    return json.dumps(error_body(code, f"the request is larger than {cap} bytes", {"max_request_bytes": cap})).encode()


class BodyLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        _startup_staging_check()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        kind = body_kind(scope.get("path", ""))
        cap = body_cap(kind)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            await _send_413(send, kind, cap)
            return
        await _Guarded(self.app, kind, cap).run(scope, receive, send)


def _startup_staging_check() -> None:
    """At web start-up, say loudly if staging's Redis may evict (uploads are then refused with 503)."""
    import redis

    from uploads.staging import _policy_verdict

    try:
        _policy_verdict()  # logs CRITICAL (policy) or WARNING (CONFIG disabled) itself
    except redis.RedisError as exc:
        logger.warning("staging Redis not reachable at start-up (%s); its eviction policy is checked "
                       "before the first upload", exc)


async def _send_413(send: Send, kind: str, cap: int) -> None:
    body = _too_large_body(kind, cap)
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class _Guarded:
    """Counts received bytes; past the cap it answers 413 itself and tells the app the client left."""

    def __init__(self, app: ASGIApp, kind: str, cap: int) -> None:
        self.app = app
        self.kind = kind
        self.cap = cap
        self.received = 0
        self.refused = False
        self.started = False

    async def run(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def guarded_receive() -> Message:
            if self.refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.cap:
                    self.refused = True
                    if not self.started:  # an app that already answered keeps its answer
                        await _send_413(send, self.kind, self.cap)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not self.refused:
                self.started = True
                await send(message)

        await self.app(scope, guarded_receive, guarded_send)
