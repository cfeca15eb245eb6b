"""Rounds: the groups uploads join, closing them, export leases and results.

Every state change of a group is an event on the group's stream, appended in the transaction
that saves the group's projection row (`status`). Writers lock the group row first
(`select_for_update`; on SQLite the IMMEDIATE transactions serialize writers), so two writers
never append at the same version. Uploads joining a group take only a key-share lock on its
row (`FOR KEY SHARE`): they never wait for each other, and a close or claim (`FOR UPDATE`)
waits until the uploads already joining have committed, so none slips into an exported group.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from datetime import datetime, timedelta
from typing import IO, Any
from uuid import UUID, uuid4

from django.db import connection, transaction
from django.utils import timezone

from accounts.models import LatePolicy, Pool, ShortRoundPolicy, User
from batching import webhooks
from batching.models import Group, GroupStatus, Lease, LeaseEnd, Result
from batching.selectors import group_lineage, group_upload_counts, result_content_path
from batching.windows import window_bounds
from lifecycle.services import pool_bytes_add
from poolhub.errors import BadRequest, Conflict, Forbidden, Unavailable
from poolhub.filestore import Bucket, FileStoreError, StoredFile, file_delete, file_write, io_chunks
from uploads.checks import timestamp_age_check
from uploads.event_types import EventType
from uploads.events import event_append

logger = logging.getLogger(__name__)

# Past this many windows ahead, something is wrong (every window closed by trigger?): refuse.
_MAX_WINDOWS_AHEAD = 1000
_HASH_CHUNK = 1024 * 1024


def _now() -> datetime:
    return timezone.now()


def _locked(group_id: UUID | str) -> Group:
    """The group row, locked for this transaction (FOR UPDATE: waits for uploads joining it)."""
    return Group.objects.select_for_update(of=("self",)).select_related("pool").get(id=group_id)


def _append(group: Group, type: str, data: dict[str, Any]) -> Any:
    """Append to the group's stream and save its projection, in the caller's transaction."""
    event = event_append(stream=group, stream_type="group", type=type, data=data, pool_id=group.pool_id)
    group.save()
    return event


def _closed_at(group: Group, at: datetime) -> None:
    """`closed_at` is the time of the `group.closed` event, so a rebuild from the log matches it."""
    group.closed_at = at
    group.save(update_fields=["closed_at"])


# --- windows and late uploads -------------------------------------------------------------------

def group_is_due(*, group: Group, pool: Pool, now: datetime) -> bool:
    """Beat closes an open group once its window's end plus the pool's grace has passed
    (and, after an admin reopened it, not before the hold ends)."""
    if now < group.window_end + timedelta(seconds=pool.grace_seconds):
        return False
    return group.hold_until is None or now >= group.hold_until


def _window_group(*, pool: Pool, start: datetime, end: datetime, create: bool = True) -> Group | None:
    """The window's group, created on first use, key-share locked until the caller's transaction
    ends: a close or claim (FOR UPDATE) waits for it, other uploads do not.

    Get-or-create by the unique (pool, window_start) constraint: `INSERT ... ON CONFLICT DO
    NOTHING`, then read; two requests creating the same window both end up with the one row."""
    if create:
        Group.objects.bulk_create([Group(pool=pool, window_start=start, window_end=end)], ignore_conflicts=True)
    groups = Group.objects.filter(pool=pool, window_start=start)
    if connection.vendor != "postgresql":  # SQLite: one writer at a time, no row locks
        return groups.first()
    # FOR KEY SHARE: Django's ORM has no spelling for it (select_for_update gives the stronger ones).
    sql, params = groups.query.sql_with_params()
    return next(iter(Group.objects.raw(f"{sql} FOR KEY SHARE", params)), None)


def _accepts_on_time(*, group: Group | None, pool: Pool, end: datetime, now: datetime) -> bool:
    """Whether an upload for this window is on time: its group is open and not yet due."""
    if group is None:
        return now < end + timedelta(seconds=pool.grace_seconds)
    return group.status == GroupStatus.OPEN and not group_is_due(group=group, pool=pool, now=now)


def _next_open_group(*, pool: Pool, at: datetime, now: datetime) -> Group:
    """The first group from the window containing `at` on that still takes uploads."""
    for _ in range(_MAX_WINDOWS_AHEAD):
        start, end = window_bounds(origin=pool.origin, window_seconds=pool.window_seconds, at=at)
        group = _window_group(pool=pool, start=start, end=end)
        if _accepts_on_time(group=group, pool=pool, end=end, now=now):
            assert group is not None
            return group
        at = end
    raise Conflict("no open window to place this upload in", code="late_upload")


def group_for_upload(*, pool: Pool, timestamp: datetime) -> Group:
    """The group an upload with this timestamp joins; call it inside the upload's transaction.

    On time: the group of its own window, created on first use. Late (its window is closed or
    past its end plus grace), by the pool's `late_policy`: `reject` raises 409 `late_upload`;
    `accept` joins its own window's group if that is not yet exported, otherwise the next open
    one; `next` joins the currently open group. A late upload appends `group.late_upload` to the
    group it joins, so every move is in the log. The chosen group stays locked against a claim
    until the upload's transaction ends, so an upload never slips into a group being exported.
    """
    timestamp_age_check(timestamp=timestamp, pool=pool)  # every way in: REST, batch, socket, tus
    with transaction.atomic():
        now = _now()
        start, end = window_bounds(origin=pool.origin, window_seconds=pool.window_seconds, at=timestamp)
        own = _window_group(pool=pool, start=start, end=end, create=False)
        if _accepts_on_time(group=own, pool=pool, end=end, now=now):
            target = own or _window_group(pool=pool, start=start, end=end)
            assert target is not None
            _close_rules_on_commit(pool=pool, group=target)
            return target
        if pool.late_policy == LatePolicy.REJECT:
            raise Conflict(
                "this upload's window is already closed and the pool refuses late uploads", code="late_upload",
                details={"timestamp": timestamp.isoformat(), "window_start": start.isoformat(),
                         "window_end": end.isoformat(), "status": own.status if own else "due"},
            )
        joinable = (GroupStatus.OPEN, GroupStatus.CLOSED)
        if pool.late_policy == LatePolicy.ACCEPT and (own is None or own.status in joinable):
            target = own or _window_group(pool=pool, start=start, end=end)
        else:
            target = _next_open_group(pool=pool, at=max(now, end), now=now)
        assert target is not None
        # FOR NO KEY UPDATE, not _locked's FOR UPDATE: it does not wait for the key-share locks
        # of uploads joining the group (two of them each waiting for the other's would deadlock);
        # late uploads to one group append to its stream one at a time.
        locked = Group.objects.select_for_update(no_key=True, of=("self",)).select_related("pool").get(id=target.id)
        _append(locked, EventType.GROUP_LATE_UPLOAD, {
            "group": str(locked.id), "timestamp": timestamp.isoformat(), "window_start": start.isoformat(),
            "policy": pool.late_policy, "moved": locked.window_start != start,
        })
    _close_rules_on_commit(pool=pool, group=locked)
    return locked


def _close_rules_on_commit(*, pool: Pool, group: Group) -> None:
    """Once the upload's transaction commits (so it counts), check the pool's close rules."""
    if pool.close_min_uploads is None and pool.close_min_contributors is None:
        return
    from batching import tasks  # late: tasks import this module

    group_id = str(group.id)
    # robust: the upload is committed; a broker that is down must not fail its request now
    # (beat's close of due windows still closes the group).
    transaction.on_commit(lambda: tasks.group_close_if_rules_met.delay(group_id), robust=True)


# --- closing -----------------------------------------------------------------------------------

def group_close(*, group_id: UUID | str, reason: str) -> Group:
    """Close an open group now: `group.closed` to the pool, and the pool's webhook, if any.
    Closing a group that is no longer open changes nothing."""
    with transaction.atomic():
        group = _locked(group_id)
        if group.status != GroupStatus.OPEN:
            return group
        group.status = GroupStatus.CLOSED
        group.hold_until = None
        event = _append(group, EventType.GROUP_CLOSED, {"group": str(group.id)})
        _closed_at(group, event.at)
        webhooks.webhook_schedule(group=group, event_seq=event.seq, reason=reason)
    logger.info("group %s closed (%s)", group.id, reason)
    return group


def group_close_by_time(*, group_id: UUID | str, now: datetime | None = None) -> Group:
    """Beat's close of a due window. A pool with `min_contributors` exports a window only when that
    many distinct uploaders contributed; otherwise, by its `short_round_policy`, the window's
    uploads roll into the next open window (`roll`) or stay (`skip`), and the group ends `skipped`
    (`group.skipped`; no `group.closed`, no webhook, never exported)."""
    with transaction.atomic():
        group = _locked(group_id)
        pool = group.pool
        if group.status != GroupStatus.OPEN or pool.min_contributors is None:
            contributors = None
        else:
            contributors = group.uploads.values("uploader_id").distinct().count()
        if contributors is not None and pool.min_contributors is not None and contributors < pool.min_contributors:
            return _group_skip(group=group, contributors=contributors, now=now or _now())
    return group_close(group_id=group_id, reason="time")


def _group_skip(*, group: Group, contributors: int, now: datetime) -> Group:
    from uploads.services import upload_regroup  # late: uploads' services import this module

    pool = group.pool
    data: dict[str, Any] = {"group": str(group.id), "contributors": contributors,
                            "min_contributors": pool.min_contributors, "policy": pool.short_round_policy}
    if pool.short_round_policy == ShortRoundPolicy.ROLL:
        target = _next_open_group(pool=pool, at=max(now, group.window_end), now=now)
        for upload in list(group.uploads.all()):
            upload_regroup(upload=upload, group=target, reason="rolled")
        data["rolled_into"] = str(target.id)
    group.status = GroupStatus.SKIPPED
    group.hold_until = None
    event = _append(group, EventType.GROUP_SKIPPED, data)
    _closed_at(group, event.at)
    logger.info("group %s skipped: %d of %s contributors (%s)", group.id, contributors, pool.min_contributors,
                pool.short_round_policy)
    return group


def group_close_rules_met(*, group: Group, pool: Pool) -> bool:
    if pool.close_min_uploads is not None and group.uploads.count() >= pool.close_min_uploads:
        return True
    if pool.close_min_contributors is not None:
        contributors = group.uploads.values("uploader_id").distinct().count()
        if contributors >= pool.close_min_contributors:
            return True
    return False


def group_close_if_rules_met(*, group_id: UUID | str) -> Group | None:
    group = Group.objects.select_related("pool").filter(id=group_id).first()
    if group is None or group.status != GroupStatus.OPEN:
        return group
    if group_close_rules_met(group=group, pool=group.pool):
        return group_close(group_id=group.id, reason="rule")
    return group


def groups_close_due(*, now: datetime | None = None) -> list[UUID]:
    """Beat: close every open group whose window ended more than the pool's grace ago, and any
    whose close rule is met (a backstop for the check sent when an upload joins)."""
    now = now or _now()
    closed: list[UUID] = []
    candidates = list(Group.objects.filter(status=GroupStatus.OPEN, window_end__lte=now).select_related("pool"))
    for group in candidates:
        if group_is_due(group=group, pool=group.pool, now=now):
            group_close_by_time(group_id=group.id, now=now)
            closed.append(group.id)
    ruled = Group.objects.filter(status=GroupStatus.OPEN).exclude(
        pool__close_min_uploads__isnull=True, pool__close_min_contributors__isnull=True
    ).select_related("pool")
    for group in list(ruled):
        if group.id not in closed and group_close_rules_met(group=group, pool=group.pool):
            group_close(group_id=group.id, reason="rule")
            closed.append(group.id)
    return closed


# --- leases -------------------------------------------------------------------------------------

def _lease_live(lease: Lease, now: datetime) -> bool:
    return lease.released_at is None and lease.expires_at > now


def _lease_end(*, group: Group, lease: Lease, reason: LeaseEnd, now: datetime) -> None:
    """End a lease; an exporting group it held goes back to `closed`, with an event."""
    lease.released_at = now
    lease.end_reason = reason
    lease.save(update_fields=["released_at", "end_reason"])
    if reason == LeaseEnd.COMPLETED or group.status != GroupStatus.EXPORTING:
        return
    group.status = GroupStatus.CLOSED
    type = EventType.GROUP_LEASE_EXPIRED if reason == LeaseEnd.EXPIRED else EventType.GROUP_LEASE_REVOKED
    _append(group, type, {"group": str(group.id), "lease_id": str(lease.id)})


def _open_leases(group: Group) -> list[Lease]:
    return list(Lease.objects.select_for_update().filter(group=group, released_at__isnull=True))


def group_claim(*, group_id: UUID | str, exporter: User) -> Lease:
    """Give the exporter a lease on a closed group whose uploads have all settled.

    409 `not_ready` (with counts) while it is open or an upload is still `cached`; 409
    `already_claimed` while another lease is live. An expired lease found here ends first.
    """
    with transaction.atomic():
        group = _locked(group_id)
        now = _now()
        for lease in _open_leases(group):
            if _lease_live(lease, now):
                raise Conflict("another exporter holds this group", code="already_claimed",
                               details={"expires_at": lease.expires_at.isoformat()})
            _lease_end(group=group, lease=lease, reason=LeaseEnd.EXPIRED, now=now)
        if group.status == GroupStatus.COMPLETED:
            raise Conflict("this group already has its result")
        counts = group_upload_counts(group=group)
        if group.status != GroupStatus.CLOSED or counts["cached"]:
            raise Conflict("the group is not ready for export", code="not_ready",
                           details={"status": group.status, **counts})
        lease = Lease.objects.create(group=group, exporter=exporter,
                                     expires_at=now + timedelta(seconds=group.pool.lease_seconds))
        group.status = GroupStatus.EXPORTING
        _append(group, EventType.GROUP_CLAIMED, {"group": str(group.id), "lease_id": str(lease.id),
                                         "expires_at": lease.expires_at.isoformat()})
    return lease


def leases_expire(*, now: datetime | None = None) -> list[UUID]:
    """Beat: end every lease past its time; their groups go back to `closed`."""
    now = now or _now()
    ended: list[UUID] = []
    due = Lease.objects.filter(released_at__isnull=True, expires_at__lte=now).values_list("id", "group_id")
    for lease_id, group_id in list(due):
        with transaction.atomic():
            group = _locked(group_id)
            lease = Lease.objects.select_for_update().get(id=lease_id)
            if lease.released_at is None and lease.expires_at <= now:
                _lease_end(group=group, lease=lease, reason=LeaseEnd.EXPIRED, now=now)
                ended.append(lease.id)
    return ended


def lease_check(*, group: Group, lease_id: UUID, user: User, is_admin: bool, now: datetime | None = None) -> Lease:
    """The lease, if `user` may act under it on `group` now; else the contract's error."""
    now = now or _now()
    lease = Lease.objects.filter(id=lease_id).first()
    if lease is None or lease.group_id != group.id:
        raise Conflict("no such lease on this group", details={"lease_id": str(lease_id)})
    if lease.exporter_id != user.id and not is_admin:
        raise Forbidden("this lease belongs to another exporter")
    if lease.end_reason == LeaseEnd.COMPLETED:
        return lease
    if not _lease_live(lease, now):
        raise Conflict("the lease has expired; claim the group again", code="lease_expired",
                       details={"expires_at": lease.expires_at.isoformat(), "ended": lease.end_reason or "expired"})
    return lease


# --- results ------------------------------------------------------------------------------------

def _hash_only(source: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := source.read(_HASH_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _same_result(*, lease: Lease, source: IO[bytes]) -> Result:
    """The result already posted under this lease, if `source` holds the same bytes."""
    existing = Result.objects.get(lease=lease)
    if _hash_only(source) != existing.sha256:
        raise _different_result(existing)
    return existing


def _different_result(existing: Result) -> Conflict:
    return Conflict("a different result was already posted under this lease",
                    details={"result_id": str(existing.id), "sha256": existing.sha256})


def result_post(*, group: Group, lease_id: UUID, user: User, is_admin: bool, source: IO[bytes],
                filename: str, content_type: str, sha256: str | None = None) -> tuple[Result, bool]:
    """Store the exporter's result and complete the group. Returns (result, created).

    The bytes stream into GridFS before the transaction; posting the same bytes again under the
    same lease returns the first result and stores nothing.
    """
    lease = lease_check(group=group, lease_id=lease_id, user=user, is_admin=is_admin)
    if lease.end_reason == LeaseEnd.COMPLETED:
        return _same_result(lease=lease, source=source), False
    result_id = uuid4()
    try:
        stored = file_write(bucket=Bucket.RESULTS, file_id=result_id, filename=filename or "result.bin",
                            chunks=io_chunks(source), metadata={"pool": str(group.pool_id), "group": str(group.id)})
    except FileStoreError as exc:
        raise Unavailable("the file store is unavailable; post the result again") from exc
    try:
        if stored.length == 0:
            raise BadRequest("the file has no bytes", code="empty_file", details={"field": "file"})
        if sha256 is not None and sha256 != stored.sha256:
            raise BadRequest("the file's sha256 does not match", code="checksum_mismatch",
                             details={"expected": sha256, "actual": stored.sha256})
        return _result_commit(group_id=group.id, lease_id=lease.id, result_id=result_id, stored=stored,
                              user=user, is_admin=is_admin, filename=filename, content_type=content_type)
    except BaseException:
        _result_file_delete(result_id=result_id)
        raise


def _result_file_delete(*, result_id: UUID) -> None:
    # The store is down: an orphan result file is harmless (no row points at it).
    with contextlib.suppress(FileStoreError):
        file_delete(bucket=Bucket.RESULTS, file_id=result_id)


def _result_commit(*, group_id: UUID, lease_id: UUID, result_id: UUID, stored: StoredFile, user: User,
                   is_admin: bool, filename: str, content_type: str) -> tuple[Result, bool]:
    with transaction.atomic():
        group = _locked(group_id)
        lease = lease_check(group=group, lease_id=lease_id, user=user, is_admin=is_admin)
        existing = Result.objects.filter(lease=lease).first()
        if existing is not None:  # the same post raced itself: keep the first
            if existing.sha256 != stored.sha256:
                raise _different_result(existing)
            transaction.on_commit(lambda: _result_file_delete(result_id=result_id))
            return existing, False
        result = Result.objects.create(
            id=result_id, pool_id=group.pool_id, group=group, lease=lease, filename=filename[:255] or "result.bin",
            size=stored.length, sha256=stored.sha256, content_type=content_type[:100] or "application/octet-stream",
            upload_ids=[str(upload_id) for upload_id in group_lineage(group=group)],
        )
        _lease_end(group=group, lease=lease, reason=LeaseEnd.COMPLETED, now=_now())
        pool_bytes_add(pool_id=group.pool_id, size=result.size)
        group.status = GroupStatus.COMPLETED
        _append(group, EventType.RESULT_AVAILABLE, {
            "group": str(group.id), "result_id": str(result.id), "size": result.size, "sha256": result.sha256,
            "url": result_content_path(result_id=result.id),
        })
    return result, True


# --- admin actions ------------------------------------------------------------------------------

def _revoke_leases(group: Group, now: datetime) -> None:
    for lease in _open_leases(group):
        _lease_end(group=group, lease=lease, reason=LeaseEnd.REVOKED, now=now)


def group_reopen(*, group_id: UUID | str) -> Group:
    """Admin: a closed (or exporting) group takes uploads again, for the pool's grace period."""
    with transaction.atomic():
        group = _locked(group_id)
        if group.status == GroupStatus.COMPLETED:
            raise Conflict("a completed group cannot be reopened; re-export it instead")
        if group.status == GroupStatus.OPEN:
            return group
        now = _now()
        _revoke_leases(group, now)
        group.status = GroupStatus.OPEN
        group.closed_at = None
        group.hold_until = now + timedelta(seconds=group.pool.grace_seconds)
        _append(group, EventType.GROUP_REOPENED, {"group": str(group.id)})
    return group


def group_reexport(*, group_id: UUID | str) -> Group:
    """Admin: make a closed, exporting or completed group available for a new export: live
    leases are revoked, it is closed again (`group.closed`) and the webhook is called again."""
    with transaction.atomic():
        group = _locked(group_id)
        if group.status == GroupStatus.OPEN:
            raise Conflict("the group is still open; close it instead")
        _revoke_leases(group, _now())
        group.status = GroupStatus.CLOSED
        event = _append(group, EventType.GROUP_CLOSED, {"group": str(group.id)})
        _closed_at(group, event.at)
        webhooks.webhook_schedule(group=group, event_seq=event.seq, reason="reexport")
    return group
