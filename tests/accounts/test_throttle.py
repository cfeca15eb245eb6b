"""Failed logins are limited per account and per address (the API and the admin's login page alike),
successful ones are not; signup and refresh are throttled per client address. 429 `throttled` with
Retry-After."""

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


@pytest.fixture
def three_failures(settings: Any) -> None:
    settings.POOLHUB_LOGIN_FAILURES_PER_ACCOUNT = 3
    settings.POOLHUB_LOGIN_FAILURES_PER_ADDRESS = 5


def test_failures_on_one_account_are_limited_from_every_address(three_failures: None) -> None:
    """A distributed attacker gets the account's few guesses in all, not a few per address."""
    make_user("station-1")
    make_user("station-2")
    for index in range(3):
        assert login(APIClient(REMOTE_ADDR=f"192.0.2.{index}"), "wrong-password").status_code == 401

    response = login(APIClient(REMOTE_ADDR="198.51.100.7"))  # even the right password waits

    assert response.status_code == 429
    assert error_code(response) == "throttled"
    assert response.json()["error"]["details"]["scope"] == "account"
    assert 1 <= int(response["Retry-After"]) <= 900
    assert "access" not in response.json()
    other = APIClient(REMOTE_ADDR="192.0.2.0").post("/api/v1/auth/login", {"username": "station-2",
                                                                           "password": PASSWORD}, format="json")
    assert other.status_code == 200


def test_the_account_limit_holds_whatever_case_or_width_the_name_is_typed_in(three_failures: None) -> None:
    make_user("station-1")
    for name in ["STATION-1", "Station-1", "\uff53\uff54\uff41\uff54\uff49\uff4f\uff4e-1"]:
        APIClient().post("/api/v1/auth/login", {"username": name, "password": "wrong"}, format="json")
    assert login(APIClient(REMOTE_ADDR="198.51.100.7")).status_code == 429


def test_failures_from_one_address_are_limited(three_failures: None) -> None:
    make_user("station-1")
    client = APIClient(REMOTE_ADDR="192.0.2.1")
    for index in range(5):
        body = {"username": f"guess-{index}", "password": "wrong-password"}
        assert client.post("/api/v1/auth/login", body, format="json").status_code == 401

    response = login(client)

    assert (response.status_code, error_code(response)) == (429, "throttled")
    assert response.json()["error"]["details"]["scope"] == "address"
    assert login(APIClient(REMOTE_ADDR="192.0.2.2")).status_code == 200


def test_many_devices_behind_one_address_log_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """At least 600 successful logins a minute of different accounts from one address, at the
    shipped rates (the test run raises them otherwise)."""
    from django.contrib.auth.hashers import make_password
    from rest_framework.throttling import SimpleRateThrottle

    shipped = {"auth": "30/min", "login": "1200/min", "refresh": "600/min", "uploads": "600/min"}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", shipped)

    hashed = make_password(PASSWORD)
    User.objects.bulk_create([User(username=f"device-{index:04d}", password=hashed) for index in range(620)])
    client = APIClient(REMOTE_ADDR="203.0.113.10")
    for index in range(620):
        response = client.post("/api/v1/auth/login", {"username": f"device-{index:04d}", "password": PASSWORD},
                               format="json")
        assert response.status_code == 200, (index, response.content)


def test_a_forged_forwarded_for_header_does_not_reset_the_count(three_failures: None) -> None:
    make_user("station-1")
    client = APIClient()
    for index in range(5):
        client.post("/api/v1/auth/login", {"username": f"guess-{index}", "password": "wrong"}, format="json",
                    HTTP_X_FORWARDED_FOR=f"10.0.0.{index}")

    response = login(client, HTTP_X_FORWARDED_FOR="10.0.0.99")

    assert response.status_code == 429


def test_the_admin_login_page_counts_failures_too(three_failures: None, client: Any) -> None:
    admin = make_user("root", admin=True)
    admin.is_staff = True
    admin.is_superuser = True
    admin.save()
    for _ in range(3):
        page = client.post("/admin/login/", {"username": "root", "password": "wrong-password"})
        assert page.status_code == 200
    refused = client.post("/admin/login/", {"username": "root", "password": PASSWORD})
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    assert "_auth_user_id" not in client.session
    # The API's login counts against the same account.
    assert login_as("root").status_code == 429


def login_as(username: str) -> Any:
    return APIClient().post("/api/v1/auth/login", {"username": username, "password": PASSWORD}, format="json")


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


def test_authenticated_endpoints_are_not_auth_throttled(three_per_minute: None, api: Any) -> None:
    user = make_user("station-1")
    client = api(user)
    for _ in range(5):
        assert client.get("/api/v1/auth/validate").status_code == 200


def test_refresh_has_its_own_higher_rate(three_per_minute: None, three_failures: None,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
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
