"""Starts the embedded services for a test run when their URLs are not configured.

Loaded with `-p tests.embedded_plugin` (see pyproject.toml) and run before pytest-django sets up
Django, so settings see the URLs. Each run gets its own directory: a unix-socket Redis, a
SecantusDB on a free port (with test commands on, for fault injection) and, unless
DATABASE_URL is set, its own SQLite test database. Everything stops when the run ends.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

from poolhub.embedded import EmbeddedService, start_filestore, start_redis

_started: list[EmbeddedService] = []
_run_dir: Path | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    global _run_dir
    if os.environ.get("POOLHUB_TEST_RUN_DIR"):
        return  # a parent test run (or a subprocess of one) already set everything up
    _run_dir = Path(tempfile.mkdtemp(prefix="poolhub-test-"))
    os.environ["POOLHUB_TEST_RUN_DIR"] = str(_run_dir)
    os.environ.setdefault("POOLHUB_VAR_DIR", str(_run_dir / "var"))
    (Path(os.environ["POOLHUB_VAR_DIR"]) / "static").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("POOLHUB_TEST_SQLITE", str(_run_dir / "test.sqlite3"))
    os.environ.setdefault("POOLHUB_FAST_PASSWORD_HASHER", "1")
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))  # shared with the servers tests start
    os.environ.setdefault("THROTTLE_AUTH", "100000/min")
    os.environ.setdefault("THROTTLE_REFRESH", "100000/min")
    os.environ.setdefault("THROTTLE_LOGIN", "100000/min")
    os.environ.setdefault("THROTTLE_UPLOADS", "100000/min")
    # Unit tests run tasks inline; the `celery_worker` fixture switches to a real worker.
    os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "1")
    # Test receivers (webhooks) listen on 127.0.0.1; tests of the address rules turn this off.
    os.environ.setdefault("POOLHUB_WEBHOOK_ALLOW_PRIVATE", "1")
    os.environ.setdefault("CELERY_QUEUE", f"poolhub-test-{os.getpid()}")
    if not os.environ.get("REDIS_URL"):
        service = start_redis(_run_dir / "redis")
        _started.append(service)
        os.environ["REDIS_URL"] = service.url
    if not os.environ.get("MONGO_URL"):
        service = start_filestore(_run_dir / "filestore", test_commands=True)
        _started.append(service)
        os.environ["MONGO_URL"] = service.url
        os.environ["POOLHUB_FILESTORE_EMBEDDED"] = "1"


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        "poolhub services: database {}, redis {}, broker {}, file store {}".format(
            (os.environ.get("DATABASE_URL") or "sqlite (embedded)").split("@")[-1],
            "embedded" if any(s.name == "redis" for s in _started) else "REDIS_URL",
            "CELERY_BROKER_URL" if os.environ.get("CELERY_BROKER_URL") else "redis",
            "embedded SecantusDB" if any(s.name == "filestore" for s in _started) else "MONGO_URL",
        )
    ]


def pytest_unconfigure(config: pytest.Config) -> None:
    for service in reversed(_started):
        service.stop()
    _started.clear()
    if _run_dir is not None:
        shutil.rmtree(_run_dir, ignore_errors=True)
