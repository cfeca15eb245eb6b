"""JWT issue and revocation. Logout denylists the access token's `jti` in Redis until it expires."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, cast

from django.conf import settings
from django.db import IntegrityError, transaction
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken, Token
from rest_framework_simplejwt.utils import datetime_from_epoch

from accounts.models import User
from poolhub.redis import async_redis_client, redis_client

_DENYLIST_PREFIX = "poolhub:jwt:denied:"
# A deactivated user's access tokens are all denied for as long as any of them can live.
_INACTIVE_PREFIX = "poolhub:jwt:inactive-user:"


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


def _denied_keys(jti: str, user_id: object | None) -> list[str]:
    return [_DENYLIST_PREFIX + jti] + ([f"{_INACTIVE_PREFIX}{user_id}"] if user_id is not None else [])


def access_token_is_denied(*, jti: str, user_id: object | None = None) -> bool:
    return bool(redis_client().exists(*_denied_keys(jti, user_id)))


async def access_token_is_denied_async(*, jti: str, user_id: object | None = None) -> bool:
    """The same check from an event loop, without a thread (the socket gateway runs it per frame):
    one EXISTS over the token's key and, given its user, the user's deactivation mark."""
    return bool(await async_redis_client().exists(*_denied_keys(jti, user_id)))


def user_tokens_deny(*, user_id: object) -> None:
    """Every access token of this user is denied from now until the longest could expire."""
    lifetime = int(cast(timedelta, settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"]).total_seconds())
    redis_client().set(f"{_INACTIVE_PREFIX}{user_id}", b"1", ex=max(1, lifetime + 60))


def user_tokens_allow(*, user_id: object) -> None:
    redis_client().delete(f"{_INACTIVE_PREFIX}{user_id}")


def refresh_tokens_revoke_all(*, user: User) -> int:
    """Blacklist every refresh token issued to the user so far (password change, deactivation)."""
    live = OutstandingToken.objects.filter(user=user, blacklistedtoken__isnull=True)
    return len(BlacklistedToken.objects.bulk_create([BlacklistedToken(token=token) for token in live],
                                                    ignore_conflicts=True))
