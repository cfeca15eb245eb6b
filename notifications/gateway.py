"""The work behind the websocket verbs: authentication, history, resume.

The consumer runs the synchronous functions in a worker thread (one hop per verb, never one per
step); they raise `ApiError`s with the contract's codes, exactly like the REST views.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import redis
from django.conf import settings
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken

from accounts.api.serializers import UserOutput
from accounts.models import User
from accounts.selectors import pool_access, pool_roles_for_user, user_is_admin
from accounts.tokens import access_token_is_denied, access_token_is_denied_async
from notifications.selectors import notification_events, notifications_for
from poolhub.errors import ApiError, Unavailable
from uploads.api.serializers import UploadOutput
from uploads.selectors import events_settle, upload_list

RESUME_PAGE = 500
HISTORY_LIMIT = 100


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(message, code=code, status_code=401)


def jti_is_denied(*, jti: str) -> bool:
    try:
        return access_token_is_denied(jti=jti)
    except redis.RedisError as exc:
        raise Unavailable("the token store is unavailable") from exc


async def jti_is_denied_async(*, jti: str, user_id: object | None = None) -> bool:
    """`jti_is_denied` on the event loop: the per-frame check costs one Redis round trip, no thread
    (and covers the user's deactivation too, given `user_id`)."""
    try:
        return await access_token_is_denied_async(jti=jti, user_id=user_id)
    except redis.RedisError as exc:
        raise Unavailable("the token store is unavailable") from exc


def socket_authenticate(*, token: str) -> tuple[User, dict[str, Any]]:
    """The user behind an access token, and the claims the socket needs (`jti`, `exp`).

    The same checks as the REST authentication: signature and expiry, the logout denylist,
    an active user.
    """
    try:
        access = AccessToken(token)  # type: ignore[arg-type]
    except TokenError as exc:
        raise _unauthorized("invalid_token", "the access token is invalid or expired") from exc
    if jti_is_denied(jti=str(access["jti"])):
        raise _unauthorized("token_revoked", "this access token was logged out")
    user = User.objects.filter(id=access.get(str(settings.SIMPLE_JWT["USER_ID_CLAIM"])), is_active=True).first()
    if user is None:
        raise _unauthorized("invalid_token", "the access token's user no longer exists")
    return user, {"jti": str(access["jti"]), "exp": int(access["exp"])}


def socket_open(*, token: str) -> tuple[User, dict[str, Any], set[str]]:
    """Authenticate a socket and read the user's pools in one go (one thread hop per `connect`)."""
    user, claims = socket_authenticate(token=token)
    return user, claims, user_pool_ids(user=user)


def user_json(user: User) -> dict[str, Any]:
    return dict(UserOutput(user).data)


def user_pool_ids(*, user: User) -> set[str]:
    return {str(pool_id) for pool_id in pool_roles_for_user(user=user)}


def notifications_page(*, user: User, pool_ids: set[str], after: int) -> tuple[list[dict[str, Any]], int, bool]:
    """The notifications for `user` among the next RESUME_PAGE candidate events after `after`:
    (frames in seq order, the last seq looked at, whether more may follow)."""
    is_admin = user_is_admin(user=user)
    events_settle(after=after)  # events committed just now, still above the log's horizon (uploads.events)
    events = list(notification_events(user_id=user.pk, is_admin=is_admin, pool_ids=pool_ids,
                                      after=after)[:RESUME_PAGE])
    frames = list(notifications_for(events=events, user_id=user.pk, is_admin=is_admin, pool_ids=pool_ids))
    return frames, (events[-1].seq if events else after), len(events) == RESUME_PAGE


def history(*, user: User, pool_id: Any) -> list[dict[str, Any]]:
    """The caller's latest uploads (an admin's: everyone's), as `GET /uploads` lists them; with
    `pool`, only that pool's, after the pool access check (404 for a non-member)."""
    filters: dict[str, Any] = {}
    if pool_id is not None:
        filters["pool"] = pool_access(user=user, pool_id=_uuid(pool_id)).pk
    return [dict(UploadOutput(upload).data) for upload in upload_list(user=user, filters=filters)[:HISTORY_LIMIT]]


def _uuid(value: Any) -> UUID | str:
    try:
        return UUID(str(value))
    except ValueError:
        return str(value)  # pool_access answers 404 for it, like for any unknown pool
