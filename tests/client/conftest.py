"""Fixtures for the client SDK tests: the SDK logged in as each persona against the live server."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
    """tests.live.start_web on a port of the caller's choosing (to restart a server in place)."""
    return live.start_web(env, port=port)[0]


def cli_env(url: str, config_dir: Path, **extra: str) -> dict[str, str]:
    """The environment for running `python -m poolhub_client` as a user would."""
    env = dict(os.environ, POOLHUB_URL=url, POOLHUB_CONFIG_DIR=str(config_dir), **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CLIENT_SRC), env.get("PYTHONPATH")]))
    return env
