"""Uploads and the append-only event log.

`Event` rows are inserted, never updated or deleted (on PostgreSQL a trigger refuses it).
`seq` is the global order (on PostgreSQL derived from the writing transaction's id, so readers
can stop at a safe horizon: uploads.events); `(stream_type, stream_id, version)` is unique, so two writers that
read the same stream version cannot both append (optimistic concurrency). Status columns on
`Upload` (and on groups and results) are projections of the log, written in the same
transaction as the event that changes them.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Event(models.Model):
    # On PostgreSQL `seq` is txid * 65536 + n (uploads.events explains why); elsewhere autoincrement.
    seq = models.BigAutoField(primary_key=True)
    # The writing transaction's id (pg_current_xact_id()); null on SQLite and for older rows.
    txid = models.BigIntegerField(null=True, blank=True, editable=False)
    stream_type = models.CharField(max_length=16)  # "upload" or "group"
    stream_id = models.UUIDField()
    version = models.PositiveIntegerField()
    type = models.CharField(max_length=40)
    data = models.JSONField(default=dict)
    at = models.DateTimeField()
    # Plain ids, not foreign keys: the log must outlive what it describes, and no cascade may
    # ever try to delete an event. They route notifications and `resume`.
    pool_id = models.UUIDField(null=True, db_index=True)
    user_id = models.UUIDField(null=True, db_index=True)

    class Meta:
        ordering = ["seq"]
        constraints = [
            models.UniqueConstraint(fields=["stream_type", "stream_id", "version"], name="event_stream_version"),
        ]
        indexes = [models.Index(fields=["stream_type", "stream_id", "seq"])]

    def __str__(self) -> str:
        return f"#{self.seq} {self.type} {self.stream_type}:{self.stream_id}"


class UploadStatus(models.TextChoices):
    CACHED = "cached"
    STORED = "stored"
    FAILED = "failed"


class Upload(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    pool = models.ForeignKey("accounts.Pool", on_delete=models.PROTECT, related_name="uploads")
    uploader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="uploads")
    batch_id = models.UUIDField(null=True, blank=True, db_index=True)
    filename = models.CharField(max_length=255)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    content_type = models.CharField(max_length=100)
    timestamp = models.DateTimeField()
    group = models.ForeignKey("batching.Group", on_delete=models.PROTECT, null=True, blank=True,
                              related_name="uploads")
    # Projections of the event log.
    status = models.CharField(max_length=8, choices=UploadStatus.choices, default=UploadStatus.CACHED,
                              db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # Where the bytes wait in Redis until they are stored (uploads.staging); kept after a failure.
    staging_key = models.CharField(max_length=64, blank=True, default="")
    version = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["pool", "uploader", "timestamp", "sha256"], name="upload_once"),
        ]
        indexes = [models.Index(fields=["status", "updated_at"]), models.Index(fields=["uploader", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.filename} ({self.id})"
