"""JWT issue and revocation. Logout denylists the access token's `jti` in Redis until it expires."""

from __future__ import annotations

import time
from typing import Any

from django.db import IntegrityError, transaction
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken, Token
from rest_framework_simplejwt.utils import datetime_from_epoch

from accounts.models import User
from poolhub.redis import async_redis_client, redis_client

_DENYLIST_PREFIX = "poolhub:jwt:denied:"


def token_pair_issue(*, user: User) -> dict[str, str]:
    refresh = RefreshToken.for_user(user)
    return {"access": str(refresh.access_token), "refresh": str(refresh)}


class RefreshTokenSpent(Exception):
    """The refresh token was already used (rotated or logged out)."""


def refresh_token_spend(*, token: RefreshToken, user: User) -> None:
    """Blacklist a refresh token exactly once.

    simplejwt's own `blacklist()` uses get_or_create, so two concurrent refreshes of one token
    would both succeed and both get a fresh pair; inserting the blacklist row (unique per token)
    lets the database pick a single winner.
    """
    outstanding, _ = OutstandingToken.objects.get_or_create(
        jti=str(token["jti"]),
        defaults={"user": user, "token": str(token), "created_at": token.current_time,
                  "expires_at": datetime_from_epoch(token["exp"])},
    )
    try:
        with transaction.atomic():
            BlacklistedToken.objects.create(token=outstanding)
    except IntegrityError as exc:
        raise RefreshTokenSpent(str(token["jti"])) from exc


def access_token_deny(*, token: Token | dict[str, Any]) -> None:
    jti = str(token["jti"])
    ttl = max(1, int(token["exp"]) - int(time.time()))
    redis_client().set(_DENYLIST_PREFIX + jti, b"1", ex=ttl)


def access_token_is_denied(*, jti: str) -> bool:
    return bool(redis_client().exists(_DENYLIST_PREFIX + jti))


async def access_token_is_denied_async(*, jti: str) -> bool:
    """The same check from an event loop, without a thread (the socket gateway runs it per frame)."""
    return bool(await async_redis_client().exists(_DENYLIST_PREFIX + jti))
