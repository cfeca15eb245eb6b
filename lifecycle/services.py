"""Writes for a pool's data lifecycle: what it holds (usage and quota), admission of uploads
(quota and the per-contributor cap), and content leaving the file store (retention, failed
uploads released or discarded).

Lock order: acceptance holds the contributor's membership row (for the cap per window) before
its event and the counter; every transaction here changes the `PoolUsage` row last, after its event is
appended, as acceptance and result posting do (their event log and group locks come first), so
no two transactions ever wait on each other in opposite orders.

Purging has two steps. Marking, in one transaction per object: a `Purge` tombstone, the event
(`upload.purged`, `upload.released`, `upload.discarded` on the upload's stream, `result.purged`
on the result's), and the pool's usage; from then on the content endpoints answer 410. Removing:
the bytes leave the file store (and staging), then `removed_at` is set. A job killed anywhere
leaves tombstones without `removed_at`, which the next run removes first: it resumes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, Max, OuterRef, QuerySet, Sum
from django.utils import timezone

from accounts.models import Membership, Pool, User
from batching.models import Group, GroupStatus, Result
from lifecycle.models import PoolUsage, Purge, PurgeReason, RetentionMark
from lifecycle.selectors import cap_reached, pool_used_bytes, quota_exceeded
from poolhub.errors import Conflict, NotFound
from poolhub.filestore import Bucket, file_delete
from uploads.events import event_append
from uploads.models import Event, Upload, UploadStatus
from uploads.staging import staging_drop

logger = logging.getLogger(__name__)


# --- usage and admission ------------------------------------------------------------------------

def pool_held_bytes(*, pool_id: UUID) -> int:
    """What the pool holds, counted from the rows: uploads and results not purged. The counter
    (`PoolUsage`) starts from this and is kept in step by every change afterwards."""
    uploads = Upload.objects.filter(pool_id=pool_id).exclude(_purged("upload"))
    results = Result.objects.filter(pool_id=pool_id).exclude(_purged("result"))
    held = 0
    for rows in (uploads, results):
        held += int(rows.aggregate(total=Sum("size"))["total"] or 0)
    return held


def _purged(stream_type: str) -> Exists:
    return Exists(Purge.objects.filter(stream_type=stream_type, stream_id=OuterRef("id")))


def _usage_row(*, pool_id: UUID) -> None:
    """Create the pool's counter on first use (from the rows; a concurrent creator wins harmlessly)."""
    PoolUsage.objects.bulk_create([PoolUsage(pool_id=pool_id, bytes=pool_held_bytes(pool_id=pool_id))],
                                  ignore_conflicts=True)


def _usage_change(*, pool_id: UUID, delta: int, quota: int | None = None) -> bool:
    """Add `delta` to the pool's bytes, if that keeps them within `quota`: one conditional UPDATE,
    so of two concurrent uploads only one can take the last free bytes (the second one's UPDATE
    waits for the first to commit and then re-checks the condition)."""
    for _ in range(2):
        rows = PoolUsage.objects.filter(pool_id=pool_id)
        if quota is not None:
            rows = rows.filter(bytes__lte=quota - delta)
        if rows.update(bytes=F("bytes") + delta):
            return True
        if PoolUsage.objects.filter(pool_id=pool_id).exists():
            return False
        _usage_row(pool_id=pool_id)
    return False


def pool_usage_recount(*, pool_id: UUID) -> tuple[int, int]:
    """Set the pool's counter from its rows again (after a manual database edit, say). Exact while
    uploads go on: the row lock waits for acceptances that reserved bytes to commit, and holds off
    new ones until the count is in. Returns (before, after)."""
    with transaction.atomic():
        _usage_row(pool_id=pool_id)
        usage = PoolUsage.objects.select_for_update().get(pool_id=pool_id)
        before, usage.bytes = usage.bytes, pool_held_bytes(pool_id=pool_id)
        usage.save(update_fields=["bytes", "updated_at"])
    return before, usage.bytes


def _transaction() -> Any:
    """The current transaction's outermost atomic block (not a test case's wrapper), or None."""
    blocks = [block for block in connection.atomic_blocks if not getattr(block, "_from_testcase", False)]
    return blocks[0] if blocks else None


def _held_before(*, pool_id: UUID) -> dict[UUID, int]:
    """Per pool, what it held before this transaction's first reservation (a batch's usage before
    it), kept on the connection for the current transaction only."""
    current = _transaction()
    kept = getattr(connection, "_poolhub_held_before", None)
    if kept is None or kept[0] is not current:
        kept = (current, {})
        connection._poolhub_held_before = kept  # type: ignore[attr-defined]
    return kept[1]


def pool_bytes_reserve(*, pool: Pool, size: int) -> None:
    """Count `size` more bytes for the pool, or 413 `quota_exceeded` if that would pass its quota.
    Call inside the transaction that records what holds them: its rollback gives them back."""
    if pool.quota_bytes is None:
        _usage_change(pool_id=pool.id, delta=size)
        return
    before = _held_before(pool_id=pool.id)
    if not _usage_change(pool_id=pool.id, delta=size, quota=pool.quota_bytes):
        used = pool_used_bytes(pool_id=pool.id)
        raise quota_exceeded(quota=pool.quota_bytes, used=used, size=size, used_before=before.get(pool.id, used))
    if pool.id not in before and connection.in_atomic_block:
        # This transaction holds the counter's row lock now: what it holds, less this upload, is
        # what the pool held before the transaction (its batch) began to reserve.
        before[pool.id] = pool_used_bytes(pool_id=pool.id) - size


def pool_bytes_add(*, pool_id: UUID, size: int) -> None:
    """Count a result's bytes (results are never refused for the quota; they do fill it)."""
    _usage_change(pool_id=pool_id, delta=size)


def _contributor_lock(*, pool: Pool, uploader: User) -> None:
    """Hold the uploader's membership row of this pool (the user's row for an admin without one)
    until the transaction ends, so that counting their uploads and adding one is a single step:
    a concurrent upload by the same contributor to this pool waits here, then counts the first
    one (on PostgreSQL each statement sees what committed before it). FOR NO KEY UPDATE: rows
    that merely reference it (key-share locks) are not held up. SQLite: its IMMEDIATE
    transactions already run one writer at a time."""
    memberships = Membership.objects.select_for_update(no_key=True).filter(pool=pool, user=uploader)
    if not list(memberships.values_list("id", flat=True)):
        list(User.objects.select_for_update(no_key=True).filter(pk=uploader.pk).values_list("pk", flat=True))


def upload_admit(*, pool: Pool, uploader: User, group: Group, size: int) -> None:
    """Acceptance calls this inside its transaction for each new upload, after choosing its group:
    the pool's cap on one contributor's uploads per window (409 `upload_cap_reached`; race-free
    under the contributor's lock), then its quota (413 `quota_exceeded`). A batch is one
    transaction, so one refusal refuses it whole."""
    cap = pool.max_uploads_per_contributor
    if cap is not None:
        _contributor_lock(pool=pool, uploader=uploader)
        if Upload.objects.filter(group=group, uploader=uploader).count() >= cap:
            raise cap_reached(cap=cap, group=group)
    pool_bytes_reserve(pool=pool, size=size)


# --- marking content gone ---------------------------------------------------------------------

_UPLOAD_EVENT = {PurgeReason.RETENTION: "upload.purged", PurgeReason.RELEASED: "upload.released",
                 PurgeReason.DISCARDED: "upload.discarded"}
# Which uploads each reason may take: retention only stored ones (a `cached` one is on its way to
# the store); releasing and discarding only failed ones (their bytes wait in staging for a re-drive).
_UPLOAD_STATUS = {PurgeReason.RETENTION: UploadStatus.STORED, PurgeReason.RELEASED: UploadStatus.FAILED,
                  PurgeReason.DISCARDED: UploadStatus.FAILED}


def _tombstone(*, stream_type: str, stream_id: UUID, pool_id: UUID, size: int, reason: str, now: datetime) -> bool:
    try:
        with transaction.atomic():
            Purge.objects.create(stream_type=stream_type, stream_id=stream_id, pool_id=pool_id, bytes=size,
                                 reason=reason, marked_at=now)
    except IntegrityError:  # already gone (another run, or discarded then released)
        return False
    return True


def _upload_mark(*, upload_id: UUID, reason: PurgeReason, now: datetime, by: User | None = None) -> Upload | None:
    """Mark one upload's content gone; None when it is not (or no longer) one this reason takes."""
    with transaction.atomic():
        upload = Upload.objects.select_for_update().filter(id=upload_id).first()
        if upload is None or upload.status != _UPLOAD_STATUS[reason]:
            return None
        if reason == PurgeReason.RETENTION and Upload.objects.filter(id=upload.id,
                                                                     group__status=GroupStatus.EXPORTING).exists():
            return None  # never under an exporter's feet; the next run takes it
        if not _tombstone(stream_type="upload", stream_id=upload.id, pool_id=upload.pool_id, size=upload.size,
                          reason=reason, now=now):
            return None
        # No `status` in the data: the upload's status does not change, and nothing is pushed.
        data: dict[str, Any] = {"bytes": upload.size, "reason": str(reason)}
        if by is not None:
            data["by"] = str(by.id)
        event_append(stream=upload, stream_type="upload", type=_UPLOAD_EVENT[reason], data=data,
                     pool_id=upload.pool_id, user_id=upload.uploader_id)
        upload.save(update_fields=["version", "updated_at"])
        _usage_change(pool_id=upload.pool_id, delta=-upload.size)
    return upload


@dataclass
class _ResultStream:
    """A result's own stream in the event log (its `result.available` is on its group's stream)."""

    id: UUID
    version: int


def _result_mark(*, result_id: UUID, now: datetime) -> bool:
    with transaction.atomic():
        result = Result.objects.filter(id=result_id).first()
        if result is None or result_is_latest(result=result):
            return False
        if not _tombstone(stream_type="result", stream_id=result.id, pool_id=result.pool_id, size=result.size,
                          reason=PurgeReason.RETENTION, now=now):
            return False
        stream = _ResultStream(id=result.id,
                               version=Event.objects.filter(stream_type="result", stream_id=result.id).count())
        event_append(stream=stream, stream_type="result", type="result.purged",
                     data={"result_id": str(result.id), "group": str(result.group_id), "bytes": result.size},
                     pool_id=result.pool_id)
        _usage_change(pool_id=result.pool_id, delta=-result.size)
    return True


def _latest_result_id(*, pool_id: UUID) -> UUID | None:
    """The pool's newest result: retention never takes it."""
    return Result.objects.filter(pool_id=pool_id).order_by("-created_at").values_list("id", flat=True).first()


def result_is_latest(*, result: Result) -> bool:
    return _latest_result_id(pool_id=result.pool_id) == result.id


# --- removing the bytes -------------------------------------------------------------------------

def _remove(purge: Purge) -> bool:
    """Delete one tombstoned object's bytes (idempotent) and record it. False: not now."""
    if purge.stream_type == "upload":
        upload = Upload.objects.filter(id=purge.stream_id).values("staging_key", "group__status").first()
        if upload is not None and upload["group__status"] == GroupStatus.EXPORTING:
            return False  # claimed after it was marked: its archive answers 410; delete once that ends
        file_delete(bucket=Bucket.UPLOADS, file_id=purge.stream_id)
        if upload is not None and upload["staging_key"]:
            staging_drop(key=upload["staging_key"])
    else:
        file_delete(bucket=Bucket.RESULTS, file_id=purge.stream_id)
    Purge.objects.filter(id=purge.id, removed_at__isnull=True).update(removed_at=timezone.now())
    return True


def purges_remove_pending(*, limit: int) -> int:
    """Remove the bytes of objects marked but not yet removed (a run killed mid-way, or just marked)."""
    removed = 0
    for purge in list(Purge.objects.filter(removed_at__isnull=True).order_by("id")[:limit]):
        removed += _remove(purge)
    return removed


# --- the retention job --------------------------------------------------------------------------

@dataclass
class PurgeReport:
    uploads: int = 0
    results: int = 0
    released: int = 0
    removed: int = 0

    @property
    def marked(self) -> int:
        return self.uploads + self.results + self.released


def _retention_pools(*, now: datetime) -> list[tuple[UUID, datetime, datetime | None]]:
    """(pool, retention cutoff, where its scan of uploads starts) for every pool with a retention."""
    marks = dict(RetentionMark.objects.values_list("pool_id", "uploads_from"))
    return [(pool_id, now - timedelta(days=int(days or 0)), marks.get(pool_id))
            for pool_id, days in Pool.objects.filter(retention_days__isnull=False).values_list("id", "retention_days")]


def _scanned(*, pool_id: UUID, cutoff: datetime, start: datetime | None) -> QuerySet[Upload]:
    """The pool's uploads created before `cutoff`, from its mark on."""
    rows = Upload.objects.filter(pool_id=pool_id, created_at__lt=cutoff)
    return rows if start is None else rows.filter(created_at__gte=start)


def _kept_before(*, pool_id: UUID, cutoff: datetime, start: datetime | None) -> QuerySet[Upload]:
    """Those of them whose content is still kept."""
    return _scanned(pool_id=pool_id, cutoff=cutoff, start=start).exclude(_purged("upload"))


def _expired_uploads(*, now: datetime, limit: int) -> list[UUID]:
    ids: list[UUID] = []
    for pool_id, cutoff, start in _retention_pools(now=now):
        rows = (_kept_before(pool_id=pool_id, cutoff=cutoff, start=start).filter(status=UploadStatus.STORED)
                .exclude(group__status=GroupStatus.EXPORTING))
        ids += rows.order_by("created_at").values_list("id", flat=True)[:limit - len(ids)]
        if len(ids) >= limit:
            break
    return ids


def retention_marks_advance(*, now: datetime) -> None:
    """Move each pool's mark up to its oldest upload before the cutoff whose content is still
    kept (in staging, failed and kept, under an export, or not reached by this run), or, when
    every one is purged, to the newest of them: the next run starts there instead of reading
    past every upload purged so far. A mark only moves forward (two runs at once are safe)."""
    for pool_id, cutoff, start in _retention_pools(now=now):
        mark = (_kept_before(pool_id=pool_id, cutoff=cutoff, start=start)
                .order_by("created_at").values_list("created_at", flat=True).first())
        if mark is None:  # all purged: new uploads are created after the newest of them
            newest = _scanned(pool_id=pool_id, cutoff=cutoff, start=start).aggregate(newest=Max("created_at"))
            mark = newest["newest"]
        if mark is None or (start is not None and mark <= start):
            continue
        if not RetentionMark.objects.filter(pool_id=pool_id, uploads_from__lt=mark).update(uploads_from=mark):
            RetentionMark.objects.bulk_create([RetentionMark(pool_id=pool_id, uploads_from=mark)],
                                              ignore_conflicts=True)


def _expired_results(*, now: datetime, limit: int) -> list[UUID]:
    ids: list[UUID] = []
    for pool_id, cutoff, _start in _retention_pools(now=now):
        latest = _latest_result_id(pool_id=pool_id)
        if latest is None:
            continue
        rows = (Result.objects.filter(pool_id=pool_id, created_at__lt=cutoff)
                .exclude(id=latest).exclude(_purged("result")))
        ids += rows.order_by("created_at").values_list("id", flat=True)[:limit - len(ids)]
        if len(ids) >= limit:
            break
    return ids


def _failed_to_release(*, now: datetime, limit: int) -> list[UUID]:
    days = int(settings.POOLHUB_FAILED_UPLOAD_KEEP_DAYS)
    if days <= 0:
        return []
    rows = (Upload.objects.filter(status=UploadStatus.FAILED, updated_at__lt=now - timedelta(days=days))
            .exclude(_purged("upload")))
    return list(rows.order_by("updated_at").values_list("id", flat=True)[:limit])


# A run starts no new batch after this long, well inside the task's time limit (lifecycle/tasks.py):
# measured at 60 to 80 ms per upload on a loaded two-core machine, 50 batches of 200 may not fit.
RUN_SECONDS = 300


def purge_expired(*, now: datetime | None = None, batch: int | None = None,
                  max_batches: int | None = None) -> PurgeReport:
    """The retention job (beat, `purge_expired`): in batches, uploads and results past
    their pool's `retention_days` (never a pool's latest result, never an upload of a group being
    exported) and failed uploads kept past POOLHUB_FAILED_UPLOAD_KEEP_DAYS leave the file store
    and staging. Finishes what a killed run left first. Safe to run twice at once."""
    now = now or timezone.now()
    batch = batch or int(settings.POOLHUB_PURGE_BATCH)
    report = PurgeReport()
    report.removed += purges_remove_pending(limit=batch * 10)
    deadline = time.monotonic() + RUN_SECONDS
    for _ in range(max_batches or int(settings.POOLHUB_PURGE_MAX_BATCHES)):
        if time.monotonic() > deadline:
            break
        before = report.marked
        for upload_id in _expired_uploads(now=now, limit=batch):
            report.uploads += _upload_mark(upload_id=upload_id, reason=PurgeReason.RETENTION, now=now) is not None
        for result_id in _expired_results(now=now, limit=batch):
            report.results += _result_mark(result_id=result_id, now=now)
        for upload_id in _failed_to_release(now=now, limit=batch):
            report.released += _upload_mark(upload_id=upload_id, reason=PurgeReason.RELEASED, now=now) is not None
        report.removed += purges_remove_pending(limit=batch * 3)
        if report.marked == before:
            break
    retention_marks_advance(now=now)
    if report.marked or report.removed:
        logger.info("retention: %d upload(s) and %d result(s) purged, %d failed upload(s) released, "
                    "%d object(s) removed from the file store", report.uploads, report.results, report.released,
                    report.removed)
    return report


def upload_discard(*, upload_id: UUID | str, by: User | None = None) -> Upload:
    """Admin: a failed upload's staged bytes go now (it cannot be re-driven afterwards); the row and
    its events stay, with `upload.discarded`."""
    upload = Upload.objects.filter(id=upload_id).first()
    if upload is None:
        raise NotFound("no such upload")
    if upload.status != UploadStatus.FAILED:
        raise Conflict(f"only failed uploads can be discarded; this one is {upload.status}")
    marked = _upload_mark(upload_id=upload.id, reason=PurgeReason.DISCARDED, now=timezone.now(), by=by)
    if marked is None:
        raise Conflict("this upload's bytes are already gone")
    purge = Purge.objects.get(stream_type="upload", stream_id=upload.id)
    _remove(purge)
    return marked
