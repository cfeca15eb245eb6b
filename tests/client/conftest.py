"""Fixtures for the client SDK tests: the SDK logged in as each persona against the live server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from accounts.models import User
from poolhub_client import PoolhubClient
from tests.conftest import PASSWORD


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
