"""Shared fixtures: personas (admin, manager, contributor, listener, exporter, outsider) and API clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from accounts.models import Membership, Pool, Role, User
from accounts.tokens import token_pair_issue
from poolhub.redis import redis_client

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(autouse=True)
def _clean_redis() -> Iterator[None]:
    """Each test starts with empty staging, denylist and throttle counters."""
    yield
    redis_client().flushdb()
    cache.clear()


def make_user(username: str, *, admin: bool = False) -> User:
    user = User.objects.create_user(username=username, password=PASSWORD)
    if admin:
        user.role = User.SystemRole.ADMIN
        user.save(update_fields=["role"])
    return user


@pytest.fixture
def pool(db: Any) -> Pool:
    return Pool.objects.create(name="weather-stations", window_seconds=3600, grace_seconds=60)


@pytest.fixture
def other_pool(db: Any) -> Pool:
    return Pool.objects.create(name="other-pool")


def _member(pool: Pool, username: str, role: Role) -> User:
    user = make_user(username)
    Membership.objects.create(pool=pool, user=user, role=role)
    return user


@pytest.fixture
def admin_user(db: Any) -> User:
    return make_user("root-admin", admin=True)


@pytest.fixture
def manager(pool: Pool) -> User:
    return _member(pool, "manager", Role.MANAGER)


@pytest.fixture
def contributor(pool: Pool) -> User:
    return _member(pool, "contributor", Role.CONTRIBUTOR)


@pytest.fixture
def listener(pool: Pool) -> User:
    return _member(pool, "listener", Role.LISTENER)


@pytest.fixture
def exporter(pool: Pool) -> User:
    return _member(pool, "exporter", Role.EXPORTER)


@pytest.fixture
def outsider(other_pool: Pool) -> User:
    """A user with a pool of their own, who must see nothing of `pool`."""
    return _member(other_pool, "outsider", Role.MANAGER)


@pytest.fixture
def api() -> Callable[[User | None], APIClient]:
    """api(user) is a client carrying that user's bearer token; api(None) is anonymous."""

    def build(user: User | None = None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_pair_issue(user=user)['access']}")
        return client

    return build


def error_code(response: Any) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return str(body["error"]["code"])


@pytest.fixture
def live_server_url(transactional_db: Any) -> Iterator[str]:
    """A real ASGI server (uvicorn) on a free port, on the test database."""
    from tests import live

    process, url = live.start_web()
    try:
        yield url
    finally:
        live.stop(process)


@pytest.fixture
def celery_worker(transactional_db: Any) -> Iterator[Any]:
    """A real Celery worker process; tasks sent on commit in the test go to it through the broker."""
    from celery_app import app
    from tests import live

    app.conf.task_always_eager = False
    process = live.start_worker()
    try:
        yield process
    finally:
        live.stop(process)
        app.conf.task_always_eager = True
