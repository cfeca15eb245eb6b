"""Users, pools and memberships: poolhub's identity and access model."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from django.contrib.auth.models import AbstractUser
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_WINDOW_SECONDS = 60
MAX_WINDOW_SECONDS = 30 * 86400


class User(AbstractUser):
    class SystemRole(models.TextChoices):
        ADMIN = "admin"
        USER = "user"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    role = models.CharField(max_length=16, choices=SystemRole.choices, default=SystemRole.USER)

    @property
    def is_poolhub_admin(self) -> bool:
        return self.role == self.SystemRole.ADMIN or self.is_superuser


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
