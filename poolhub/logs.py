"""Logging: one JSON object per line (`LOG_FORMAT=json`) or plain text, with the ids of what is going on.

python-json-logger rather than structlog: Django, Celery, uvicorn and every library here log
through the standard `logging` module, and a stdlib Formatter plus a Filter put all of them in
one format without wrapping or rewriting a single logger call (structlog would need its stdlib
bridge for exactly that).

The ids come from a per-request (or per-task) log context: the ASGI wrapper in `poolhub.asgi`
opens one for each HTTP request and websocket, the Celery signals below open one for each task,
and code that learns an id binds it (`log_context_bind(upload_id=...)`). The context is one
mutable object shared by every copy of the context variable (asgiref and asyncio copy contexts
into threads and tasks), so an id bound deep inside a view is on the access log line too.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

CONTEXT_IDS = ("request_id", "user_id", "pool_id", "upload_id", "group_id", "task_id")
REQUEST_ID_HEADER = "X-Request-ID"
# The Celery message header that carries the enqueuing request's id into the task.
TASK_REQUEST_ID_HEADER = "poolhub_request_id"


@dataclass
class LogContext:
    """The ids of one request or task. `ambiguous`: ids seen with two values (a batch's uploads),
    left out. `uploads`: in a task given a list of upload ids, the uploads its request id belongs
    to (a store task may also store other requests' uploads)."""

    ids: dict[str, str] = field(default_factory=dict)
    ambiguous: set[str] = field(default_factory=set)
    uploads: frozenset[str] | None = None


_context: contextvars.ContextVar[LogContext | None] = contextvars.ContextVar("poolhub_log_context", default=None)
# A client's X-Request-ID is kept only if it looks like an id (no spaces, quotes or control characters).
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
Token = contextvars.Token[LogContext | None]


def log_context_new(*, uploads: Iterable[object] | None = None, **ids: object) -> Token:
    """Start a fresh context (a request, a task); `log_context_end(token)` ends it."""
    return _context.set(LogContext(ids={key: str(value) for key, value in ids.items() if value is not None},
                                   uploads=frozenset(str(u) for u in uploads) if uploads is not None else None))


def log_context_end(token: Token) -> None:
    _context.reset(token)


def log_context_bind(**ids: object) -> None:
    """Add ids to the current context. An id bound again with another value (the second upload of
    a batch) is no longer known: it is left out rather than naming only one of them."""
    current = _context.get()
    if current is None:
        return
    for key, value in ids.items():
        if value is None or key in current.ambiguous:
            continue
        known = current.ids.get(key)
        if known is None:
            current.ids[key] = str(value)
        elif known != str(value):
            del current.ids[key]
            current.ambiguous.add(key)


def log_context() -> dict[str, str]:
    current = _context.get()
    return dict(current.ids) if current is not None else {}


def log_request_id_for(*, upload_id: object) -> str | None:
    """The request id that goes with this upload here: the context's, unless this is a task whose
    request enqueued other uploads than this one."""
    current = _context.get()
    if current is None:
        return None
    if current.uploads is not None and str(upload_id) not in current.uploads:
        return None
    return current.ids.get("request_id")


def request_id_from(header: bytes | str | None) -> str:
    """The client's X-Request-ID when it is a plausible id, otherwise a new one."""
    value = header.decode("latin-1") if isinstance(header, bytes) else header
    if value and _REQUEST_ID.match(value):
        return value
    return uuid.uuid4().hex


# --- redaction and context on every record --------------------------------------------------

_SECRETS = [
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), "[jwt redacted]"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [redacted]"),
    (re.compile(r"(?i)([\"']?(?:password|passwd|secret|access_token|refresh_token|refresh|access|token)[\"']?"
                r"\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|[^\s,&}]+)"), r"\1[redacted]"),
]


def redact(text: str) -> str:
    """Mask JWTs, bearer credentials and `password=`-style values: a last line of defence."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class ContextFilter(logging.Filter):
    """Puts the context's ids on each record and masks credentials in its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in log_context().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, _, status = record.args
            record.client, record.method, record.path, record.status = client, method, path, status
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class PoolhubJsonFormatter(JsonFormatter):
    """`ts`, `level`, `logger`, `message`, the context's ids, and the record's own extras."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            ["levelname", "name", "message"],
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="ts",
            # Objects and duplicates that other libraries attach as extras: uvicorn's coloured copy
            # of the message, Django's request object, Celery's task context (args repr included).
            reserved_attrs=[*RESERVED_ATTRS, "color_message", "request", "data", "taskName", "server_time"],
            **kwargs,
        )

    def process_log_record(self, log_data: Any) -> Any:
        for key in CONTEXT_IDS:  # an id set to None on purpose: not known for this line
            if key in log_data and log_data[key] is None:
                del log_data[key]
        return log_data

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def logging_config(*, fmt: str, level: str) -> dict[str, Any]:
    """The `LOGGING` dict for settings: one console handler for everything, uvicorn's loggers included.
    Plain JSON data (classes by dotted path), so the launcher also hands it to uvicorn's
    `--log-config` for the lines its parent process writes before any app is imported."""
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.{PoolhubJsonFormatter.__name__}"} if fmt == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    handler = {"class": "logging.StreamHandler", "formatter": "default", "filters": ["context"]}
    # uvicorn configures its own handlers before the app is imported; naming its loggers here
    # replaces them (their levels, from --log-level, are left alone).
    uvicorn = {"handlers": ["console"], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": f"{__name__}.{ContextFilter.__name__}"}},
        "formatters": {"default": formatter},
        "handlers": {"console": handler},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.request": {"level": "ERROR"},
            "pymongo": {"level": "WARNING"},
            "uvicorn": uvicorn,
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": uvicorn,
        },
    }


# --- Celery: the same configuration, and a context per task ----------------------------------

def logging_apply(loglevel: int | str | None = None, **kwargs: Any) -> None:
    """Configure logging now from LOG_FORMAT and LOG_LEVEL, Python warnings included.

    `celery_app` calls it on import, so that even what the Celery command prints before Django or
    Celery configure anything (the warning about running as root) is a JSON line; it reads the
    environment, not settings, which must not load that early. Also Celery's `setup_logging`
    signal receiver (then `loglevel` is its --loglevel): Celery leaves its own handlers out.
    Django applies the same dict from settings.LOGGING when it starts.
    """
    import logging.config
    import os

    logging.config.dictConfig(logging_config(fmt=os.environ.get("LOG_FORMAT") or "text",
                                             level=os.environ.get("LOG_LEVEL") or "INFO"))
    logging.captureWarnings(True)
    if loglevel:
        logging.getLogger().setLevel(loglevel)


def celery_before_publish(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """Carry the enqueuing request's id into the task's message headers."""
    request_id = log_context().get("request_id")
    if headers is not None and request_id and TASK_REQUEST_ID_HEADER not in headers:
        headers[TASK_REQUEST_ID_HEADER] = request_id


_TASK_TOKENS: dict[str, Token] = {}


def _task_ids(task: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The `upload_id`, `group_id`, `pool_id`... a task was called with (tasks take ids, DESIGN.md),
    and `upload_ids` when it takes a list of uploads."""
    try:
        bound = inspect.signature(task.run).bind_partial(*args, **kwargs).arguments
    except (TypeError, ValueError):
        return {}
    ids = {key: value for key, value in bound.items() if key in CONTEXT_IDS}
    many = bound.get("upload_ids")
    if isinstance(many, list | tuple):
        ids["uploads"] = many
        if len(many) == 1:
            ids.setdefault("upload_id", many[0])
    return ids


def celery_task_prerun(task_id: str | None = None, task: Any = None, args: tuple[Any, ...] = (),
                       kwargs: Mapping[str, Any] | None = None, **extra: Any) -> None:
    # From the message header; a task run inline (eager) inherits the caller's.
    request_id = (getattr(getattr(task, "request", None), TASK_REQUEST_ID_HEADER, None)
                  or log_context().get("request_id"))
    ids = _task_ids(task, tuple(args or ()), kwargs or {}) if task is not None else {}
    token = log_context_new(task_id=task_id, request_id=request_id, **ids)
    if task_id:
        _TASK_TOKENS[task_id] = token


def celery_task_postrun(task_id: str | None = None, **kwargs: Any) -> None:
    token = _TASK_TOKENS.pop(task_id or "", None)
    if token is not None:
        try:
            _context.reset(token)
        except ValueError:  # set in another context (eager tasks nest): just drop this one
            _context.set(None)


# --- the ASGI wrapper: a log context per request and socket -------------------------------------

class RequestContext:
    """Outermost ASGI layer: gives each HTTP request and websocket a request id (X-Request-ID, kept
    when the client sent a plausible one) in its log context, returns it in the response header,
    and counts open websockets (`poolhub_websocket_connections`)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(REQUEST_ID_HEADER.lower().encode())
        request_id = request_id_from(header)
        token = log_context_new(request_id=request_id)
        try:
            if scope["type"] == "http":
                await self.app(scope, receive, _with_request_id(send, request_id))
            else:
                await self._websocket(scope, receive, send)
        finally:
            log_context_end(token)

    async def _websocket(self, scope: Any, receive: Any, send: Any) -> None:
        from poolhub.metrics import WEBSOCKETS

        accepted = False

        async def counting_send(message: Any) -> None:
            nonlocal accepted
            if message.get("type") == "websocket.accept" and not accepted:
                accepted = True
                WEBSOCKETS.inc()
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            if accepted:
                WEBSOCKETS.dec()


def _with_request_id(send: Any, request_id: str) -> Any:
    header = (REQUEST_ID_HEADER.lower().encode(), request_id.encode("latin-1"))

    async def wrapped(message: Any) -> None:
        if message.get("type") == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != header[0]]
            message = {**message, "headers": [*headers, header]}
        await send(message)

    return wrapped


def celery_say_as_json() -> None:
    """The Celery worker prints a few lines from its signal handlers ("worker: Warm shutdown")
    with `print`, outside logging (a handler must not take logging's locks). With LOG_FORMAT=json
    those become JSON lines too, still written with a single `print`."""
    import json
    import os
    import sys
    from datetime import UTC, datetime

    if os.environ.get("LOG_FORMAT") != "json":
        return
    import celery.apps.worker

    def say(msg: str, f: Any = sys.__stderr__) -> None:
        line = json.dumps({"level": "WARNING", "logger": "celery.apps.worker", "message": redact(str(msg)),
                           "ts": datetime.now(UTC).isoformat()})
        print(line, file=f, flush=True)

    celery.apps.worker.safe_say = say  # type: ignore[attr-defined]
