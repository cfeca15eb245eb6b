"""What each pool holds, and tombstones for content that left the file store.

`PoolUsage.bytes` is every byte a pool holds: accepted uploads (staged or stored, failed ones
while their staged bytes are kept) and results, until they are purged, discarded or released.
It changes in the same transaction as the rows it counts, so it never drifts; the quota check
is one conditional UPDATE of this row (lifecycle.services.upload_admit).

A `Purge` row says that an upload's or a result's content is gone from the file store (or, for
a failed upload, from staging); the upload or result row and its events stay. `removed_at` is
set once the bytes are actually deleted: a purge killed between the two steps is finished by
the next run of the job.

A `RetentionMark` is where the retention job's scan of a pool's uploads starts: every upload of
the pool created before `uploads_from` has its `Purge`, so a run never looks at them again.
"""

from __future__ import annotations

from django.db import models


class PoolUsage(models.Model):
    pool = models.OneToOneField("accounts.Pool", on_delete=models.CASCADE, primary_key=True, related_name="usage")
    bytes = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.pool_id}: {self.bytes} bytes"


class PurgeReason(models.TextChoices):
    RETENTION = "retention"  # older than the pool's retention_days
    DISCARDED = "discarded"  # a failed upload an admin discarded
    RELEASED = "released"  # a failed upload whose staged bytes were kept past POOLHUB_FAILED_UPLOAD_KEEP_DAYS


class Purge(models.Model):
    stream_type = models.CharField(max_length=16)  # "upload" or "result", as in the event log
    stream_id = models.UUIDField()
    pool_id = models.UUIDField(db_index=True)
    bytes = models.BigIntegerField()
    reason = models.CharField(max_length=12, choices=PurgeReason.choices)
    marked_at = models.DateTimeField()
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-marked_at"]
        constraints = [models.UniqueConstraint(fields=["stream_type", "stream_id"], name="one_purge_per_object")]
        indexes = [models.Index(fields=["removed_at"])]

    def __str__(self) -> str:
        return f"{self.stream_type}:{self.stream_id} ({self.reason})"


class RetentionMark(models.Model):
    pool = models.OneToOneField("accounts.Pool", on_delete=models.CASCADE, primary_key=True,
                                related_name="retention_mark")
    uploads_from = models.DateTimeField()  # every upload created before it has its Purge

    def __str__(self) -> str:
        return f"{self.pool_id}: uploads from {self.uploads_from.isoformat()}"
