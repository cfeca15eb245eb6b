"""Users, pools and memberships: poolhub's identity and access model."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from django.contrib.auth.models import AbstractUser
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models.functions import Lower

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_WINDOW_SECONDS = 60
MAX_WINDOW_SECONDS = 30 * 86400
MAX_TIMESTAMP_AGE_SECONDS = 10 * 365 * 86400


class User(AbstractUser):
    class SystemRole(models.TextChoices):
        ADMIN = "admin"
        USER = "user"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    role = models.CharField(max_length=16, choices=SystemRole.choices, default=SystemRole.USER)

    class Meta(AbstractUser.Meta):
        # "Alice" and "alice" (and, stored NFKC-normalised, its fullwidth form) are one account.
        constraints = [models.UniqueConstraint(Lower("username"), name="username_unique_ignoring_case")]

    @property
    def is_poolhub_admin(self) -> bool:
        return self.role == self.SystemRole.ADMIN or self.is_superuser

    def check_password(self, raw_password: str | None) -> bool:
        """A provisioned account's generated secret keeps its one-iteration hash (accounts/hashers.py):
        Django would otherwise re-hash it at full cost on its first login, which protects nothing."""
        from accounts.hashers import GeneratedSecretHasher, is_generated_secret_hash

        if raw_password is not None and is_generated_secret_hash(self.password):
            return bool(GeneratedSecretHasher().verify(raw_password, self.password))
        return super().check_password(raw_password)

    async def acheck_password(self, raw_password: str | None) -> bool:
        from accounts.hashers import is_generated_secret_hash

        if raw_password is not None and is_generated_secret_hash(self.password):
            return self.check_password(raw_password)
        return await super().acheck_password(raw_password)


class Role(models.TextChoices):
    """A member's role in one pool."""

    MANAGER = "manager"
    CONTRIBUTOR = "contributor"
    LISTENER = "listener"
    EXPORTER = "exporter"


# Roles whose members may upload to a pool, on every path (REST, websocket transfers).
WRITER_ROLES = (Role.CONTRIBUTOR, Role.MANAGER)


class LatePolicy(models.TextChoices):
    ACCEPT = "accept"
    NEXT = "next"
    REJECT = "reject"


class ShortRoundPolicy(models.TextChoices):
    """What a window closed by time does with fewer contributors than `min_contributors`."""

    ROLL = "roll"  # its uploads move to the next open window; this group ends `skipped`
    SKIP = "skip"  # it ends `skipped` with its uploads; it is never exported


class Pool(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, unique=True)
    window_seconds = models.PositiveIntegerField(
        default=3600, validators=[MinValueValidator(MIN_WINDOW_SECONDS), MaxValueValidator(MAX_WINDOW_SECONDS)]
    )
    grace_seconds = models.PositiveIntegerField(default=60, validators=[MaxValueValidator(MAX_WINDOW_SECONDS)])
    # Windows are [origin + k*window, origin + (k+1)*window): the epoch unless a pool says otherwise.
    origin = models.DateTimeField(default=EPOCH)
    max_file_bytes = models.PositiveBigIntegerField(default=64 * 1024 * 1024, validators=[MinValueValidator(1)])
    # Content types (as detected from the bytes) this pool accepts; empty means "anything
    # that is not an executable or a script".
    allowed_types = models.JSONField(default=list, blank=True)
    late_policy = models.CharField(max_length=8, choices=LatePolicy.choices, default=LatePolicy.ACCEPT)
    lease_seconds = models.PositiveIntegerField(default=600, validators=[MinValueValidator(10)])
    close_min_uploads = models.PositiveIntegerField(null=True, blank=True)
    close_min_contributors = models.PositiveIntegerField(null=True, blank=True)
    # Lifecycle (docs/lifecycle.md): bytes the pool may hold (None: no cap), days content is
    # kept (None: forever), and round settings: contributors needed before a close by time
    # exports, what happens otherwise, and a cap on one contributor's uploads per window.
    quota_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    retention_days = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    min_contributors = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    short_round_policy = models.CharField(max_length=8, choices=ShortRoundPolicy.choices,
                                          default=ShortRoundPolicy.ROLL)
    max_uploads_per_contributor = models.PositiveIntegerField(null=True, blank=True,
                                                              validators=[MinValueValidator(1)])
    # Results over this size are refused with 413 (capped by the server's POOLHUB_MAX_RESULT_BYTES).
    max_result_bytes = models.PositiveBigIntegerField(default=64 * 1024 * 1024, validators=[MinValueValidator(1)])
    # Uploads whose timestamp is older than this are refused (400 invalid_timestamp) instead of
    # opening ancient windows that beat would close and export at once.
    max_timestamp_age_seconds = models.PositiveIntegerField(
        default=30 * 86400,
        validators=[MinValueValidator(MIN_WINDOW_SECONDS), MaxValueValidator(MAX_TIMESTAMP_AGE_SECONDS)],
    )
    webhook_url = models.URLField(blank=True, default="")
    webhook_secret = models.CharField(max_length=128, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.CONTRIBUTOR)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["pool", "user"], name="one_membership_per_pool")]
        indexes = [models.Index(fields=["user", "pool"])]

    def __str__(self) -> str:
        return f"{self.user} in {self.pool} as {self.role}"
