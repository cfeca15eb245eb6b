"""Identity: one account per name however it is typed, passwords that are passwords, and an
account that is deactivated or changes its password leaves no session behind."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.hashers import make_password
from rest_framework.test import APIClient

from accounts import services
from accounts.models import User
from tests.conftest import PASSWORD, error_code, make_user

pytestmark = pytest.mark.django_db

GOOD = "a-long-and-unusual-passphrase-41"


def signup(username: str, password: str = GOOD) -> Any:
    return APIClient().post("/api/v1/auth/signup", {"username": username, "password": password}, format="json")


@pytest.mark.parametrize("second", ["\uff32\uff341", "RT1", "Rt1", "\uff52\uff54\uff11"])
def test_names_that_differ_by_case_or_compatibility_form_are_one_account(second: str) -> None:
    assert signup("rt1").status_code == 201
    response = signup(second)
    assert (response.status_code, error_code(response)) == (409, "username_taken")
    assert User.objects.count() == 1


def test_a_fullwidth_name_is_stored_normalised() -> None:
    assert signup("\uff32\uff342").json()["user"]["username"] == "RT2"


def test_the_database_refuses_two_names_differing_only_in_case() -> None:
    from django.db import IntegrityError, transaction

    User.objects.create(username="station", password=make_password(PASSWORD))
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.create(username="STATION", password=make_password(PASSWORD))


@pytest.mark.parametrize(("password", "message"), [(" " * 12, "whitespace"), ("short", "too short"),
                                                   ("password1234", "too common")])
def test_signup_refuses_weak_passwords(password: str, message: str) -> None:
    response = signup("newcomer", password)
    assert (response.status_code, error_code(response)) == (400, "weak_password")
    assert message in response.json()["error"]["message"]
    assert not User.objects.filter(username="newcomer").exists()


def test_a_password_change_refuses_whitespace_and_revokes_every_older_refresh_token() -> None:
    user = make_user("changer")
    first = APIClient().post("/api/v1/auth/login", {"username": "changer", "password": PASSWORD}, format="json")
    second = APIClient().post("/api/v1/auth/login", {"username": "changer", "password": PASSWORD}, format="json")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {first.json()['access']}")
    weak = client.post("/api/v1/auth/password", {"current_password": PASSWORD, "new_password": " " * 12},
                       format="json")
    assert (weak.status_code, error_code(weak)) == (400, "weak_password")
    changed = client.post("/api/v1/auth/password", {"current_password": PASSWORD, "new_password": GOOD},
                          format="json")
    assert changed.status_code == 200, changed.content
    # The other device's session, started with the old password, cannot be refreshed any more.
    stale = APIClient().post("/api/v1/auth/refresh", {"refresh": second.json()["refresh"]}, format="json")
    assert (stale.status_code, error_code(stale)) == (401, "token_revoked")
    fresh = APIClient().post("/api/v1/auth/refresh", {"refresh": changed.json()["refresh"]}, format="json")
    assert fresh.status_code == 200
    user.refresh_from_db()
    assert user.check_password(GOOD)


def test_deactivation_revokes_refresh_tokens_and_denies_access_tokens() -> None:
    user = make_user("leaver")
    tokens = APIClient().post("/api/v1/auth/login", {"username": "leaver", "password": PASSWORD},
                              format="json").json()
    services.user_active_set(user=user, active=False)
    refreshed = APIClient().post("/api/v1/auth/refresh", {"refresh": tokens["refresh"]}, format="json")
    assert refreshed.status_code == 401
    from rest_framework_simplejwt.tokens import AccessToken

    from accounts.tokens import access_token_is_denied

    assert access_token_is_denied(jti=str(AccessToken(tokens["access"])["jti"]), user_id=user.id)
    services.user_active_set(user=user, active=True)
    assert not access_token_is_denied(jti=str(AccessToken(tokens["access"])["jti"]), user_id=user.id)


def test_the_admin_deactivating_a_user_ends_their_sessions(client: Any) -> None:
    admin = make_user("root", admin=True)
    admin.is_staff = admin.is_superuser = True
    admin.save()
    leaver = make_user("leaver")
    refresh = APIClient().post("/api/v1/auth/login", {"username": "leaver", "password": PASSWORD},
                               format="json").json()["refresh"]
    assert client.login(username="root", password=PASSWORD)
    page = client.get(f"/admin/accounts/user/{leaver.id}/change/")
    form = page.context["adminform"].form
    data = {key: value for key, value in form.initial.items() if value is not None and key != "password"}
    data.update({"is_active": "", "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00",
                 "last_login_0": "", "last_login_1": "", "groups": [], "user_permissions": []})
    data = {key: value for key, value in data.items() if key not in {"date_joined", "last_login", "is_active"}}
    response = client.post(f"/admin/accounts/user/{leaver.id}/change/", data)
    assert response.status_code == 302, response.content[:2000]
    leaver.refresh_from_db()
    assert not leaver.is_active
    assert APIClient().post("/api/v1/auth/refresh", {"refresh": refresh}, format="json").status_code == 401


