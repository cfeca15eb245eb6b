"""POST /auth/password: the signed-in user changes their password from the web page."""

from __future__ import annotations

import pytest

from tests.accounts.test_auth import STRONG, assert_error, bearer, post
from tests.conftest import PASSWORD, make_user

pytestmark = pytest.mark.django_db


def _session(username: str) -> dict[str, str]:
    make_user(username)
    return dict(post("login", {"username": username, "password": PASSWORD}).json())


def test_a_password_change_takes_effect_and_ends_the_old_session() -> None:
    old = _session("dana")

    response = post("password", {"current_password": PASSWORD, "new_password": STRONG, "refresh": old["refresh"]},
                    bearer(old["access"]))

    assert response.status_code == 200
    fresh = response.json()
    assert set(fresh) == {"access", "refresh"}
    assert bearer(fresh["access"]).get("/api/v1/auth/validate").status_code == 200
    assert_error(bearer(old["access"]).get("/api/v1/auth/validate"), 401, "token_revoked")
    assert post("refresh", {"refresh": old["refresh"]}).status_code == 401
    assert_error(post("login", {"username": "dana", "password": PASSWORD}), 401, "invalid_credentials")
    assert post("login", {"username": "dana", "password": STRONG}).status_code == 200


def test_a_wrong_current_password_or_a_weak_new_one_changes_nothing() -> None:
    session = _session("dana")
    client = bearer(session["access"])

    wrong = assert_error(post("password", {"current_password": "not-it", "new_password": STRONG}, client), 400,
                         "invalid")
    weak = assert_error(post("password", {"current_password": PASSWORD, "new_password": "123"}, client), 400,
                        "weak_password")

    assert "current_password" in wrong["details"]["fields"]
    assert "new_password" in weak["details"]["fields"]
    assert post("login", {"username": "dana", "password": PASSWORD}).status_code == 200
    assert client.get("/api/v1/auth/validate").status_code == 200


def test_a_password_change_needs_a_signed_in_user() -> None:
    assert_error(post("password", {"current_password": PASSWORD, "new_password": STRONG}), 401, "not_authenticated")
