"""Reads for a pool's data lifecycle: its usage, and whether content is gone (410)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Sum

from accounts.models import Pool, User
from batching.models import Group, GroupStatus, Result
from batching.windows import window_bounds
from lifecycle.models import PoolUsage, Purge
from poolhub.errors import ApiError, Conflict, Gone
from uploads.models import Upload, UploadStatus


class QuotaExceeded(ApiError):
    status_code = 413
    default_code = "quota_exceeded"
    default_detail = "this upload would take the pool past its quota"
    # What a refused batch carries at its top level (uploads.services.batch_refused): the pool's
    # usage before the batch, where `details` has it at this item (the batch's earlier items included).
    batch_details: dict[str, Any]


def quota_exceeded(*, quota: int, used: int, size: int, used_before: int | None = None) -> QuotaExceeded:
    """413 `quota_exceeded` for an upload of `size` bytes to a pool holding `used` of `quota`;
    `used_before`: what it held before the transaction that refuses it (a batch's earlier items)."""
    error = QuotaExceeded(f"the pool may hold {quota} bytes and holds {used}; this upload of {size} bytes "
                          "does not fit", details={"quota_bytes": quota, "used_bytes": used})
    error.batch_details = {"quota_bytes": quota, "used_bytes": used if used_before is None else used_before}
    return error


def cap_reached(*, cap: int, group: Group) -> Conflict:
    """409 `upload_cap_reached`: one contributor's uploads to this window are at the pool's cap."""
    return Conflict(f"you have sent this window's {cap} upload(s) already", code="upload_cap_reached",
                    details={"max_uploads_per_contributor": cap, "group": str(group.id),
                             "window_start": group.window_start.isoformat(),
                             "window_end": group.window_end.isoformat()})


def pool_used_bytes(*, pool_id: Any) -> int:
    """The pool's held bytes (its counter, or counted from the rows before it has one)."""
    used = PoolUsage.objects.filter(pool_id=pool_id).values_list("bytes", flat=True).first()
    if used is None:
        from lifecycle.services import pool_held_bytes  # the counter's starting value

        used = pool_held_bytes(pool_id=pool_id)
    return int(used)


def upload_admission_check(*, pool: Pool, uploader: User, timestamp: datetime, size: int) -> None:
    """Would an upload of `size` bytes for `timestamp` be refused for the pool's cap per
    contributor (409) or its quota (413) now? For a tus creation, before any byte is sent. Not a
    reservation: acceptance (`lifecycle.services.upload_admit`) decides, race-free, when the
    bytes are there. The cap is checked against the timestamp's own window while it is open (a
    late upload may join another one)."""
    cap = pool.max_uploads_per_contributor
    if cap is not None:
        start, _ = window_bounds(origin=pool.origin, window_seconds=pool.window_seconds, at=timestamp)
        group = Group.objects.filter(pool=pool, window_start=start, status=GroupStatus.OPEN).first()
        if group is not None and Upload.objects.filter(group=group, uploader=uploader).count() >= cap:
            raise cap_reached(cap=cap, group=group)
    if pool.quota_bytes is not None:
        used = pool_used_bytes(pool_id=pool.id)
        if used + size > pool.quota_bytes:
            raise quota_exceeded(quota=pool.quota_bytes, used=used, size=size)


def pool_usage(*, pool: Pool) -> dict[str, Any]:
    """`stored_bytes` is what counts against `quota_bytes`: uploads (stored, or still in staging)
    and results the pool holds; `uploads` and `results` count those whose content is still kept."""
    stored = pool_used_bytes(pool_id=pool.id)
    gone = Purge.objects.filter(pool_id=pool.id)
    gone_uploads = gone.filter(stream_type="upload")
    staged = (Upload.objects.filter(pool=pool, status__in=[UploadStatus.CACHED, UploadStatus.FAILED])
              .exclude(id__in=gone_uploads.values("stream_id")).aggregate(total=Sum("size"))["total"]) or 0
    purged_uploads = gone_uploads.count()
    return {
        "stored_bytes": stored,
        "uploads": Upload.objects.filter(pool=pool).count() - purged_uploads,
        "results": Result.objects.filter(pool=pool).count() - gone.filter(stream_type="result").count(),
        "quota_bytes": pool.quota_bytes,
        "retention_days": pool.retention_days,
        "staged_bytes": staged,
        "free_bytes": None if pool.quota_bytes is None else max(0, pool.quota_bytes - stored),
        "purged_uploads": purged_uploads,
    }


def _gone(*, stream_type: str, stream_id: Any, what: str) -> None:
    purge = Purge.objects.filter(stream_type=stream_type, stream_id=stream_id).first()
    if purge is not None:
        raise Gone(f"{what} is no longer kept ({purge.reason})",
                   details={"reason": purge.reason, "at": purge.marked_at.isoformat()})


def upload_content_check(*, upload: Upload) -> None:
    """410 `gone` once an upload's content was purged, released or discarded."""
    _gone(stream_type="upload", stream_id=upload.id, what="this upload's content")


def result_content_check(*, result: Result) -> None:
    _gone(stream_type="result", stream_id=result.id, what="this result's content")


def group_archive_check(*, group: Group) -> None:
    """410 `gone` for the archive of a group any of whose uploads was purged: it cannot be whole."""
    purged = Purge.objects.filter(stream_type="upload",
                                  stream_id__in=Upload.objects.filter(group=group).values("id")).first()
    if purged is not None:
        raise Gone("uploads of this group are no longer kept; its archive cannot be built",
                   details={"reason": purged.reason, "at": purged.marked_at.isoformat()})
