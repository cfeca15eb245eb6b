"""Reads for a pool's data lifecycle: its usage, and whether content is gone (410)."""

from __future__ import annotations

from typing import Any

from django.db.models import Sum

from accounts.models import Pool
from batching.models import Group, Result
from lifecycle.models import PoolUsage, Purge
from poolhub.errors import Gone
from uploads.models import Upload, UploadStatus


def pool_usage(*, pool: Pool) -> dict[str, Any]:
    """`stored_bytes` is what counts against `quota_bytes`: uploads (stored, or still in staging)
    and results the pool holds; `uploads` and `results` count those whose content is still kept."""
    from lifecycle.services import pool_held_bytes  # the counter's starting value, when it has none yet

    stored = PoolUsage.objects.filter(pool=pool).values_list("bytes", flat=True).first()
    if stored is None:
        stored = pool_held_bytes(pool_id=pool.id)
    gone = Purge.objects.filter(pool_id=pool.id)
    gone_uploads = gone.filter(stream_type="upload")
    staged = (Upload.objects.filter(pool=pool, status__in=[UploadStatus.CACHED, UploadStatus.FAILED])
              .exclude(id__in=gone_uploads.values("stream_id")).aggregate(total=Sum("size"))["total"]) or 0
    return {
        "stored_bytes": stored,
        "uploads": Upload.objects.filter(pool=pool).count() - gone_uploads.count(),
        "results": Result.objects.filter(pool=pool).count() - gone.filter(stream_type="result").count(),
        "quota_bytes": pool.quota_bytes,
        "retention_days": pool.retention_days,
        "staged_bytes": staged,
        "free_bytes": None if pool.quota_bytes is None else max(0, pool.quota_bytes - stored),
        "purged_uploads": gone_uploads.count(),
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
