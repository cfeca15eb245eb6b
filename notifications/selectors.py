"""Which committed events are notifications, what they look like, and who receives them.

The live push (`services.event_publish`) and the replay (`resume`) both go through
`notification_for_event` and `notification_audience`, so a socket that missed a push gets
exactly the frame it would have received, routed by exactly the same rule.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.db.models import Q, QuerySet

from batching.selectors import result_content_path
from uploads.event_types import UPLOAD_PREFIX, EventType
from uploads.models import Event
from uploads.selectors import events_committed

POOL_EVENT_TYPES = (EventType.GROUP_CLOSED, EventType.RESULT_AVAILABLE)
ADMINS_GROUP = "poolhub.admins"


def user_group(user_id: UUID | str) -> str:
    """Every socket of one user: their uploads' status, and control messages (logout, membership)."""
    return f"poolhub.user.{UUID(str(user_id)).hex}"


def pool_group(pool_id: UUID | str) -> str:
    """Every socket of every member of one pool: one group_send reaches them all."""
    return f"poolhub.pool.{UUID(str(pool_id)).hex}"


@dataclass(frozen=True)
class Audience:
    """Who may receive a notification: the uploader and admins, or the members of a pool."""

    user_id: str | None = None
    admins: bool = False
    pool_id: str | None = None

    def groups(self) -> list[str]:
        groups = []
        if self.user_id:
            groups.append(user_group(self.user_id))
        if self.admins:
            groups.append(ADMINS_GROUP)
        if self.pool_id:
            groups.append(pool_group(self.pool_id))
        return groups

    def includes(self, *, user_id: str, is_admin: bool, pool_ids: Collection[str]) -> bool:
        if self.user_id and self.user_id == user_id:
            return True
        if self.admins and is_admin:
            return True
        return bool(self.pool_id and self.pool_id in pool_ids)


def _str(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def notification_for_event(*, event: Event) -> dict[str, Any] | None:
    """The frame a socket receives for this event, or None when the event notifies nobody."""
    data = event.data or {}
    if event.type.startswith(UPLOAD_PREFIX):
        if "status" not in data:
            return None  # an upload event that changes no status (the status push comes with the next one)
        return {"type": "upload.status", "seq": event.seq, "upload_id": str(event.stream_id),
                "status": data["status"], "attempts": int(data.get("attempts") or 0)}
    if event.type == EventType.GROUP_CLOSED:
        return {"type": "group.closed", "seq": event.seq, "pool": _str(event.pool_id),
                "group": _str(data.get("group")) or str(event.stream_id)}
    if event.type == "result.available":
        result_id = _str(data.get("result_id"))
        return {"type": "result.available", "seq": event.seq, "pool": _str(event.pool_id),
                "group": _str(data.get("group")), "result_id": result_id, "size": data.get("size"),
                "sha256": data.get("sha256"),
                "url": data.get("url") or (result_content_path(result_id=result_id) if result_id else None)}
    return None


def notification_audience(*, event: Event) -> Audience:
    if event.type.startswith(UPLOAD_PREFIX):
        return Audience(user_id=_str(event.user_id), admins=True)
    if event.type in POOL_EVENT_TYPES and event.pool_id is not None:
        return Audience(pool_id=str(event.pool_id))
    return Audience()


def notification_events(*, user_id: UUID | str, is_admin: bool, pool_ids: Iterable[UUID | str],
                        after: int) -> QuerySet[Event]:
    """The events after `after` that may notify this user, in `seq` order: a superset by type,
    uploader and pool; `notifications_for` applies the exact rule."""
    upload_events = Q(type__startswith=UPLOAD_PREFIX)
    if not is_admin:
        upload_events &= Q(user_id=user_id)
    pool_events = Q(type__in=POOL_EVENT_TYPES, pool_id__in=[str(p) for p in pool_ids])
    return events_committed(Event.objects.filter(upload_events | pool_events, seq__gt=after)).order_by("seq")


def notifications_for(*, events: Iterable[Event], user_id: UUID | str, is_admin: bool,
                      pool_ids: Iterable[UUID | str]) -> Iterator[dict[str, Any]]:
    """The frames these events push to this user, in order: the live pushes' audience rule and
    builder, applied to the log."""
    pools = {str(p) for p in pool_ids}
    for event in events:
        if notification_audience(event=event).includes(user_id=str(user_id), is_admin=is_admin, pool_ids=pools):
            frame = notification_for_event(event=event)
            if frame is not None:
                yield frame
