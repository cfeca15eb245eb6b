"""Forged, expired and tampered JWTs, and the denylist and rotation under the hood."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import jwt
import pytest
from django.conf import settings
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts.models import User
from accounts.tokens import RefreshTokenSpent, access_token_is_denied, refresh_token_spend
from tests.conftest import error_code, make_user

pytestmark = pytest.mark.django_db


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def validate_with(token: str) -> Any:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.get("/api/v1/auth/validate")


@pytest.fixture
def user() -> User:
    return make_user("station-1")


def claims(user: User) -> dict[str, Any]:
    return dict(AccessToken.for_user(user).payload)


def test_a_fresh_token_works(user: User) -> None:
    assert validate_with(str(AccessToken.for_user(user))).status_code == 200


def test_access_tokens_live_minutes_not_days(user: User) -> None:
    payload = claims(user)

    assert 60 <= payload["exp"] - payload["iat"] <= 3600


def test_expired_access_token(user: User) -> None:
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=-timedelta(seconds=5))

    response = validate_with(str(token))

    assert response.status_code == 401
    assert error_code(response) == "invalid_token"


def test_expired_refresh_token(user: User) -> None:
    token = RefreshToken.for_user(user)
    token.set_exp(lifetime=-timedelta(seconds=5))

    response = APIClient().post("/api/v1/auth/refresh", {"refresh": str(token)}, format="json")

    assert response.status_code == 401
    assert error_code(response) == "invalid_token"


def test_token_signed_with_another_key(user: User) -> None:
    forged = jwt.encode(claims(user), "not-the-server-key-but-long-enough-for-hs256", algorithm="HS256")

    response = validate_with(forged)

    assert response.status_code == 401
    assert error_code(response) == "invalid_token"


def test_tampered_payload_keeps_the_old_signature(user: User) -> None:
    admin = make_user("root", admin=True)
    header, _, signature = str(AccessToken.for_user(user)).split(".")
    payload = b64({**claims(user), "user_id": str(admin.id)})

    response = validate_with(f"{header}.{payload}.{signature}")

    assert response.status_code == 401
    assert error_code(response) == "invalid_token"


def test_tampered_signature(user: User) -> None:
    token = str(AccessToken.for_user(user))
    flipped = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")

    response = validate_with(flipped)

    assert response.status_code == 401
    assert error_code(response) == "invalid_token"


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_token_is_refused(user: User, alg: str) -> None:
    unsigned = f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(claims(user))}."

    response = validate_with(unsigned)

    assert response.status_code == 401
    assert error_code(response) == "invalid_token"


def test_hs512_token_with_the_right_key_is_still_refused(user: User) -> None:
    """Only the configured algorithm is accepted, whatever the header says."""
    other_alg = jwt.encode(claims(user), str(settings.SIMPLE_JWT["SIGNING_KEY"]), algorithm="HS512")

    assert validate_with(other_alg).status_code == 401


def test_logout_denylists_the_access_token_until_it_expires(user: User) -> None:
    token = AccessToken.for_user(user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    assert client.post("/api/v1/auth/logout", format="json").status_code == 204

    assert access_token_is_denied(jti=str(token["jti"]))
    assert not access_token_is_denied(jti=str(AccessToken.for_user(user)["jti"]))


def test_a_refresh_token_can_be_spent_only_once(user: User) -> None:
    """Two refreshes racing with one token: the database lets exactly one of them through."""
    token = RefreshToken.for_user(user)
    refresh_token_spend(token=token, user=user)

    with pytest.raises(RefreshTokenSpent):
        again = RefreshToken(str(token), verify=False)  # type: ignore[arg-type]
        refresh_token_spend(token=again, user=user)
