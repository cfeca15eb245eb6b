"""JWT issue and revocation. Logout denylists the access token's `jti` in Redis until it expires."""

from __future__ import annotations

import time
from typing import Any

from rest_framework_simplejwt.tokens import RefreshToken, Token

from accounts.models import User
from poolhub.redis import redis_client

_DENYLIST_PREFIX = "poolhub:jwt:denied:"


def token_pair_for(*, user: User) -> dict[str, str]:
    refresh = RefreshToken.for_user(user)
    return {"access": str(refresh.access_token), "refresh": str(refresh)}


def access_token_deny(*, token: Token | dict[str, Any]) -> None:
    jti = str(token["jti"])
    ttl = max(1, int(token["exp"]) - int(time.time()))
    redis_client().set(_DENYLIST_PREFIX + jti, b"1", ex=ttl)


def access_token_is_denied(*, jti: str) -> bool:
    return bool(redis_client().exists(_DENYLIST_PREFIX + jti))
