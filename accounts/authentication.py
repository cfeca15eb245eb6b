"""DRF authentication: simplejwt's bearer tokens, plus the logout denylist."""

from __future__ import annotations

from typing import Any

import redis
from rest_framework.request import Request
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken
from rest_framework_simplejwt.tokens import Token

from accounts.tokens import access_token_is_denied
from poolhub.errors import ApiError, Unavailable


class DenylistJWTAuthentication(JWTAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, Token] | None:
        try:
            result = super().authenticate(request)
        except (InvalidToken, AuthenticationFailed) as exc:
            raise ApiError("the access token is invalid or expired", code="invalid_token", status_code=401) from exc
        if result is None:
            return None
        user, token = result
        try:
            denied = access_token_is_denied(jti=str(token["jti"]))
        except redis.RedisError as exc:
            raise Unavailable("the token store is unavailable") from exc
        if denied:
            raise ApiError("this access token was logged out", code="token_revoked", status_code=401)
        return user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
