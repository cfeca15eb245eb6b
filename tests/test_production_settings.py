"""Production mode turns on HSTS and believes the TLS proxy's X-Forwarded-Proto; local runs do neither."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

BASE_DIR = Path(__file__).resolve().parent.parent
PROBE = ("import json, django; django.setup(); from django.conf import settings as s; "
         "print(json.dumps([s.SECURE_HSTS_SECONDS, s.SECURE_PROXY_SSL_HEADER, s.SESSION_COOKIE_SECURE]))")


def settings_with(**env: str) -> list:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SECURE_", "POOLHUB_TLS", "POOLHUB_PRODUCTION", "POOLHUB_FAST_PASSWORD"))}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=BASE_DIR, env={**clean, **env,
                         "DJANGO_SETTINGS_MODULE": "poolhub.settings"}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_production_sends_hsts_and_trusts_the_tls_proxy() -> None:
    hsts, proxy_header, secure_cookie = settings_with(POOLHUB_PRODUCTION="1", SECRET_KEY="x" * 50)
    assert hsts >= 31536000
    assert proxy_header == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert secure_cookie is True


def test_production_without_a_tls_proxy_can_say_so() -> None:
    _, proxy_header, _ = settings_with(POOLHUB_PRODUCTION="1", SECRET_KEY="x" * 50, POOLHUB_TLS_PROXY="0")
    assert proxy_header is None


def test_local_runs_send_no_hsts() -> None:
    hsts, proxy_header, _ = settings_with()
    assert (hsts, proxy_header) == (0, None)


@pytest.mark.django_db
def test_a_secure_request_gets_the_hsts_header(settings) -> None:
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    response = Client().get("/api/v1/pools", HTTP_X_FORWARDED_PROTO="https")
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")
    assert "Strict-Transport-Security" not in Client().get("/api/v1/pools")
