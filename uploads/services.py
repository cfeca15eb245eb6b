"""Upload writes: acceptance, storage to GridFS with counted attempts, re-drive, regrouping.

Every state change appends an event (`uploads.events.event_append`) in the same transaction as
the projection row it changes. Each upload event's `data` carries the projection after it:
`status` and `attempts` always, `group` when the group changes. So `rebuild_projections`
folds the log without knowing the event types, and listeners get status pushes from any event.

Event types (constants in uploads.event_types.EventType): `upload.cached` (accepted),
`upload.storing` (a store attempt starts; counted before any byte moves, so a killed worker's
attempt counts too), `upload.store_failed`,
`upload.stored`, `upload.failed` (attempts exhausted; staged bytes kept), `upload.redriven`
(an admin sent a failed upload back to `cached` with fresh attempts), `upload.regrouped`.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, cast
from uuid import UUID

import pymongo.errors
import redis
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Pool, User
from batching.models import Group
from batching.services import group_for_upload
from lifecycle.services import upload_admit
from poolhub.errors import ApiError, Conflict, NotFound
from poolhub.filestore import Bucket, FileToWrite, StoredFile, file_delete, file_intact, file_write, files_write
from poolhub.redis import redis_client
from uploads.event_types import EventType
from uploads.events import NewEvent, event_append, events_append
from uploads.models import Upload, UploadStatus
from uploads.staging import (
    StagedFile,
    StagingMissing,
    staging_drop,
    staging_drop_many,
    staging_exists,
    staging_keep,
    staging_read,
    staging_touch,
)

logger = logging.getLogger(__name__)


def _append(upload: Upload, type: str, **data: Any) -> None:
    """Append an upload event whose data carries the projection after it."""
    payload = {"status": upload.status, "attempts": upload.attempts, **data}
    event_append(stream=upload, stream_type="upload", type=type, data=payload,
                 pool_id=upload.pool_id, user_id=upload.uploader_id)


def _enqueue_store(upload_id: UUID) -> None:
    """Kick the store once the transaction commits (see `store_kick`)."""
    transaction.on_commit(lambda: store_kick(upload_ids=[upload_id]))


def store_kick(*, upload_ids: Sequence[UUID | str]) -> bool:
    """Send one message asking a worker to store these uploads (and whatever else is pending).

    Only a kick: the committed `cached` rows are the outbox, so a kick that cannot be sent (the
    broker is down) loses nothing. The relay (`uploads_pending_kick`, beat every few seconds)
    sends it again. Never raises: the upload is accepted once its transaction has committed.
    """
    from uploads.tasks import uploads_store_pending  # late: tasks import this module

    try:
        uploads_store_pending.delay([str(upload_id) for upload_id in upload_ids])
    except Exception:  # the broker (kombu raises many kinds); the relay re-sends
        logger.warning("could not send the store kick for %d upload(s); the relay re-sends it",
                       len(upload_ids), exc_info=True)
        return False
    return True


# --- acceptance -------------------------------------------------------------------------------

def upload_accept(*, pool: Pool, uploader: User, staged: StagedFile, timestamp: datetime, filename: str,
                  batch_id: UUID | None = None, kick: bool = True) -> Upload:
    """Record an upload whose bytes are already staged (see uploads.staging.StagingWriter).

    The caller has checked access (contributor or manager), size, type and checksum; `staged`
    comes from `StagingWriter.finish()` and `timestamp` from `checks.timestamp_parse`.
    One transaction: the row, its `upload.cached` event and its group; the store is kicked on
    commit (unless `kick` is False: the caller kicks several at once). The same uploader sending
    the same bytes for the same timestamp gets the existing upload back, and the new staged copy
    is dropped after commit. The staged bytes belong to the upload once this returns; if it
    raises (e.g. the pool's late policy refuses the timestamp with 409), the caller still owns
    them and must discard them.
    """
    with transaction.atomic():
        existing = _upload_existing(pool=pool, uploader=uploader, timestamp=timestamp, sha256=staged.sha256)
        if existing is not None:
            _drop_duplicate_on_commit(staged=staged, existing=existing)
            return existing
        group = group_for_upload(pool=pool, timestamp=timestamp)
        upload = Upload(pool=pool, uploader=uploader, batch_id=batch_id, filename=_clean_filename(filename),
                        size=staged.size, sha256=staged.sha256, content_type=staged.content_type,
                        timestamp=timestamp, group=group, staging_key=staged.key,
                        status=UploadStatus.CACHED, attempts=0)
        try:
            with transaction.atomic():
                upload_admit(pool=pool, uploader=uploader, group=group, size=upload.size)  # cap and quota
                _append(upload, EventType.UPLOAD_CACHED, group=str(group.id), size=upload.size, sha256=upload.sha256)
                upload.save(force_insert=True)
        except IntegrityError:  # a concurrent request accepted the same file first
            existing = _upload_existing(pool=pool, uploader=uploader, timestamp=timestamp, sha256=staged.sha256)
            if existing is None:
                raise
            _drop_duplicate_on_commit(staged=staged, existing=existing)
            return existing
        if kick:
            _enqueue_store(upload.id)
    return upload


def _drop_duplicate_on_commit(*, staged: StagedFile, existing: Upload) -> None:
    """Drop the new staged copy of a file already accepted, unless it is that upload's own bytes
    (a repeated websocket `complete-upload` brings the very staging key the upload holds)."""
    if staged.key != existing.staging_key:
        transaction.on_commit(lambda: staging_drop(key=staged.key))


def _upload_existing(*, pool: Pool, uploader: User, timestamp: datetime, sha256: str) -> Upload | None:
    return Upload.objects.filter(pool=pool, uploader=uploader, timestamp=timestamp, sha256=sha256).first()


def _clean_filename(filename: str) -> str:
    """The last path component, without control characters, at most 255 characters."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return (name or "upload.bin")[:255]


@dataclass(frozen=True)
class BatchItem:
    staged: StagedFile
    timestamp: datetime
    filename: str
    field: str


def upload_batch_accept(*, pool: Pool, uploader: User, items: Sequence[BatchItem],
                        batch_id: UUID | None = None) -> tuple[UUID, list[Upload]]:
    """Accept every item or none: one transaction; a refused item rolls back the whole batch and
    the error names each refused item in `details.items` (status and code of the first one)."""
    batch_id = batch_id or uuid.uuid4()
    uploads: list[Upload] = []
    refused: list[tuple[int, BatchItem, ApiError]] = []
    with transaction.atomic():
        for index, item in enumerate(items):
            try:
                with transaction.atomic():
                    uploads.append(upload_accept(pool=pool, uploader=uploader, staged=item.staged,
                                                 timestamp=item.timestamp, filename=item.filename,
                                                 batch_id=batch_id, kick=False))
            except ApiError as exc:
                refused.append((index, item, exc))
        if refused:
            raise batch_refused(refused=[(index, item.field, exc) for index, item, exc in refused])
        pending = [upload.id for upload in uploads if upload.status == UploadStatus.CACHED]
        if pending:  # one kick for the whole batch
            transaction.on_commit(lambda: store_kick(upload_ids=pending))
    return batch_id, uploads


def batch_refused(*, refused: Sequence[tuple[int, str, ApiError]]) -> ApiError:
    """One error for a refused batch: the first item's status and code, every item in details."""
    _, _, first = refused[0]
    items = [{"index": index, "file": field, "code": exc.code, "message": exc.message, "details": exc.details}
             for index, field, exc in refused]
    return ApiError(f"the batch was refused: {len(items)} bad item(s); nothing was accepted", code=first.code,
                    status_code=first.status_code, details={**getattr(first, "batch_details", {}), "items": items},
                    retry_after=first.retry_after)


def upload_regroup(*, upload: Upload, group: Group, reason: str = "") -> Upload:
    """Move an upload to another group (a late upload sent to the next open window)."""
    with transaction.atomic():
        upload = Upload.objects.select_for_update().get(id=upload.id)
        previous = upload.group_id
        upload.group = group
        _append(upload, EventType.UPLOAD_REGROUPED, group=str(group.id), from_group=str(previous) if previous else None,
                reason=reason)
        upload.save(update_fields=["group", "version", "updated_at"])
    return upload


# --- storage ----------------------------------------------------------------------------------

class StoreOutcome(Enum):
    STORED = "stored"
    NOTHING_TO_DO = "nothing_to_do"  # already stored or failed: a replayed or duplicate task
    RETRY = "retry"
    BUSY = "busy"  # another worker is storing this upload right now
    FAILED = "failed"


@dataclass(frozen=True)
class StoreResult:
    outcome: StoreOutcome
    retry_in: float = 0.0


class StoreError(Exception):
    """The store failed in a way a later try can fix."""


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    pymongo.errors.PyMongoError, redis.RedisError, StagingMissing, StoreError, OSError, SoftTimeLimitExceeded,
)


def _max_attempts() -> int:
    return int(settings.POOLHUB_STORE_MAX_ATTEMPTS)


def store_backoff(*, attempt: int) -> float:
    """Exponential backoff with full jitter around it: base * 2^(attempt-1), times 0.5 to 1.5."""
    base = float(settings.POOLHUB_STORE_RETRY_BASE_SECONDS)
    ceiling = float(settings.POOLHUB_STORE_RETRY_MAX_SECONDS)
    return min(ceiling, base * 2 ** max(0, attempt - 1)) * random.uniform(0.5, 1.5)


def _lock_seconds() -> int:
    return int(settings.POOLHUB_STORE_LOCK_SECONDS)


def upload_store(*, upload_id: UUID | str) -> StoreResult:
    """One store attempt for the `upload_store` task. Idempotent: a replay finds nothing to do.

    A per-upload Redis lock (renewed while bytes move, so a killed worker's lock lapses soon)
    keeps two workers from writing the same file at once.
    """
    lock = redis_client().lock(f"poolhub:uploads:storing:{upload_id}", timeout=_lock_seconds(), blocking=False)
    if not lock.acquire():
        return StoreResult(StoreOutcome.BUSY, retry_in=_lock_seconds() * random.uniform(0.5, 1.5))
    try:
        return _store_locked(upload_id=upload_id, renew=lambda: lock.extend(_lock_seconds(), replace_ttl=True))
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            logger.warning("store lock for upload %s lapsed before release", upload_id)


def _store_locked(*, upload_id: UUID | str, renew: Any) -> StoreResult:
    begun = _attempt_begin(upload_id=upload_id)
    if begun is None:
        return StoreResult(StoreOutcome.NOTHING_TO_DO)
    upload, exhausted = begun
    if exhausted:
        if file_intact(bucket=Bucket.UPLOADS, file_id=upload.id, sha256=upload.sha256):
            _stored(upload_id=upload.id)
            return StoreResult(StoreOutcome.STORED)
        return _attempt_failed(upload_id=upload.id, error="the last attempt never finished (worker lost)",
                               final=True, count=False)
    try:
        _store_bytes(upload=upload, renew=renew)
    except redis.exceptions.LockError:
        # Our lock lapsed (a stall of more than POOLHUB_STORE_LOCK_SECONDS) and another worker may be
        # storing now: record nothing, come back later; by then it is stored or the lock is free.
        return StoreResult(StoreOutcome.BUSY, retry_in=_lock_seconds() * random.uniform(0.5, 1.5))
    except TRANSIENT_ERRORS as exc:
        return _attempt_failed(upload_id=upload.id, error=_describe(exc), final=upload.attempts >= _max_attempts())
    _stored(upload_id=upload.id)
    return StoreResult(StoreOutcome.STORED)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _attempt_begin(*, upload_id: UUID | str) -> tuple[Upload, bool] | None:
    """Count the attempt before any byte moves (committed on its own). None: nothing left to do.

    When the attempts are already used up (the last one's worker died), the upload gets one
    last look: if GridFS holds it whole, it is stored; otherwise it fails.
    """
    with transaction.atomic():
        upload = Upload.objects.select_for_update().filter(id=upload_id).first()
        if upload is None or upload.status != UploadStatus.CACHED:
            return None
        if upload.attempts >= _max_attempts():
            return upload, True
        upload.attempts += 1
        _append(upload, EventType.UPLOAD_STORING)
        upload.save(update_fields=["attempts", "version", "updated_at"])
    return upload, False


def _store_bytes(*, upload: Upload, renew: Any) -> None:
    if file_intact(bucket=Bucket.UPLOADS, file_id=upload.id, sha256=upload.sha256, on_chunk=renew):
        return  # an earlier try wrote it whole and died before recording it
    file_delete(bucket=Bucket.UPLOADS, file_id=upload.id)  # orphan chunks of an interrupted try
    if not staging_exists(key=upload.staging_key):
        raise StagingMissing(upload.staging_key)

    def chunks() -> Any:
        for chunk in staging_read(key=upload.staging_key):
            renew()
            yield chunk

    file_write(bucket=Bucket.UPLOADS, file_id=upload.id, filename=upload.filename, chunks=chunks(),
               metadata={"pool": str(upload.pool_id), "uploader": str(upload.uploader_id),
                         "sha256": upload.sha256, "content_type": upload.content_type})
    renew()
    # Read back checked (renewing the lock as it goes: a 64 MB read-back takes a while).
    if not file_intact(bucket=Bucket.UPLOADS, file_id=upload.id, sha256=upload.sha256, on_chunk=renew):
        file_delete(bucket=Bucket.UPLOADS, file_id=upload.id)
        raise StoreError("the stored file's sha256 differs from the upload's")


def _stored(*, upload_id: UUID) -> None:
    with transaction.atomic():
        upload = Upload.objects.select_for_update().get(id=upload_id)
        if upload.status != UploadStatus.CACHED:
            return
        upload.status = UploadStatus.STORED
        _append(upload, EventType.UPLOAD_STORED)
        upload.save(update_fields=["status", "version", "updated_at"])
        key = upload.staging_key
        transaction.on_commit(lambda: staging_drop(key=key))


def _attempt_failed(*, upload_id: UUID, error: str, final: bool, count: bool = True) -> StoreResult:
    with transaction.atomic():
        upload = Upload.objects.select_for_update().get(id=upload_id)
        if upload.status != UploadStatus.CACHED:
            return StoreResult(StoreOutcome.NOTHING_TO_DO)
        if count:
            _append(upload, EventType.UPLOAD_STORE_FAILED, error=error)
        if not final:
            upload.save(update_fields=["version", "updated_at"])
            return StoreResult(StoreOutcome.RETRY, retry_in=store_backoff(attempt=upload.attempts))
        upload.status = UploadStatus.FAILED
        _append(upload, EventType.UPLOAD_FAILED, error=error)
        upload.save(update_fields=["status", "version", "updated_at"])
        key = upload.staging_key
        transaction.on_commit(lambda: staging_keep(key=key))
    logger.error("upload %s failed after %s attempts, staged bytes kept for re-drive: %s",
                 upload_id, upload.attempts, error)
    return StoreResult(StoreOutcome.FAILED)


# --- storing in batches -------------------------------------------------------------------------

@dataclass(frozen=True)
class DrainResult:
    stored: int = 0
    failed: int = 0  # attempts that failed (retried later, or `failed` when they were the last)
    single: int = 0  # uploads past their first attempt, handed to `upload_store` one at a time


def _batch_limits() -> tuple[int, int]:
    return int(settings.POOLHUB_STORE_BATCH_FILES), int(settings.POOLHUB_STORE_BATCH_BYTES)


def uploads_store_pending(*, upload_ids: Sequence[UUID | str] = (), max_batches: int = 8) -> DrainResult:
    """Store these uploads and, in the same batches, other uploads waiting for their first attempt.

    The batch path of the first store attempt (later attempts, with their backoff, go through
    `upload_store`): per batch, one transaction counts every upload's attempt (`upload.storing`),
    `poolhub.filestore.files_write` writes their chunks together (several files per
    `insert_many`, streamed from staging), and one transaction appends every `upload.stored`.
    The per-upload Redis lock and the row lock keep each upload stored once; an upload whose
    write fails gets its counted failure and a retry like any other attempt.
    """
    given = [str(upload_id) for upload_id in upload_ids]
    totals = DrainResult()
    later = list(Upload.objects.filter(id__in=given, status=UploadStatus.CACHED, attempts__gt=0)
                 .values_list("id", flat=True))
    for upload_id in later:  # a redelivered kick, a retry: one at a time, with the full checks
        _retry_later(upload_id=upload_id, result=upload_store(upload_id=upload_id))
    totals = DrainResult(single=len(later))
    first = [upload_id for upload_id in given if upload_id not in {str(i) for i in later}]
    for _ in range(max_batches):
        result = _store_batch(upload_ids=first)
        first = []
        totals = DrainResult(stored=totals.stored + result.stored, failed=totals.failed + result.failed,
                             single=totals.single)
        if result.stored + result.failed == 0:
            break
    return totals


def _retry_later(*, upload_id: UUID | str, result: StoreResult) -> None:
    if result.outcome in (StoreOutcome.RETRY, StoreOutcome.BUSY):
        from uploads import tasks  # late: tasks import this module

        try:
            tasks.upload_store.apply_async(args=(str(upload_id),), countdown=result.retry_in)
        except Exception:  # the broker is down: the stuck re-drive sends it again
            logger.warning("could not schedule the retry of upload %s", upload_id, exc_info=True)


def _pending_first_attempts(*, upload_ids: Sequence[str]) -> list[Upload]:
    """The batch: these uploads if still waiting, then the oldest others waiting, within the limits."""
    files, total = _batch_limits()
    waiting = Upload.objects.filter(status=UploadStatus.CACHED, attempts=0)
    candidates = list(waiting.filter(id__in=upload_ids)) if upload_ids else []
    if len(candidates) < files:
        candidates += list(waiting.exclude(id__in=[c.id for c in candidates]).order_by("created_at")
                           [:files - len(candidates)])
    batch: list[Upload] = []
    size = 0
    for upload in candidates:
        if batch and size + upload.size > total:
            break
        batch.append(upload)
        size += upload.size
    return batch


def _store_batch(*, upload_ids: Sequence[str]) -> DrainResult:
    retries: list[tuple[UUID, StoreResult]] = []
    result = _store_batch_locked(upload_ids=upload_ids, retries=retries)
    for upload_id, retry in retries:  # after the locks are released: a retry takes the lock again
        _retry_later(upload_id=upload_id, result=retry)
    return result


def _store_batch_locked(*, upload_ids: Sequence[str], retries: list[tuple[UUID, StoreResult]]) -> DrainResult:
    locks: dict[UUID, Any] = {}
    try:
        for upload in _pending_first_attempts(upload_ids=upload_ids):
            lock = redis_client().lock(f"poolhub:uploads:storing:{upload.id}", timeout=_lock_seconds(),
                                       blocking=False)
            if lock.acquire():
                locks[upload.id] = lock
        if not locks:
            return DrainResult()
        uploads = _batch_begin(upload_ids=list(locks))
        if not uploads:
            return DrainResult()
        return _batch_write(uploads=uploads, renew=_renewer(list(locks.values())), retries=retries)
    finally:
        for upload_id, lock in locks.items():
            try:
                lock.release()
            except redis.exceptions.LockError:
                logger.warning("store lock for upload %s lapsed before release", upload_id)


def _renewer(locks: list[Any]) -> Any:
    """Renew every lock of the batch, at most every third of their timeout."""
    seconds = _lock_seconds()
    last = time.monotonic()

    def renew() -> None:
        nonlocal last
        if time.monotonic() - last >= seconds / 3:
            for lock in locks:
                lock.extend(seconds, replace_ttl=True)
            last = time.monotonic()
    return renew


def _batch_begin(*, upload_ids: list[UUID]) -> list[Upload]:
    """Count the first attempt of every upload still waiting, in one transaction (committed before
    any byte moves, so a killed worker's attempt counts too)."""
    with transaction.atomic():
        uploads = list(Upload.objects.select_for_update(skip_locked=True)
                       .filter(id__in=upload_ids, status=UploadStatus.CACHED, attempts=0).order_by("created_at"))
        for upload in uploads:
            upload.attempts += 1
        _append_many(uploads, EventType.UPLOAD_STORING)
        Upload.objects.bulk_update(uploads, ["attempts", "version", "updated_at"])
    return uploads


def _append_many(uploads: Sequence[Upload], type: str) -> None:
    now = timezone.now()
    events_append(events=[
        NewEvent(stream=upload, stream_type="upload", type=type,
                 data={"status": upload.status, "attempts": upload.attempts},
                 pool_id=upload.pool_id, user_id=upload.uploader_id) for upload in uploads])
    for upload in uploads:
        upload.updated_at = now


def _batch_write(*, uploads: list[Upload], renew: Any, retries: list[tuple[UUID, StoreResult]]) -> DrainResult:
    def chunks(upload: Upload) -> Iterator[bytes]:
        if not staging_exists(key=upload.staging_key):
            raise StagingMissing(upload.staging_key)
        for chunk in staging_read(key=upload.staging_key):
            renew()
            yield chunk

    try:
        written = files_write(bucket=Bucket.UPLOADS, files=[
            FileToWrite(file_id=upload.id, filename=upload.filename, chunks=chunks(upload),
                        metadata={"pool": str(upload.pool_id), "uploader": str(upload.uploader_id),
                                  "sha256": upload.sha256, "content_type": upload.content_type})
            for upload in uploads])
    except TRANSIENT_ERRORS as exc:
        written = {str(upload.id): cast(Exception, exc) for upload in uploads}
    stored: list[Upload] = []
    failed = 0
    for upload in uploads:
        outcome = written.get(str(upload.id))
        if isinstance(outcome, StoredFile) and outcome.sha256 == upload.sha256:
            stored.append(upload)  # the digest of the bytes written, as they went; inserts acknowledged
            continue
        if isinstance(outcome, StoredFile):
            file_delete(bucket=Bucket.UPLOADS, file_id=upload.id)
            outcome = StoreError("the stored file's sha256 differs from the upload's")
        error = outcome if isinstance(outcome, BaseException) else StoreError("not written")
        if not isinstance(error, TRANSIENT_ERRORS):
            raise error
        failed += 1
        retries.append((upload.id, _attempt_failed(upload_id=upload.id, error=_describe(error),
                                                   final=upload.attempts >= _max_attempts())))
    _stored_many(uploads=stored)
    return DrainResult(stored=len(stored), failed=failed)


def _stored_many(*, uploads: list[Upload]) -> None:
    """Every `upload.stored` of the batch in one transaction; the staged bytes dropped after it."""
    if not uploads:
        return
    with transaction.atomic():
        rows = list(Upload.objects.select_for_update().filter(id__in=[u.id for u in uploads],
                                                              status=UploadStatus.CACHED).order_by("created_at"))
        for row in rows:
            row.status = UploadStatus.STORED
        _append_many(rows, EventType.UPLOAD_STORED)
        Upload.objects.bulk_update(rows, ["status", "version", "updated_at"])
        keys = [row.staging_key for row in rows]
        transaction.on_commit(lambda: staging_drop_many(keys=keys))


def uploads_pending_kick(*, older_than: timedelta | None = None) -> int:
    """The relay (beat, every few seconds): kick the store again for uploads still waiting for
    their first attempt after `older_than` (a kick lost with the broker down, or a crash between
    commit and kick). Kicks are idempotent: a worker that finds them stored does nothing."""
    if older_than is None:
        older_than = timedelta(seconds=int(settings.POOLHUB_STORE_KICK_SECONDS))
    files, _ = _batch_limits()
    ids = list(Upload.objects.filter(status=UploadStatus.CACHED, attempts=0,
                                     created_at__lt=timezone.now() - older_than)
               .order_by("created_at").values_list("id", flat=True)[:files * 8])
    for start in range(0, len(ids), files):
        if not store_kick(upload_ids=ids[start:start + files]):
            break
    return len(ids)


# --- re-drive ---------------------------------------------------------------------------------

def upload_redrive(*, upload_id: UUID | str, by: User | None = None) -> Upload:
    """Send a failed upload back to `cached` with fresh attempts (its staged bytes must still be there)."""
    with transaction.atomic():
        upload = Upload.objects.select_for_update().filter(id=upload_id).first()
        if upload is None:
            raise NotFound("no such upload")
        if upload.status != UploadStatus.FAILED:
            raise Conflict(f"only failed uploads can be re-driven; this one is {upload.status}")
        if not staging_exists(key=upload.staging_key):
            raise Conflict("the staged bytes of this upload are gone; it cannot be re-driven")
        previous = upload.attempts
        upload.status = UploadStatus.CACHED
        upload.attempts = 0
        _append(upload, EventType.UPLOAD_REDRIVEN, previous_attempts=previous, by=str(by.id) if by else None)
        upload.save(update_fields=["status", "attempts", "version", "updated_at"])
        key = upload.staging_key
        transaction.on_commit(lambda: staging_touch(key=key))
        _enqueue_store(upload.id)
    return upload


def uploads_stuck_redrive(*, older_than: timedelta | None = None) -> int:
    """Send the store task again for uploads `cached` longer than `older_than` (a lost publish or
    a dead worker). Safe beside a running store: the task is idempotent and locked per upload."""
    if older_than is None:
        older_than = timedelta(seconds=int(settings.POOLHUB_STUCK_CACHED_SECONDS))
    cutoff = timezone.now() - older_than
    ids = list(Upload.objects.filter(status=UploadStatus.CACHED, updated_at__lt=cutoff)
               .values_list("id", flat=True)[:1000])
    for upload_id in ids:
        _retry_later(upload_id=upload_id, result=StoreResult(StoreOutcome.RETRY))
    if ids:
        logger.warning("re-sent the store task for %d upload(s) left cached since before %s", len(ids), cutoff)
    return len(ids)
