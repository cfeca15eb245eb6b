"""Timestamp-window groups, export leases, results and webhook deliveries."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class GroupStatus(models.TextChoices):
    OPEN = "open"
    CLOSED = "closed"
    EXPORTING = "exporting"
    COMPLETED = "completed"
    SKIPPED = "skipped"  # closed by time with too few contributors (Pool.short_round_policy)


class Group(models.Model):
    """A pool's uploads whose timestamp falls in [window_start, window_end): one round (the admin
    and the docs call it that; the API calls it a group)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    pool = models.ForeignKey("accounts.Pool", on_delete=models.PROTECT, related_name="groups")
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    status = models.CharField(max_length=10, choices=GroupStatus.choices, default=GroupStatus.OPEN, db_index=True)
    version = models.PositiveIntegerField(default=0)
    closed_at = models.DateTimeField(null=True, blank=True)
    # Set when an admin reopens a group: beat leaves it open until then, even if its window is due.
    hold_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "round"
        verbose_name_plural = "rounds"
        ordering = ["-window_start"]
        constraints = [models.UniqueConstraint(fields=["pool", "window_start"], name="one_group_per_window")]
        indexes = [models.Index(fields=["status", "window_end"])]

    def __str__(self) -> str:
        return f"{self.pool_id} [{self.window_start:%Y-%m-%d %H:%M:%S}, {self.window_end:%Y-%m-%d %H:%M:%S})"


class LeaseEnd(models.TextChoices):
    COMPLETED = "completed"  # a result was posted under it
    EXPIRED = "expired"  # its time ran out (beat, or a later claim noticed)
    REVOKED = "revoked"  # an admin reopened or re-exported the group


class Lease(models.Model):
    """An exporter's claim on a closed group; a result is accepted only under a live lease."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    group = models.ForeignKey(Group, on_delete=models.PROTECT, related_name="leases")
    exporter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="leases")
    expires_at = models.DateTimeField()
    released_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=10, choices=LeaseEnd.choices, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["released_at", "expires_at"])]

    def __str__(self) -> str:
        return f"lease {self.id} on {self.group_id}"


class Result(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    pool = models.ForeignKey("accounts.Pool", on_delete=models.PROTECT, related_name="results")
    # A foreign key, not one-to-one: an admin may re-export a group, and each export's result is kept.
    group = models.ForeignKey(Group, on_delete=models.PROTECT, related_name="results")
    lease = models.ForeignKey(Lease, on_delete=models.PROTECT, related_name="results")
    filename = models.CharField(max_length=255, default="result.bin")
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    content_type = models.CharField(max_length=100, default="application/octet-stream")
    # Lineage: the uploads that went into the archive this result was computed from.
    upload_ids = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["lease"], name="one_result_per_lease")]
        indexes = [models.Index(fields=["pool", "-created_at"])]

    def __str__(self) -> str:
        return f"result {self.id} of {self.group_id}"


class WebhookDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"
        SENDING = "sending"  # claimed by one try (webhooks.CLAIM_SECONDS); back to pending if it fails

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    pool = models.ForeignKey("accounts.Pool", on_delete=models.CASCADE, related_name="webhook_deliveries")
    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="webhook_deliveries")
    event_seq = models.BigIntegerField()
    url = models.URLField()
    # The JSON body as signed and sent (without `sent_at`, which each attempt sets).
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["group", "event_seq"], name="one_delivery_per_event")]

    def __str__(self) -> str:
        return f"webhook {self.url} for event {self.event_seq}: {self.status}"
