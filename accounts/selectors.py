"""Reads for users, pools and memberships, and the one access check every pool path uses."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet

from accounts.models import Membership, Pool, Role, User
from poolhub.errors import Forbidden, NotFound


def user_is_admin(*, user: User) -> bool:
    return bool(user.is_authenticated and user.is_poolhub_admin)


def pool_role(*, user: User, pool_id: UUID | str) -> str | None:
    """The user's role in the pool, or None for a non-member."""
    return Membership.objects.filter(pool_id=pool_id, user=user).values_list("role", flat=True).first()


def pool_access(*, user: User, pool_id: UUID | str, roles: Iterable[Role] | None = None) -> Pool:
    """The pool, if `user` may act in it with one of `roles` (None: any member).

    Admins pass everywhere. A non-member gets 404, exactly as for a pool that does not exist,
    so pool ids leak nothing; a member without the role gets 403.
    """
    try:
        pool = Pool.objects.get(id=pool_id)
    except (Pool.DoesNotExist, ValueError, TypeError, DjangoValidationError) as exc:  # "x" is no UUID: 404
        raise NotFound("no such pool") from exc
    if user_is_admin(user=user):
        return pool
    role = pool_role(user=user, pool_id=pool.id)
    if role is None:
        raise NotFound("no such pool")
    if roles is not None and role not in {str(r) for r in roles}:
        raise Forbidden(f"your role in this pool ({role}) does not allow this")
    return pool


def pool_list(*, user: User) -> QuerySet[Pool]:
    if user_is_admin(user=user):
        return Pool.objects.all()
    return Pool.objects.filter(memberships__user=user)


def pool_roles_for_user(*, user: User) -> dict[UUID, str]:
    return dict(Membership.objects.filter(user=user).values_list("pool_id", "role"))


def pool_member_list(*, pool: Pool) -> QuerySet[Membership]:
    return Membership.objects.filter(pool=pool).select_related("user").order_by("user__username")
