"""Login and signup are throttled per client address: 429 `throttled` with Retry-After."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from accounts.api.views import AuthThrottle, RefreshThrottle
from accounts.models import User
from tests.conftest import PASSWORD, error_code, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def three_per_minute(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(AuthThrottle, "THROTTLE_RATES", {**AuthThrottle.THROTTLE_RATES, "auth": "3/min"})
    cache.clear()
    yield
    cache.clear()


def login(client: APIClient, password: str = PASSWORD, **headers: Any) -> Any:
    return client.post("/api/v1/auth/login", {"username": "station-1", "password": password}, format="json",
                       **headers)


def test_login_is_throttled_after_the_limit(three_per_minute: None) -> None:
    make_user("station-1")
    client = APIClient()
    for _ in range(3):
        assert login(client, "wrong-password").status_code == 401

    response = login(client)  # even the right password waits

    assert response.status_code == 429
    assert error_code(response) == "throttled"
    assert 1 <= int(response["Retry-After"]) <= 60
    assert "access" not in response.json()


def test_signup_is_throttled_and_creates_nothing_when_refused(three_per_minute: None) -> None:
    client = APIClient()
    for index in range(3):
        body = {"username": f"bot-{index}", "password": "a-long-and-unusual-passphrase-41"}
        assert client.post("/api/v1/auth/signup", body, format="json").status_code == 201

    response = client.post("/api/v1/auth/signup", {"username": "bot-9", "password": "a-long-and-unusual-passphrase-41"},
                           format="json")

    assert response.status_code == 429
    assert error_code(response) == "throttled"
    assert int(response["Retry-After"]) >= 1
    assert not User.objects.filter(username="bot-9").exists()


def test_a_forged_forwarded_for_header_does_not_reset_the_count(three_per_minute: None) -> None:
    make_user("station-1")
    client = APIClient()
    for index in range(3):
        login(client, "wrong-password", HTTP_X_FORWARDED_FOR=f"10.0.0.{index}")

    response = login(client, HTTP_X_FORWARDED_FOR="10.0.0.99")

    assert response.status_code == 429


def test_other_clients_are_not_throttled(three_per_minute: None) -> None:
    make_user("station-1")
    for _ in range(3):
        login(APIClient(REMOTE_ADDR="192.0.2.1"), "wrong-password")

    assert login(APIClient(REMOTE_ADDR="192.0.2.2")).status_code == 200


def test_authenticated_endpoints_are_not_auth_throttled(three_per_minute: None, api: Any) -> None:
    user = make_user("station-1")
    client = api(user)
    for _ in range(5):
        assert client.get("/api/v1/auth/validate").status_code == 200


def test_refresh_has_its_own_higher_rate(three_per_minute: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fleet behind one address keeps refreshing after the password endpoints are throttled."""
    monkeypatch.setattr(RefreshThrottle, "THROTTLE_RATES", {**RefreshThrottle.THROTTLE_RATES, "refresh": "5/min"})
    make_user("station-1")
    client = APIClient()
    refresh = login(client).json()["refresh"]
    for _ in range(3):
        login(client, "wrong-password")
    assert login(client).status_code == 429

    for _ in range(5):
        response = client.post("/api/v1/auth/refresh", {"refresh": refresh}, format="json")
        assert response.status_code == 200
        refresh = response.json()["refresh"]
    throttled = client.post("/api/v1/auth/refresh", {"refresh": refresh}, format="json")

    assert throttled.status_code == 429
    assert error_code(throttled) == "throttled"
    assert int(throttled["Retry-After"]) >= 1
