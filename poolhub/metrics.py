"""Prometheus metrics (`GET /metrics`, docs/operations.md "Metrics") with prometheus_client.

Every web and worker process counts: with `PROMETHEUS_MULTIPROC_DIR` set (the launcher, the image
and the Kubernetes manifests set it; the directory must be empty when the first process starts)
each process writes its samples to files there and a scrape of any web process adds them up.
Without it (tests, one-off commands) the process's own registry is served.

Where things are counted, so that the code that does the work stays free of metrics calls:
- uploads, groups, leases and results: by event type, once per committed event, where the event
  log publishes it (`observe_publish` wraps `notifications.services.event_publish`); that wrapper
  also times the websocket fan-out;
- Celery tasks (outcomes, durations, webhook deliveries): Celery signals (`celery_app.py`);
- HTTP requests: `MetricsMiddleware` (django-prometheus does not fit: its richer metrics need its
  own database and cache backends, and its middleware pair would add two thread hops per request
  under ASGI); open websockets: `poolhub.asgi`;
- staging bytes, queue length, groups and webhook deliveries by status: read when scraped.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.utils.functional import SimpleLazyObject, empty
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

    from uploads.models import Event

logger = logging.getLogger(__name__)

MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
if MULTIPROC_DIR:
    os.makedirs(MULTIPROC_DIR, exist_ok=True)

# Seconds buckets from a small upload stored at once to a 64 MiB one behind a retry.
_STORE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800)
_FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

UPLOADS_ACCEPTED = Counter("poolhub_uploads_accepted", "Uploads accepted (202; upload.cached events)")
UPLOADS_STORED = Counter("poolhub_uploads_stored", "Uploads stored in the file store (upload.stored events)")
UPLOADS_FAILED = Counter("poolhub_uploads_failed", "Uploads failed after their last store attempt (upload.failed)")
STORE_ATTEMPTS = Counter("poolhub_upload_store_attempts", "Store attempts begun (upload.storing events)")
STORE_FAILURES = Counter("poolhub_upload_store_failures", "Store attempts that failed (upload.store_failed)")
STORE_SECONDS = Histogram("poolhub_upload_store_seconds", "Seconds from an upload's acceptance to its storage",
                          buckets=_STORE_BUCKETS)
EVENTS = Counter("poolhub_events", "Committed events of the event log, by type", ["type"])
LEASE_EXPIRIES = Counter("poolhub_lease_expiries", "Export leases that expired before a result came")
RESULTS = Counter("poolhub_results", "Results posted by exporters (result.available events)")
BROADCAST_SECONDS = Histogram("poolhub_broadcast_seconds",
                              "Seconds to hand one committed event to its websocket audience (fan-out)",
                              buckets=_FAST_BUCKETS)
TASKS = Counter("poolhub_celery_tasks", "Celery task runs by task name and outcome", ["task", "outcome"])
TASK_SECONDS = Histogram("poolhub_celery_task_seconds", "Celery task run time by task name", ["task"],
                         buckets=(*_FAST_BUCKETS, 30, 60, 120, 300, 600))
WEBHOOK_DELIVERIES = Counter("poolhub_webhook_deliveries", "Webhook delivery tries by outcome", ["outcome"])
HTTP_REQUESTS = Counter("poolhub_http_requests", "HTTP requests by view, method and status",
                        ["view", "method", "status"])
HTTP_SECONDS = Histogram("poolhub_http_request_seconds", "HTTP request latency by view and method",
                         ["view", "method"], buckets=_FAST_BUCKETS)
WEBSOCKETS = Gauge("poolhub_websocket_connections", "Open websocket connections", multiprocess_mode="livesum")

_EVENT_COUNTERS: dict[str, Counter] = {
    "upload.cached": UPLOADS_ACCEPTED,
    "upload.stored": UPLOADS_STORED,
    "upload.failed": UPLOADS_FAILED,
    "upload.storing": STORE_ATTEMPTS,
    "upload.store_failed": STORE_FAILURES,
    "group.lease_expired": LEASE_EXPIRIES,
    "result.available": RESULTS,
}
# Task names are explicit and few (DESIGN.md); anything else is counted as "other".
_TASK_NAME = re.compile(r"^(uploads?|staging|transfers|tus|batching|notifications|accounts|poolhub)[._][a-z0-9_.]+$")


# --- counting where things happen -------------------------------------------------------------

def event_observe(*, event: Event) -> None:
    """Count one committed event (and time an upload's way to the store), and log it. Never raises."""
    try:
        EVENTS.labels(type=event.type).inc()
        counter = _EVENT_COUNTERS.get(event.type)
        if counter is not None:
            counter.inc()
        group = (event.data or {}).get("group")
        if event.type == "upload.stored":
            accepted, group = _upload_row(event)
            if accepted is not None:
                STORE_SECONDS.observe(max(0.0, (event.at - accepted).total_seconds()))
        _log_event(event, group=group)
    except Exception:  # metrics must never break the work they count
        logger.warning("could not count event %s", getattr(event, "type", "?"), exc_info=True)


def _upload_row(event: Event) -> tuple[Any, Any]:
    """When the upload was accepted, and its group (the `upload.stored` event carries neither)."""
    from uploads.models import Upload

    row = Upload.objects.filter(id=event.stream_id).values_list("created_at", "group_id").first()
    return row if row is not None else (None, None)


_events_logger = logging.getLogger("poolhub.events")


def _log_event(event: Event, *, group: object) -> None:
    """One log line per committed event, with its ids: searching by upload (or group) id shows its
    whole life, across web and worker. The request id is the one that caused it, where known."""
    from poolhub.logs import log_context_bind, log_request_id_for

    ids: dict[str, object] = {"pool_id": event.pool_id, "user_id": event.user_id, "seq": event.seq}
    if event.stream_type == "upload":
        ids["upload_id"] = event.stream_id
        ids["request_id"] = log_request_id_for(upload_id=event.stream_id)
    elif event.stream_type == "group":
        ids["group_id"] = event.stream_id
    ids["group_id"] = ids.get("group_id") or group
    _events_logger.info("%s", event.type, extra={key: str(v) if v is not None else None for key, v in ids.items()})
    log_context_bind(pool_id=event.pool_id, **{key: ids[key] for key in ("upload_id", "group_id") if key in ids})


F = TypeVar("F", bound=Callable[..., Any])


def observe_publish(publish: F) -> F:
    """Decorates the event log's after-commit publish: counts the event, times its fan-out."""

    @functools.wraps(publish)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        event = kwargs.get("event", args[0] if args else None)
        if event is not None:
            event_observe(event=event)
        started = time.perf_counter()
        try:
            return publish(*args, **kwargs)
        finally:
            BROADCAST_SECONDS.observe(time.perf_counter() - started)

    return wrapper  # type: ignore[return-value]


def _task_label(task: Any) -> str:
    name = str(getattr(task, "name", "") or "")
    return name if _TASK_NAME.match(name) else "other"


_TASK_STARTS: dict[str, float] = {}


def celery_task_prerun(task_id: str | None = None, **kwargs: Any) -> None:
    if task_id:
        _TASK_STARTS[task_id] = time.perf_counter()


def celery_task_postrun(task_id: str | None = None, task: Any = None, state: str | None = None,
                        **kwargs: Any) -> None:
    started = _TASK_STARTS.pop(task_id or "", None)
    label = _task_label(task)
    if started is not None:
        TASK_SECONDS.labels(task=label).observe(time.perf_counter() - started)
    TASKS.labels(task=label, outcome=(state or "unknown").lower()).inc()


def celery_task_success(sender: Any = None, result: Any = None, **kwargs: Any) -> None:
    if getattr(sender, "name", "") == "batching.deliver_webhook":
        WEBHOOK_DELIVERIES.labels(outcome=str(result)).inc()


def celery_task_retry(sender: Any = None, **kwargs: Any) -> None:
    if getattr(sender, "name", "") == "batching.deliver_webhook":
        WEBHOOK_DELIVERIES.labels(outcome="retry").inc()


def celery_process_exit(pid: int | None = None, **kwargs: Any) -> None:
    """A worker child exits: its live gauges stop counting (prometheus_client's multiprocess rule)."""
    if MULTIPROC_DIR:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid(), MULTIPROC_DIR)


# --- HTTP ------------------------------------------------------------------------------------

class MetricsMiddleware:
    """Counts every HTTP request by its URL pattern (bounded: not the raw path), method and status,
    and puts the ids in the URL (`pool_id`, `upload_id`, `group_id`) and the authenticated user
    into the log context. Sync and async: under ASGI it runs on the event loop, with no thread hop
    of its own (MiddlewareMixin would hop to a thread for each of its hooks)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        started = time.perf_counter()
        direct = _machine_paths().get(request.path_info)
        response = direct(request) if direct is not None else self.get_response(request)
        return _observe_request(request, response, started)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        direct = _machine_paths().get(request.path_info)
        if direct is not None:  # probes and scrapes: sync views that read the database
            response = await sync_to_async(direct)(request)
        else:
            response = await self.get_response(request)
        return _observe_request(request, response, started)


def _observe_request(request: HttpRequest, response: HttpResponse, started: float) -> HttpResponse:
    """Kubelet probes and Prometheus come by pod address (`Host: 10.1.2.3:8000`), which no
    ALLOWED_HOSTS lists: `_machine_paths` are answered before CommonMiddleware's host check. None
    of those views builds a URL from the host."""
    from poolhub.logs import log_context_bind

    match = getattr(request, "resolver_match", None)
    if match is not None:
        view = match.route or match.view_name
        log_context_bind(**{key: value for key, value in match.kwargs.items()
                            if key in ("pool_id", "upload_id", "group_id")})
    else:
        view = request.path_info.strip("/") if request.path_info in _machine_paths() else "unmatched"
    method = request.method if request.method in _METHODS else "other"
    HTTP_REQUESTS.labels(view=view, method=method, status=str(response.status_code)).inc()
    HTTP_SECONDS.labels(view=view, method=method).observe(time.perf_counter() - started)
    user = request.__dict__.get("user")  # DRF sets it on the Django request once it authenticates
    if isinstance(user, SimpleLazyObject) and user._wrapped is empty:
        user = None  # a session user nobody looked at: reading it would cost a query
    if getattr(user, "is_authenticated", False):
        log_context_bind(user_id=user.pk)  # type: ignore[union-attr]
    return response


_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


@functools.cache
def _machine_paths() -> dict[str, Callable[[HttpRequest], HttpResponse]]:
    from poolhub import health

    return {"/healthz": health.healthz, "/readyz": health.readyz, "/metrics": metrics_view}


# --- read when scraped -------------------------------------------------------------------------

class ScrapeCollector:
    """Gauges that are global state, read from their source at scrape time (not per process).

    Each source is read on its own: one that is down leaves its series out (and `/readyz` says
    why) instead of failing the whole scrape.
    """

    def collect(self) -> Iterator[Metric]:
        for read in (_staging, _groups, _queue, _webhooks):
            try:
                yield from read()
            except Exception as exc:  # a dependency down: leave its series out
                logger.warning("metrics: %s unavailable: %s", read.__name__.strip("_"), type(exc).__name__)


def _staging() -> Iterable[Metric]:
    from django.conf import settings

    from uploads.staging import staging_used_bytes

    used = GaugeMetricFamily("poolhub_staging_bytes", "Accepted bytes waiting in staging for the store")
    used.add_metric([], float(staging_used_bytes()))
    budget = GaugeMetricFamily("poolhub_staging_budget_bytes", "POOLHUB_STAGING_BUDGET_BYTES")
    budget.add_metric([], float(settings.POOLHUB_STAGING_BUDGET_BYTES))
    return [used, budget]


def _groups() -> Iterable[Metric]:
    from django.db.models import Count

    from batching.models import Group, GroupStatus

    counts = dict(Group.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    family = GaugeMetricFamily("poolhub_groups", "Groups by status", labels=["status"])
    for status in GroupStatus.values:
        family.add_metric([status], float(counts.get(status, 0)))
    return [family]


def _queue() -> Iterable[Metric]:
    from django.conf import settings

    from celery_app import app

    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)
        try:
            declared = conn.default_channel.queue_declare(queue=queue, passive=True)  # type: ignore[attr-defined]
            waiting = declared.message_count
        except Exception as exc:
            # A queue nobody declared yet (or, on Redis, an empty one: its list is gone) holds nothing.
            if "NOT_FOUND" not in str(exc) and type(exc).__name__ != "NotFound":
                raise
            waiting = 0
    family = GaugeMetricFamily("poolhub_celery_queue_length", "Tasks waiting in the broker queue",
                               labels=["queue"])
    family.add_metric([queue], float(waiting))
    return [family]


def _webhooks() -> Iterable[Metric]:
    from django.db.models import Count

    from batching.models import WebhookDelivery

    counts = dict(WebhookDelivery.objects.values_list("status").annotate(n=Count("id"))
                  .values_list("status", "n"))
    family = GaugeMetricFamily("poolhub_webhook_deliveries_by_status", "Webhook deliveries by status",
                               labels=["status"])
    for status in WebhookDelivery.Status.values:
        family.add_metric([status], float(counts.get(status, 0)))
    return [family]


def _counted_text() -> bytes:
    """What processes counted: every process's samples under PROMETHEUS_MULTIPROC_DIR, else this one's."""
    if not MULTIPROC_DIR:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=MULTIPROC_DIR)
    return generate_latest(registry)


def metrics_text() -> bytes:
    """Every process's samples (or this process's) and the scrape-time gauges, in text format."""
    counted = _counted_text()
    scraped = CollectorRegistry()
    scraped.register(ScrapeCollector())
    return counted + generate_latest(scraped)


# --- GET /metrics --------------------------------------------------------------------------------

def _access_allowed(*, address: str, headers: Any, token: str | None, networks: list[str]) -> bool:
    """docs/api.md "Operations": an address in METRICS_ALLOWED_CIDRS, or `Authorization: Bearer METRICS_TOKEN`.

    A request that came through a proxy (it carries X-Forwarded-For or Forwarded) never passes on
    its address: the proxy's own address may well be inside the allowed networks.
    """
    header = headers.get("Authorization", "")
    if token and header.startswith("Bearer ") and hmac.compare_digest(header[7:].strip().encode(), token.encode()):
        return True
    if "X-Forwarded-For" in headers or "Forwarded" in headers:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(cidr, strict=False) for cidr in networks)


def metrics_allowed(request: HttpRequest) -> bool:
    from django.conf import settings

    return _access_allowed(address=request.META.get("REMOTE_ADDR", ""), headers=request.headers,
                           token=settings.METRICS_TOKEN, networks=settings.METRICS_ALLOWED_CIDRS)


def metrics_view(request: HttpRequest) -> HttpResponse:
    from django.http import HttpResponse

    from poolhub.errors import json_not_found

    if request.method not in ("GET", "HEAD") or not metrics_allowed(request):
        return json_not_found(request)
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)


# --- the worker's own /metrics ------------------------------------------------------------------

def worker_metrics_serve(sender: Any = None, **kwargs: Any) -> None:
    """Celery's `worker_init` signal: with WORKER_METRICS_PORT set, the worker's main process serves
    what its pool processes counted on that port (`GET /metrics`, the same access rule as web's).

    Under `make run` web and worker share PROMETHEUS_MULTIPROC_DIR and web's /metrics has it all;
    in containers each worker pod has its own directory, so Prometheus scrapes workers directly.
    """
    port = int(os.environ.get("WORKER_METRICS_PORT") or 0)
    if not port:
        return
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # scrapes are not worth a log line each
            pass

    server = make_server("0.0.0.0", port, _worker_metrics_app, handler_class=QuietHandler)
    threading.Thread(target=server.serve_forever, name="poolhub-metrics", daemon=True).start()
    logger.info("worker metrics on port %s at /metrics", port)


def _worker_metrics_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    import json

    from django.conf import settings

    from poolhub.errors import error_body

    headers = {key[5:].replace("_", "-").title(): value for key, value in environ.items() if key.startswith("HTTP_")}
    allowed = _access_allowed(address=environ.get("REMOTE_ADDR", ""), headers=headers,
                              token=settings.METRICS_TOKEN, networks=settings.METRICS_ALLOWED_CIDRS)
    if environ.get("PATH_INFO") != "/metrics" or not allowed:
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [json.dumps(error_body("not_found", "no such endpoint")).encode()]
    body = _counted_text()
    start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
    return [body]
