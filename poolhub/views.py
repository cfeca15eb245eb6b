"""The web page at `/`: one template, one script, one stylesheet, all from this server."""

from __future__ import annotations

from uuid import UUID

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import Resolver404, resolve
from django.views.decorators.http import require_safe

from poolhub import errors

# Endpoints the page uses only where this server has them (built by other parts of the service);
# the page learns which from the body's data-features instead of probing them (a probe's 404 is
# a console error in every browser).
_SOME_POOL = UUID(int=0)
OPTIONAL_ENDPOINTS = {
    "tus": f"/api/v1/pools/{_SOME_POOL}/tus",
    "provision": f"/api/v1/pools/{_SOME_POOL}/members/provision",
    "usage": f"/api/v1/pools/{_SOME_POOL}/usage",
    "webhook-test": f"/api/v1/pools/{_SOME_POOL}/webhook/test",
}


def content_security_policy(host: str) -> str:
    """Scripts, styles and connections from this origin only (plus its websocket); nothing inline."""
    return "; ".join([
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        f"connect-src 'self' ws://{host} wss://{host}",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


def _routed(path: str) -> bool:
    try:
        return resolve(path).func is not errors.json_not_found
    except Resolver404:
        return False


def page_features() -> list[str]:
    off = set() if settings.POOLHUB_WEB_TUS else {"tus"}
    return [name for name, path in OPTIONAL_ENDPOINTS.items() if name not in off and _routed(path)]


@require_safe
def index(request: HttpRequest) -> HttpResponse:
    context = {
        "features": " ".join(page_features()),
        "large_file_bytes": settings.POOLHUB_WEB_LARGE_FILE_BYTES,
    }
    response = render(request, "poolhub/index.html", context)
    # get_host() is checked against ALLOWED_HOSTS, so the header only ever names this server.
    response["Content-Security-Policy"] = content_security_policy(request.get_host())
    response["Referrer-Policy"] = "no-referrer"
    response["Cache-Control"] = "no-store"
    return response
