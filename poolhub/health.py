"""Liveness (`/healthz`) and readiness (`/readyz`): readiness names each dependency that fails."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from kombu import Connection

from poolhub.errors import error_body
from poolhub.filestore import mongo_client
from poolhub.redis import redis_client


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis() -> None:
    redis_client().ping()


def _broker() -> None:
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=3) as conn:
        conn.ensure_connection(max_retries=1, timeout=3)


def _filestore() -> None:
    mongo_client().admin.command("ping")


CHECKS: dict[str, Callable[[], None]] = {
    "database": _database,
    "redis": _redis,
    "broker": _broker,
    "filestore": _filestore,
}


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    results: dict[str, str] = {}
    for name, check in CHECKS.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:  # any failure means "not ready"; say which and why
            results[name] = f"error: {type(exc).__name__}"
    failing = [name for name, state in results.items() if state != "ok"]
    if failing:
        body = error_body("unavailable", f"not ready: {', '.join(failing)}", {"checks": results})
        response = JsonResponse(body, status=503)
        response["Retry-After"] = "5"
        return response
    return JsonResponse({"status": "ready", "checks": results})
