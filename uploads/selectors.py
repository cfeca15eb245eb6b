"""Upload reads: lists, one upload with access checked, its events, and its bytes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from django.db import connection
from django.db.models import Q, QuerySet
from django.db.models.expressions import RawSQL

from accounts.models import Role, User
from accounts.selectors import pool_access, user_is_admin
from lifecycle.selectors import upload_content_check
from poolhub.errors import NotFound
from poolhub.filestore import Bucket, file_chunks
from uploads.events import SEQ_PER_TRANSACTION
from uploads.models import Event, Upload, UploadStatus
from uploads.staging import StagingMissing, staging_exists, staging_read

READERS = (Role.MANAGER, Role.EXPORTER)
HORIZON_WAIT_SECONDS = 5.0


def upload_list(*, user: User, filters: dict[str, Any] | None = None) -> QuerySet[Upload]:
    """The caller's uploads (admin: everyone's), filtered by pool, user (id or username), status, group."""
    uploads = Upload.objects.select_related("uploader").order_by("-created_at", "-id")
    if not user_is_admin(user=user):
        uploads = uploads.filter(uploader=user)
    filters = filters or {}
    if filters.get("pool"):
        uploads = uploads.filter(pool_id=filters["pool"])
    if filters.get("group"):
        uploads = uploads.filter(group_id=filters["group"])
    if filters.get("status"):
        uploads = uploads.filter(status=filters["status"])
    if filters.get("user"):
        who = str(filters["user"])
        uploads = uploads.filter(Q(uploader__username=who) | Q(uploader_id=_uuid_or_none(who)))
    return uploads


def _uuid_or_none(value: str) -> UUID | None:
    try:
        return UUID(value)
    except ValueError:
        return None


def upload_get(*, user: User, upload_id: UUID | str) -> Upload:
    """An upload its uploader, the pool's managers and exporters, or an admin may see.

    Anyone else: 404 when not in the pool (as for an unknown id), 403 for another role in it.
    """
    upload = Upload.objects.select_related("uploader").filter(id=upload_id).first()
    if upload is None:
        raise NotFound("no such upload")
    if upload.uploader_id == user.id or user_is_admin(user=user):
        return upload
    try:
        pool_access(user=user, pool_id=upload.pool_id, roles=READERS)
    except NotFound as exc:
        raise NotFound("no such upload") from exc
    return upload


def upload_events(*, upload: Upload) -> QuerySet[Event]:
    return Event.objects.filter(stream_type="upload", stream_id=upload.id).order_by("seq")


def events_committed(events: QuerySet[Event]) -> QuerySet[Event]:
    """Only the events below the safe horizon: every reader that pages or resumes by `seq` reads
    through this, so an event that commits later (with a smaller transaction id than some still
    running) is never skipped (uploads.events explains the order). On PostgreSQL the horizon is
    the oldest running transaction's id (`pg_snapshot_xmin`); on SQLite (one writer) everything
    committed is in order already."""
    if connection.vendor != "postgresql":
        return events
    return events.filter(seq__lt=_horizon())


def _horizon() -> RawSQL:
    return RawSQL("pg_snapshot_xmin(pg_current_snapshot())::text::bigint * %s", [SEQ_PER_TRANSACTION])


def events_settle(*, after: int, timeout: float = HORIZON_WAIT_SECONDS) -> None:
    """Wait (at most `timeout`) until no committed event after `after` is above the horizon, so a
    resume right after a commit returns it. The horizon passes as soon as the transactions older
    than that event end: normally milliseconds; a long transaction elsewhere on the database
    server holds it longer, and then the resume returns what is safe and the rest comes later."""
    if connection.vendor != "postgresql":
        return
    deadline = time.monotonic() + timeout
    while Event.objects.filter(seq__gt=after, seq__gte=_horizon()).exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def upload_content(*, upload: Upload, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Bytes `start` up to `end` (default: all) of the upload, in chunks: from the file store once
    stored (checked; only the chunks that hold the range are read), from staging before.

    Raises poolhub.filestore.FileMissing (or StagingMissing) before the first byte when neither has them.
    """
    upload_content_check(upload=upload)  # 410 once purged, released or discarded
    end = upload.size if end is None else end
    if upload.status != UploadStatus.STORED and staging_exists(key=upload.staging_key):
        return _staged_then_stored(upload=upload, start=start, end=end)
    # Stored (perhaps just now, as staging was dropped).
    return file_chunks(bucket=Bucket.UPLOADS, file_id=upload.id, start=start, end=end)


def _staged_then_stored(*, upload: Upload, start: int, end: int) -> Iterator[bytes]:
    """Staged bytes (staging keeps no offsets: the bytes before `start` are read and skipped; a
    staged file is at most one upload's size and short-lived). If the store finishes and drops them
    mid-way, the rest comes from the file store."""
    offset = start
    position = 0
    try:
        for chunk in staging_read(key=upload.staging_key):
            piece = chunk[max(0, offset - position):max(0, end - position)]
            position += len(chunk)
            if piece:
                offset += len(piece)
                yield piece
            if position >= end:
                return
        return
    except StagingMissing:
        pass
    if offset < end:
        yield from file_chunks(bucket=Bucket.UPLOADS, file_id=upload.id, start=offset, end=end)
