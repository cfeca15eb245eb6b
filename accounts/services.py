"""Writes for accounts, pools and memberships."""

from __future__ import annotations

import base64
import csv
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import RefreshToken, Token

from accounts.hashers import generated_secret, generated_secret_hash
from accounts.login_guard import login_failure_record, login_guard_check
from accounts.models import Membership, Pool, Role, User
from accounts.tokens import (
    RefreshTokenSpent,
    access_token_deny,
    refresh_token_spend,
    refresh_tokens_revoke_all,
    token_pair_issue,
    user_tokens_allow,
    user_tokens_deny,
)
from poolhub.errors import ApiError, BadRequest, Conflict, NotFound, Unavailable


def _invalid(field: str, message: str, code: str = "invalid") -> BadRequest:
    return BadRequest(f"{field}: {message}", code=code, details={"fields": {field: [message]}})


def _password_validate(password: str, *, user: User, field: str = "password") -> None:
    try:
        validate_password(password, user=user)
    except DjangoValidationError as exc:
        raise BadRequest(f"{field}: " + " ".join(exc.messages), code="weak_password",
                         details={"fields": {field: list(exc.messages)}}) from exc


def user_signup(*, username: str, password: str) -> User:
    # "RT1" in fullwidth letters and "RT1" are one name to a human: compatibility forms fold before the check (Django
    # stores names NFKC-normalised; the database refuses two that differ only in case).
    username = User.normalize_username(username)
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


def user_login(*, username: str, password: str, address: str) -> tuple[User, dict[str, str]]:
    """Failed logins are counted per account and per address (accounts.login_guard): past either
    limit, 429 before the password is checked."""
    login_guard_check(username=username, address=address)
    user = authenticate(username=User.normalize_username(username), password=password)
    if not isinstance(user, User) or not user.is_active:
        login_failure_record(username=username, address=address)
        raise ApiError("wrong username or password", code="invalid_credentials", status_code=401)
    return user, token_pair_issue(user=user)


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
    return token_pair_issue(user=user)


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
        refresh_tokens_revoke_all(user=user)  # every session started with the old password ends
    return token_pair_issue(user=user)


def user_active_set(*, user: User, active: bool) -> None:
    """Deactivate (or reactivate) an account. Deactivation ends everything at once: its refresh
    tokens are revoked, its access tokens denied (REST and every websocket frame check it), and
    its open sockets are closed."""
    with transaction.atomic():
        User.objects.filter(id=user.id).update(is_active=active)
        user.is_active = active
        if active:
            user_tokens_allow(user_id=user.id)
            return
        refresh_tokens_revoke_all(user=user)
        user_tokens_deny(user_id=user.id)
        from notifications.services import access_token_revoked  # its open sockets close now

        user_id = user.id
        transaction.on_commit(lambda: access_token_revoked(user_id=user_id, jti=None))


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


@dataclass(frozen=True)
class ProvisionedMember:
    username: str
    password: str  # generated; shown once to whoever asked, never stored in clear or logged
    role: str


PROVISION_PREFIX = re.compile(r"^[\w.@+-]{1,100}\Z")


def pool_members_provision(*, pool: Pool, count: int, prefix: str, role: Role | str) -> list[ProvisionedMember]:
    """Create `count` accounts named `<prefix><n>` with generated passwords, members of `pool` with
    `role`, in one transaction (all or none). Used by the API, the Django admin and the
    `provision_clients` command. Passwords are hashed with accounts.hashers (why there)."""
    limit = int(settings.POOLHUB_PROVISION_MAX)
    if not 1 <= count <= limit:
        raise _invalid("count", f"must be between 1 and {limit}")
    if not PROVISION_PREFIX.match(prefix):
        raise _invalid("prefix", "1 to 100 letters, digits or . @ + - _")
    for _ in range(3):
        try:
            with transaction.atomic():
                return _provision(pool=pool, count=count, prefix=prefix, role=str(role))
        except IntegrityError:  # a concurrent provision or signup took one of the names: pick again
            continue
    raise Conflict("usernames with this prefix are being taken concurrently; try again")


def _provision(*, pool: Pool, count: int, prefix: str, role: str) -> list[ProvisionedMember]:
    # "Alice" and "alice" would be two accounts a human cannot tell apart (as at signup).
    taken = {name.lower() for name in
             User.objects.filter(username__istartswith=prefix).values_list("username", flat=True)}
    members: list[ProvisionedMember] = []
    users: list[User] = []
    index = 0
    while len(users) < count:
        index += 1
        username = f"{prefix}{index:05d}"
        if username.lower() in taken:
            continue
        password = generated_secret()
        users.append(User(username=username, password=generated_secret_hash(password)))
        members.append(ProvisionedMember(username=username, password=password, role=role))
    User.objects.bulk_create(users, batch_size=500)
    Membership.objects.bulk_create([Membership(pool=pool, user=user, role=role) for user in users], batch_size=500)
    return members


def pool_members_provision_once(*, pool: Pool, by: User, count: int, prefix: str, role: Role | str,
                                idempotency_key: str | None) -> tuple[list[ProvisionedMember], bool]:
    """`pool_members_provision`, once per `Idempotency-Key` (uploads.idempotency: the same key and
    request returns the first response again and creates nothing; another request with it is 409).

    The first response holds the passwords, and that mechanism keeps a response for 48 h; so it is
    kept sealed (Fernet, from the well-kept `cryptography` package) under a key derived from
    SECRET_KEY, the caller and the Idempotency-Key itself, which the server stores only hashed.
    Whoever reads Redis learns nothing; the client that lost the response on a dropped connection
    gets its credentials by retrying with its key. Returns the members and whether it is a replay.
    """
    if idempotency_key is None:
        return pool_members_provision(pool=pool, count=count, prefix=prefix, role=role), False
    from uploads.idempotency import Outcome, fingerprint_of, idempotent  # late: uploads imports accounts

    fields = {"count": [str(count)], "prefix": [prefix], "role": [str(role)]}
    request = fingerprint_of(endpoint="members.provision", pool_id=pool.id, fields=fields, files={})
    sealer = _sealer(user_id=by.id, key=idempotency_key)

    def run() -> Outcome:
        members = pool_members_provision(pool=pool, count=count, prefix=prefix, role=role)
        plain = json.dumps([[m.username, m.password, m.role] for m in members]).encode()
        return Outcome(request, 201, {"sealed": sealer.encrypt(plain).decode()})

    try:
        outcome, replayed = idempotent(user_id=by.id, key=idempotency_key, run=run, fingerprint=lambda: request)
    except redis.RedisError as exc:
        raise Unavailable("the idempotency store is unavailable; try again shortly") from exc
    rows = json.loads(sealer.decrypt(str(outcome.body["sealed"]).encode()))
    return [ProvisionedMember(username=u, password=p, role=r) for u, p, r in rows], replayed


def _sealer(*, user_id: Any, key: str) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=str(user_id).encode(),
                   info=b"poolhub provision replay " + key.encode()).derive(settings.SECRET_KEY.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


class TextSink(Protocol):
    def write(self, text: str, /) -> Any: ...


CREDENTIALS_COLUMNS = ("username", "password", "role", "pool", "url")  # the columns `poolhub provision` writes


def members_csv_write(handle: TextSink, *, members: list[ProvisionedMember], pool: Pool, url: str = "") -> None:
    """Provisioned credentials as CSV, for a file or a download, in the columns of the client's
    `poolhub provision` (username, password, role, pool, url), so every way of provisioning gives
    devices the same file. `url` is the server's base URL, blank when unknown."""
    writer = csv.writer(handle)
    writer.writerow(CREDENTIALS_COLUMNS)
    for member in members:
        writer.writerow([member.username, member.password, member.role, str(pool.id), url])


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
