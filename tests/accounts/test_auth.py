"""The auth flows of docs/api.md (signup, login, refresh, logout, validate) and their bad inputs."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import Membership, Pool, Role, User
from tests.conftest import PASSWORD, error_code, make_user

pytestmark = pytest.mark.django_db

STRONG = "a-long-and-unusual-passphrase-41"


def post(path: str, body: Any, client: APIClient | None = None, **kwargs: Any) -> Any:
    return (client or APIClient()).post(f"/api/v1/auth/{path}", body, format="json", **kwargs)


def bearer(access: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert error_code(response) == code
    assert response.json()["error"]["message"]
    return dict(response.json()["error"])


# --- signup ---------------------------------------------------------------------------------


def test_signup_creates_a_logged_in_user() -> None:
    response = post("signup", {"username": "station-1", "password": STRONG})

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"user", "access", "refresh"}
    assert body["user"]["username"] == "station-1"
    assert body["user"]["role"] == "user"
    assert User.objects.filter(username="station-1", id=body["user"]["id"]).exists()
    me = bearer(body["access"]).get("/api/v1/auth/validate")
    assert me.status_code == 200
    assert me.json() == {"user": body["user"], "pools": []}


def test_signup_duplicate_username_is_refused_and_keeps_the_first_account() -> None:
    first = make_user("station-1")

    response = post("signup", {"username": "station-1", "password": STRONG})

    error = assert_error(response, 409, "username_taken")
    assert "username" in error["details"]["fields"]
    assert list(User.objects.filter(username="station-1")) == [first]
    assert User.objects.get(username="station-1").check_password(PASSWORD)


def test_signup_username_differing_only_in_case_is_refused() -> None:
    make_user("station-1")

    response = post("signup", {"username": "STATION-1", "password": STRONG})

    assert_error(response, 409, "username_taken")
    assert not User.objects.filter(username="STATION-1").exists()


@pytest.mark.parametrize("password", ["short", "password1234", "12345678901234", "station-1!!"])
def test_signup_weak_password_is_refused_and_creates_nothing(password: str) -> None:
    response = post("signup", {"username": "station-1", "password": password})

    error = assert_error(response, 400, "weak_password")
    assert error["details"]["fields"]["password"]
    assert not User.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "username"),
        ({"username": "station-1"}, "password"),
        ({"password": STRONG}, "username"),
        ({"username": "", "password": STRONG}, "username"),
        ({"username": "has space", "password": STRONG}, "username"),
        ({"username": "x" * 151, "password": STRONG}, "username"),
        ({"username": ["station-1"], "password": STRONG}, "username"),
        ({"username": "station-1", "password": None}, "password"),
    ],
)
def test_signup_malformed_body_names_the_field(body: dict[str, Any], field: str) -> None:
    response = post("signup", body)

    error = assert_error(response, 400, "invalid")
    assert field in error["details"]["fields"]
    assert not User.objects.exists()


def test_signup_body_that_is_not_an_object_is_refused() -> None:
    response = post("signup", ["station-1", STRONG])

    assert_error(response, 400, "invalid")
    assert not User.objects.exists()


def test_signup_body_that_is_not_json_is_refused() -> None:
    response = APIClient().post("/api/v1/auth/signup", b'{"username": "station-1", ', content_type="application/json")

    assert_error(response, 400, "invalid")
    assert not User.objects.exists()


def test_signup_cannot_make_an_admin() -> None:
    response = post("signup", {"username": "station-1", "password": STRONG, "role": "admin", "is_superuser": True})

    assert response.status_code == 201
    assert response.json()["user"]["role"] == "user"
    user = User.objects.get(username="station-1")
    assert (user.role, user.is_superuser, user.is_staff) == ("user", False, False)


# --- login ----------------------------------------------------------------------------------


def test_login_returns_the_user_and_a_working_token_pair() -> None:
    user = make_user("station-1")

    response = post("login", {"username": "station-1", "password": PASSWORD})

    assert response.status_code == 200
    body = response.json()
    assert body["user"] == {"id": str(user.id), "username": "station-1", "role": "user"}
    assert bearer(body["access"]).get("/api/v1/auth/validate").status_code == 200
    assert post("refresh", {"refresh": body["refresh"]}).status_code == 200


def test_login_of_an_admin_says_admin() -> None:
    make_user("root", admin=True)

    response = post("login", {"username": "root", "password": PASSWORD})

    assert response.json()["user"]["role"] == "admin"


@pytest.mark.parametrize(
    ("username", "password"),
    [("station-1", "not-the-password"), ("nobody", PASSWORD), ("STATION-1", PASSWORD), ("station-1", "")],
)
def test_login_with_bad_credentials_says_so_without_telling_which(username: str, password: str) -> None:
    make_user("station-1")

    response = post("login", {"username": username, "password": password})

    status, code = (400, "invalid") if password == "" else (401, "invalid_credentials")
    error = assert_error(response, status, code)
    if status == 401:
        assert error["message"] == "wrong username or password"
        assert "access" not in response.json()


def test_login_of_a_deactivated_user_is_refused() -> None:
    user = make_user("station-1")
    user.is_active = False
    user.save()

    assert_error(post("login", {"username": "station-1", "password": PASSWORD}), 401, "invalid_credentials")


def test_login_malformed_body() -> None:
    assert_error(post("login", {"user": "station-1"}), 400, "invalid")
    assert_error(post("login", "station-1"), 400, "invalid")


# --- refresh --------------------------------------------------------------------------------


def login(username: str = "station-1") -> dict[str, Any]:
    response = post("login", {"username": username, "password": PASSWORD})
    assert response.status_code == 200
    return dict(response.json())


def test_refresh_rotates_the_pair() -> None:
    make_user("station-1")
    first = login()

    response = post("refresh", {"refresh": first["refresh"]})

    assert response.status_code == 200
    pair = response.json()
    assert set(pair) == {"access", "refresh"}
    assert pair["refresh"] != first["refresh"]
    assert bearer(pair["access"]).get("/api/v1/auth/validate").status_code == 200
    assert post("refresh", {"refresh": pair["refresh"]}).status_code == 200


def test_refresh_token_used_twice_is_refused_the_second_time() -> None:
    make_user("station-1")
    first = login()
    assert post("refresh", {"refresh": first["refresh"]}).status_code == 200

    response = post("refresh", {"refresh": first["refresh"]})

    assert_error(response, 401, "token_revoked")


def test_refresh_with_an_access_token_is_refused() -> None:
    make_user("station-1")

    assert_error(post("refresh", {"refresh": login()["access"]}), 401, "invalid_token")


@pytest.mark.parametrize("body", [{}, {"refresh": ""}, {"refresh": 42}, {"token": "x"}])
def test_refresh_malformed_body(body: dict[str, Any]) -> None:
    response = post("refresh", body)

    assert response.status_code in {400, 401}
    assert error_code(response) in {"invalid", "invalid_token"}


def test_refresh_with_garbage_is_refused() -> None:
    assert_error(post("refresh", {"refresh": "not.a.jwt"}), 401, "invalid_token")


def test_refresh_token_of_a_deleted_user_is_refused() -> None:
    user = make_user("station-1")
    pair = login()
    user.delete()

    assert post("refresh", {"refresh": pair["refresh"]}).status_code == 401


# --- logout ---------------------------------------------------------------------------------


def test_logout_revokes_the_access_and_the_refresh_token() -> None:
    make_user("station-1")
    pair = login()
    client = bearer(pair["access"])

    response = client.post("/api/v1/auth/logout", {"refresh": pair["refresh"]}, format="json")

    assert response.status_code == 204
    assert_error(client.get("/api/v1/auth/validate"), 401, "token_revoked")
    assert_error(client.get("/api/v1/pools"), 401, "token_revoked")
    assert_error(post("refresh", {"refresh": pair["refresh"]}), 401, "token_revoked")


def test_logout_without_refresh_still_revokes_the_access_token() -> None:
    make_user("station-1")
    pair = login()
    client = bearer(pair["access"])

    assert client.post("/api/v1/auth/logout", format="json").status_code == 204

    assert_error(client.get("/api/v1/auth/validate"), 401, "token_revoked")


def test_logout_leaves_other_sessions_of_the_user_alone() -> None:
    make_user("station-1")
    phone, laptop = login(), login()

    bearer(phone["access"]).post("/api/v1/auth/logout", {"refresh": phone["refresh"]}, format="json")

    assert bearer(laptop["access"]).get("/api/v1/auth/validate").status_code == 200
    assert post("refresh", {"refresh": laptop["refresh"]}).status_code == 200


def test_logout_with_someone_elses_refresh_token_is_refused_and_revokes_nothing() -> None:
    make_user("station-1")
    make_user("station-2")
    mine, theirs = login("station-1"), login("station-2")
    client = bearer(mine["access"])

    response = client.post("/api/v1/auth/logout", {"refresh": theirs["refresh"]}, format="json")

    assert_error(response, 400, "invalid")
    assert client.get("/api/v1/auth/validate").status_code == 200
    assert post("refresh", {"refresh": theirs["refresh"]}).status_code == 200


def test_logout_with_a_spent_refresh_token_is_refused() -> None:
    make_user("station-1")
    pair = login()
    rotated = post("refresh", {"refresh": pair["refresh"]}).json()

    response = bearer(rotated["access"]).post("/api/v1/auth/logout", {"refresh": pair["refresh"]}, format="json")

    assert_error(response, 401, "token_revoked")


def test_logout_needs_a_token() -> None:
    assert_error(APIClient().post("/api/v1/auth/logout", format="json"), 401, "not_authenticated")


# --- validate and the Authorization header ----------------------------------------------------


def test_validate_lists_the_callers_pools_with_roles() -> None:
    user = make_user("station-1")
    mine = Pool.objects.create(name="mine")
    Pool.objects.create(name="not-mine")
    Membership.objects.create(pool=mine, user=user, role=Role.LISTENER)

    response = bearer(login()["access"]).get("/api/v1/auth/validate")

    assert response.status_code == 200
    assert response.json()["pools"] == [{"id": str(mine.id), "name": "mine", "role": "listener"}]


def test_validate_for_an_admin_lists_every_pool() -> None:
    make_user("root", admin=True)
    Pool.objects.create(name="a")
    Pool.objects.create(name="b")

    response = bearer(login("root")["access"]).get("/api/v1/auth/validate")

    assert [p["name"] for p in response.json()["pools"]] == ["a", "b"]


def test_missing_authorization_header() -> None:
    response = APIClient().get("/api/v1/auth/validate")

    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer a b", "Token abc", "Basic c3RhdGlvbjpwdw=="])
def test_malformed_authorization_header(header: str) -> None:
    response = APIClient().get("/api/v1/auth/validate", HTTP_AUTHORIZATION=header)

    assert response.status_code == 401
    assert error_code(response) in {"not_authenticated", "invalid_token"}


def test_refresh_token_is_not_an_access_token() -> None:
    make_user("station-1")

    assert_error(bearer(login()["refresh"]).get("/api/v1/auth/validate"), 401, "invalid_token")


def test_token_of_a_deactivated_user_stops_working() -> None:
    user = make_user("station-1")
    client = bearer(login()["access"])
    user.is_active = False
    user.save()

    assert_error(client.get("/api/v1/auth/validate"), 401, "invalid_token")
