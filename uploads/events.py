"""Appending to the event log. Every state change in poolhub goes through `event_append`."""

from __future__ import annotations

from typing import Any, Protocol
from uuid import UUID

from django.db import connection, transaction
from django.utils import timezone

from uploads.models import Event

# One key for pg_advisory_xact_lock: appends are serialized until their transaction commits,
# so events become visible in `seq` order and a reader resuming "after seq N" never skips an
# event that committed late with a smaller seq.
_EVENT_LOG_LOCK = 7_315_001


class Stream(Protocol):
    id: UUID
    version: int


def event_append(*, stream: Stream, stream_type: str, type: str, data: dict[str, Any] | None = None,
                 pool_id: UUID | None = None, user_id: UUID | None = None) -> Event:
    """Append one event to `stream` at its next version. Call inside the transaction that saves
    the stream's projection row (the caller saves it; this bumps `stream.version`).

    Two writers that loaded the same version collide on the unique (stream, version) and the
    second one's transaction fails: optimistic concurrency, as in the eventsourcing library.
    After commit the event is published to websocket listeners.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("event_append must run inside transaction.atomic()")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_EVENT_LOG_LOCK])
    stream.version += 1
    event = Event.objects.create(
        stream_type=stream_type, stream_id=stream.id, version=stream.version, type=type, data=data or {},
        at=timezone.now(), pool_id=pool_id, user_id=user_id,
    )
    from notifications.services import event_publish  # late import: notifications reads uploads

    transaction.on_commit(lambda: event_publish(event=event))
    return event
