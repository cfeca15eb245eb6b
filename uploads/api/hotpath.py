"""The upload hot path's ASGI handler: each upload request takes one thread hop to a kept thread.

Django's ASGI handler runs every request in a fresh thread of its own (asgiref's
`ThreadSensitiveContext`) and hops between the event loop and that thread once per sync
middleware layer and signal. A new thread also means a new database connection per request:
connections are per thread, so `CONN_MAX_AGE` cannot keep one. Profiled under 16 concurrent
200 KiB uploads, connecting to PostgreSQL, starting the thread and the hops were a large share
of each request.

For `POST /api/v1/pools/{pool}/uploads` and `/batches` this handler reads the body on the event
loop exactly as Django does, then runs the whole request (signals, Django's sync middleware
chain, DRF, the view and its checks, the response's rendering and close) in ONE call on a small
pool of kept threads, and sends the finished response. The contract is untouched: it is the
same DRF view, middleware, error bodies, headers and OpenAPI schema. Each kept thread keeps its
database connection between requests (`POOLHUB_UPLOAD_CONN_MAX_AGE`); Django's own
`close_old_connections` still drops a connection that errored or left autocommit. Every other
request goes through Django's ASGI handler unchanged.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.dispatch import receiver
from django.http import HttpResponseBase
from django.urls import set_script_prefix

from uploads.asgi import Receive, Scope, Send

HOT_PATHS = re.compile(r"^/api/v1/pools/[0-9a-fA-F-]{36}/(uploads|batches)/?$")

_kept = threading.local()  # `kept` is True in the hot path's own threads


@receiver(connection_created)
def _keep_connection(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """A connection opened by a kept thread lives on past its request (other threads: unchanged)."""
    if getattr(_kept, "kept", False):
        connection.close_at = time.monotonic() + settings.POOLHUB_UPLOAD_CONN_MAX_AGE


def _mark_kept() -> None:
    _kept.kept = True


class UploadHotPath(ASGIHandler):
    """Django's ASGI handler, with the upload endpoints served by a sync handler on kept threads."""

    def __init__(self) -> None:
        super().__init__()
        self.sync_handler = BaseHandler()
        self.sync_handler.load_middleware(is_async=False)
        self.threads = ThreadPoolExecutor(max_workers=settings.POOLHUB_UPLOAD_THREADS,
                                          thread_name_prefix="upload", initializer=_mark_kept)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        if scope["type"] == "http" and scope["method"] == "POST" and HOT_PATHS.match(scope["path"]):
            await self.handle_hot(scope, receive, send)
            return
        await super().__call__(scope, receive, send)  # type: ignore[arg-type]

    async def handle_hot(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        context = contextvars.copy_context()  # the request id and log context follow the request
        try:
            status, headers, content = await asyncio.get_running_loop().run_in_executor(
                self.threads, context.run, self._respond, scope, body_file)
        finally:
            body_file.close()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    def _respond(self, scope: Scope, body_file: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The whole request in the kept thread: what Django's WSGI handler does, then the bytes."""
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = self.sync_handler.get_response(request)
        assert response is not None
        try:
            content = _content(response)
            headers = [(str(name).encode("ascii"), str(value).encode("latin1")) for name, value in response.items()]
            headers += [(b"Set-Cookie", c.output(header="").encode("ascii").strip())
                        for c in response.cookies.values()]
            return response.status_code, headers, content
        finally:
            response.close()  # request_finished: Django's connection checks run here, in this thread


def _content(response: HttpResponseBase) -> bytes:
    if response.streaming:
        return b"".join(bytes(chunk) for chunk in response)
    return bytes(response.content)  # type: ignore[attr-defined]
