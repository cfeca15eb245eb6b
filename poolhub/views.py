"""The web page for pool members at `/`: one template, one script, one stylesheet, all from this server."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe


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


@require_safe
def index(request: HttpRequest) -> HttpResponse:
    response = render(request, "poolhub/index.html")
    # get_host() is checked against ALLOWED_HOSTS, so the header only ever names this server.
    response["Content-Security-Policy"] = content_security_policy(request.get_host())
    response["Referrer-Policy"] = "no-referrer"
    response["Cache-Control"] = "no-store"
    return response
