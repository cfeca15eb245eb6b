"""Fixtures for the client SDK tests: the SDK logged in as each persona against the live server."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from accounts.models import User
from poolhub_client import PoolhubClient
from tests import live
from tests.conftest import PASSWORD

CLIENT_SRC = live.BASE_DIR / "client" / "src"


@pytest.fixture
def sdk(live_server_url: str) -> Iterator[Callable[..., PoolhubClient]]:
    """sdk(user) is a PoolhubClient logged in as that user on the live server; sdk() is anonymous."""
    clients: list[PoolhubClient] = []

    def build(user: User | None = None, **options: Any) -> PoolhubClient:
        client = PoolhubClient(live_server_url, **options)
        clients.append(client)
        if user is not None:
            client.login(user.username, PASSWORD)
        return client

    yield build
    for client in clients:
        client.close()


def start_web_on(port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Like tests.live.start_web, on a port of the caller's choosing (to restart a server in place)."""
    process = subprocess.Popen(
        [str(live.BIN / "uvicorn"), "poolhub.asgi:application", "--host", "127.0.0.1", "--port", str(port),
         "--ws", "websockets-sansio", "--lifespan", "off", "--log-level", "warning"],
        cwd=live.BASE_DIR, env=env or live.child_env(), start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the ASGI server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    live.stop(process)
    raise RuntimeError("the ASGI server did not answer within 30s")


def cli_env(url: str, config_dir: Path, **extra: str) -> dict[str, str]:
    """The environment for running `python -m poolhub_client` as a user would."""
    env = dict(os.environ, POOLHUB_URL=url, POOLHUB_CONFIG_DIR=str(config_dir), **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CLIENT_SRC), env.get("PYTHONPATH")]))
    return env
