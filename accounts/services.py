"""Writes for accounts, pools and memberships."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import authenticate
from django.contrib.auth.hashers import PBKDF2PasswordHasher, get_hasher, make_password
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import RefreshToken, Token

from accounts.models import Membership, Pool, Role, User
from accounts.tokens import RefreshTokenSpent, access_token_deny, refresh_token_spend, token_pair_for
from poolhub.errors import ApiError, BadRequest, Conflict, NotFound


def _invalid(field: str, message: str, code: str = "invalid") -> BadRequest:
    return BadRequest(f"{field}: {message}", code=code, details={"fields": {field: [message]}})


def _password_validate(password: str, *, user: User, field: str = "password") -> None:
    try:
        validate_password(password, user=user)
    except DjangoValidationError as exc:
        raise BadRequest(f"{field}: " + " ".join(exc.messages), code="weak_password",
                         details={"fields": {field: list(exc.messages)}}) from exc


def user_signup(*, username: str, password: str) -> User:
    _password_validate(password, user=User(username=username))
    taken = Conflict("username: this username is taken", code="username_taken",
                     details={"fields": {"username": ["this username is taken"]}})
    # "Alice" and "alice" would be two accounts a human cannot tell apart.
    if User.objects.filter(username__iexact=username).exists():
        raise taken
    try:
        with transaction.atomic():
            return User.objects.create_user(username=username, password=password)
    except IntegrityError as exc:  # a concurrent signup took it between the check and the insert
        raise taken from exc


def user_login(*, username: str, password: str) -> tuple[User, dict[str, str]]:
    user = authenticate(username=username, password=password)
    if not isinstance(user, User) or not user.is_active:
        raise ApiError("wrong username or password", code="invalid_credentials", status_code=401)
    return user, token_pair_for(user=user)


def token_refresh(*, refresh: str) -> dict[str, str]:
    """Rotate: the old refresh token is blacklisted, a new pair is returned."""
    try:
        token = RefreshToken(refresh)  # type: ignore[arg-type]
    except TokenError as exc:
        code = "token_revoked" if "blacklisted" in str(exc).lower() else "invalid_token"
        raise ApiError("the refresh token is invalid, expired or already used", code=code,
                       status_code=401) from exc
    user = User.objects.filter(id=token.get("user_id"), is_active=True).first()
    if user is None:
        raise ApiError("the refresh token's user no longer exists", code="invalid_token", status_code=401)
    try:
        refresh_token_spend(token=token, user=user)
    except RefreshTokenSpent as exc:  # a concurrent refresh spent it first
        raise ApiError("the refresh token was already used", code="token_revoked", status_code=401) from exc
    return token_pair_for(user=user)


def user_logout(*, user: User, access: Token | dict[str, Any] | None, refresh: str | None) -> None:
    """Revoke the access token in hand (denylist by jti) and, if given, the refresh token."""
    if refresh:
        try:
            token = RefreshToken(refresh)  # type: ignore[arg-type]
        except TokenError as exc:
            code = "token_revoked" if "blacklisted" in str(exc).lower() else "invalid_token"
            raise ApiError("the refresh token is invalid or already used", code=code, status_code=401) from exc
        if str(token.get("user_id")) != str(user.id):
            raise _invalid("refresh", "this refresh token belongs to someone else")
        try:
            refresh_token_spend(token=token, user=user)
        except RefreshTokenSpent as exc:
            raise ApiError("the refresh token was already used", code="token_revoked", status_code=401) from exc
    if access is not None:
        access_token_deny(token=access)
        from notifications.services import access_token_revoked  # live sockets on this token close now

        transaction.on_commit(lambda: access_token_revoked(user_id=user.id, jti=str(access["jti"])))


def user_password_change(*, user: User, current_password: str, new_password: str,
                         access: Token | dict[str, Any] | None, refresh: str | None) -> dict[str, str]:
    """Check the current password, set the new one, revoke the session in hand and start a new one."""
    if not user.check_password(current_password):
        raise _invalid("current_password", "the current password is wrong")
    _password_validate(new_password, user=user, field="new_password")
    with transaction.atomic():
        user.set_password(new_password)
        user.save(update_fields=["password"])
        user_logout(user=user, access=access, refresh=refresh)
    return token_pair_for(user=user)


def pool_create(*, data: dict[str, Any]) -> Pool:
    try:
        with transaction.atomic():
            return Pool.objects.create(**data)
    except IntegrityError as exc:
        raise Conflict("name: a pool with this name exists", details={"fields": {"name": ["taken"]}}) from exc


def pool_update(*, pool: Pool, data: dict[str, Any]) -> Pool:
    for field, value in data.items():
        setattr(pool, field, value)
    try:
        with transaction.atomic():
            pool.save(update_fields=[*data.keys()] or None)
    except IntegrityError as exc:
        raise Conflict("name: a pool with this name exists", details={"fields": {"name": ["taken"]}}) from exc
    return pool


def pool_member_add(*, pool: Pool, username: str, role: Role | str) -> Membership:
    user = User.objects.filter(username=username).first()
    if user is None:
        raise _invalid("username", "no user with this username", code="unknown_user")
    try:
        with transaction.atomic():
            membership = Membership.objects.create(pool=pool, user=user, role=role)
    except IntegrityError as exc:
        raise Conflict(f"{username} is already a member of this pool",
                       details={"fields": {"username": ["already a member"]}}) from exc
    _membership_changed(pool=pool, user_id=user.id)  # their open sockets start hearing the pool
    return membership


def pool_members_add_many(*, pool: Pool, usernames: list[str], role: Role | str) -> int:
    """Add many existing users at once (admin bulk add); existing members keep their role."""
    users = User.objects.filter(username__in=usernames)
    existing = set(Membership.objects.filter(pool=pool, user__in=users).values_list("user_id", flat=True))
    new = [Membership(pool=pool, user=u, role=role) for u in users if u.id not in existing]
    Membership.objects.bulk_create(new, batch_size=1000)
    for membership in new:
        _membership_changed(pool=pool, user_id=membership.user_id)
    return len(new)


def pool_member_update(*, pool: Pool, username: str, role: Role | str) -> Membership:
    membership = Membership.objects.filter(pool=pool, user__username=username).select_related("user").first()
    if membership is None:
        raise NotFound("no such member")
    membership.role = role
    membership.save(update_fields=["role"])
    _membership_changed(pool=pool, user_id=membership.user_id)
    return membership


def pool_member_remove(*, pool: Pool, username: str) -> None:
    with transaction.atomic():
        membership = Membership.objects.filter(pool=pool, user__username=username).first()
        if membership is None:
            raise NotFound("no such member")
        user_id = membership.user_id
        membership.delete()
    _membership_changed(pool=pool, user_id=user_id)


def _membership_changed(*, pool: Pool, user_id: Any) -> None:
    from notifications.services import membership_changed  # sockets re-read their pools

    transaction.on_commit(lambda: membership_changed(pool_id=pool.id, user_id=user_id))


# Provisioned passwords are 144 random bits: no guessing attack gets anywhere whatever the hash
# cost, so they are stored with a cheap PBKDF2 (thousands of accounts in seconds, not an hour).
# Django re-hashes each one at full cost on its first login (the iteration count differs).
_PROVISION_PBKDF2_ITERATIONS = 1000


def _random_password_hash(password: str) -> str:
    hasher = get_hasher()
    if isinstance(hasher, PBKDF2PasswordHasher):
        return str(hasher.encode(password, hasher.salt(), iterations=_PROVISION_PBKDF2_ITERATIONS))
    return make_password(password)


def clients_provision(*, pool: Pool, count: int, prefix: str, role: Role | str) -> list[tuple[str, str]]:
    """Create `count` client accounts with random passwords and add them to the pool."""
    taken = {name.lower() for name in
             User.objects.filter(username__istartswith=prefix).values_list("username", flat=True)}
    credentials: list[tuple[str, str]] = []
    users: list[User] = []
    index = 0
    while len(users) < count:
        index += 1
        username = f"{prefix}{index:05d}"
        if username.lower() in taken:
            continue
        password = secrets.token_urlsafe(18)
        users.append(User(username=username, password=_random_password_hash(password)))
        credentials.append((username, password))
    with transaction.atomic():
        User.objects.bulk_create(users, batch_size=1000)
        Membership.objects.bulk_create([Membership(pool=pool, user=user, role=role) for user in users],
                                       batch_size=1000)
    return credentials


def admin_ensure(*, username: str, password: str | None) -> tuple[User, str | None]:
    """Make sure an admin account exists. Returns the generated password when one was made."""
    user = User.objects.filter(username=username).first()
    generated = None
    if user is None:
        generated = None if password else secrets.token_urlsafe(16)
        user = User.objects.create_superuser(username=username, password=password or generated, email="")
    elif password and not user.check_password(password):
        user.set_password(password)
    user.role = User.SystemRole.ADMIN
    user.is_staff = True
    user.is_superuser = True
    user.save()
    return user, generated
