"""Rebuilding the groups' projection columns (status, version, closed_at) from the event log."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from uuid import UUID

from django.db import transaction

from batching.models import Group, GroupStatus
from uploads.event_types import EventType
from uploads.models import Event

# What each group event does to the group's status; events not listed leave it as it is.
STATUS_AFTER: dict[str, GroupStatus] = {
    EventType.GROUP_CLOSED: GroupStatus.CLOSED,
    EventType.GROUP_CLAIMED: GroupStatus.EXPORTING,
    EventType.GROUP_LEASE_EXPIRED: GroupStatus.CLOSED,
    EventType.GROUP_LEASE_REVOKED: GroupStatus.CLOSED,
    EventType.GROUP_REOPENED: GroupStatus.OPEN,
    EventType.RESULT_AVAILABLE: GroupStatus.COMPLETED,
    EventType.GROUP_SKIPPED: GroupStatus.SKIPPED,  # closed by time with too few contributors (docs/lifecycle.md)
}


def group_state(events: Iterable[Event]) -> tuple[str, int, datetime | None]:
    """(status, version, closed_at) after the events, in order. A new group is `open` at version 0."""
    status, version, closed_at = GroupStatus.OPEN, 0, None
    for event in events:
        version = event.version
        status = STATUS_AFTER.get(event.type, status)
        if event.type in (EventType.GROUP_CLOSED, EventType.GROUP_SKIPPED):
            closed_at = event.at
        elif event.type == EventType.GROUP_REOPENED:
            closed_at = None
    return str(status), version, closed_at


def group_rebuild(*, group_id: UUID | str) -> bool:
    """Rebuild one group's projection; True if anything changed."""
    with transaction.atomic():
        group = Group.objects.select_for_update().get(id=group_id)
        events = Event.objects.filter(stream_type="group", stream_id=group.id).order_by("version")
        status, version, closed_at = group_state(events)
        if (group.status, group.version, group.closed_at) == (status, version, closed_at):
            return False
        group.status, group.version, group.closed_at = status, version, closed_at
        group.save(update_fields=["status", "version", "closed_at"])
        return True
