"""Real processes for end-to-end tests: the ASGI server and a Celery worker on the test database.

Use the `live_server_url` and `celery_worker` fixtures (declared in tests/conftest.py) from tests
marked `@pytest.mark.django_db(transaction=True)`, so that rows are committed and visible to the
child processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
from django.db import connection

from poolhub.embedded import free_port

BASE_DIR = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def child_env(**extra: str) -> dict[str, str]:
    """The test run's environment, pointed at the test database that pytest-django created."""
    env = dict(os.environ)
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    else:
        auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
        env["DATABASE_URL"] = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env["CELERY_TASK_ALWAYS_EAGER"] = "0"  # the children hand tasks to the broker, like production
    env.update(extra)
    return env


def start_web(env: dict[str, str] | None = None, *, port: int | None = None, log_level: str = "warning",
              output: IO[bytes] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """uvicorn on `port` (a free one by default; a fixed one restarts a server in place); its log
    lines to `output` (both streams) when given."""
    port = port or free_port()
    process = subprocess.Popen(
        [str(BIN / "uvicorn"), "poolhub.asgi:application", "--host", "127.0.0.1", "--port", str(port),
         "--ws", "websockets-sansio", "--lifespan", "off", "--log-level", log_level,
         "--timeout-graceful-shutdown", "2"],
        cwd=BASE_DIR, env=env or child_env(), start_new_session=True, stdout=output,
        stderr=subprocess.STDOUT if output else None,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the ASGI server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop(process)
    raise RuntimeError("the ASGI server did not answer within 30s")


def start_worker(env: dict[str, str] | None = None, *, concurrency: int = 1, log_level: str = "WARNING",
                 output: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
    env = env or child_env()
    process = subprocess.Popen(
        [str(BIN / "celery"), "-A", "celery_app", "--quiet", "worker", "--loglevel", log_level, "--pool", "prefork",
         "--concurrency", str(concurrency), "-Q", env["CELERY_QUEUE"], "--without-gossip", "--without-mingle",
         "--hostname", f"test-{os.getpid()}-{time.monotonic_ns()}@%h"],
        cwd=BASE_DIR, env=env, start_new_session=True, stdout=output, stderr=subprocess.STDOUT if output else None,
    )
    time.sleep(0.5)
    if process.poll() is not None:
        raise RuntimeError(f"the Celery worker exited with {process.returncode}")
    return process


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Stop a child and its own children (the worker's pool processes)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)


def running(process: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield process
    finally:
        stop(process)


def wait_for(predicate: object, timeout: float = 30, interval: float = 0.2, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
