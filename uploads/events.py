"""Appending to the event log. Every state change in poolhub goes through `event_append`
(or `events_append` for several events in one statement).

Ordering without a global lock (docs/architecture.md, "The event log's order"): on PostgreSQL
each event records the id of the transaction that wrote it (`txid`, `pg_current_xact_id()`),
and its `seq` is derived from it: `txid * SEQ_PER_TRANSACTION + n` for the transaction's n-th
event. So `seq` order is transaction-id order, and every transaction whose id is below the
oldest one still running (`pg_snapshot_xmin(pg_current_snapshot())`) has finished. A reader
that resumes "after seq N" reads only below that horizon (`uploads.selectors.events_committed`):
an event that commits later has a transaction id at or above the horizon, so its `seq` is above
everything the reader returned and it is read on a later resume, never skipped. Appends to
different streams take no common lock and never wait for each other. On SQLite (one writer at
a time) `seq` is the plain autoincrement and every committed event is visible in order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from uploads.models import Event

# Events one transaction may append (the low bits of `seq`). A group commit of many uploads
# appends a handful per upload; a transaction that needs more raises instead of wrapping.
SEQ_PER_TRANSACTION = 1 << 16


class Stream(Protocol):
    id: UUID
    version: int


@dataclass
class NewEvent:
    """One event to append: `stream.version` is bumped by `events_append`."""

    stream: Stream
    stream_type: str
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    pool_id: UUID | None = None
    user_id: UUID | None = None


def event_append(*, stream: Stream, stream_type: str, type: str, data: dict[str, Any] | None = None,
                 pool_id: UUID | None = None, user_id: UUID | None = None) -> Event:
    """Append one event to `stream` at its next version. Call inside the transaction that saves
    the stream's projection row (the caller saves it; this bumps `stream.version`).

    Two writers that loaded the same version collide on the unique (stream, version) and the
    second one's transaction fails: optimistic concurrency, as in the eventsourcing library.
    After commit the event is published to websocket listeners.
    """
    return events_append(events=[NewEvent(stream=stream, stream_type=stream_type, type=type, data=data or {},
                                          pool_id=pool_id, user_id=user_id)])[0]


def events_append(*, events: Sequence[NewEvent]) -> list[Event]:
    """Append several events in one statement, in the given order (a stream may appear more
    than once; each appearance takes its next version). Same rules as `event_append`."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("event_append must run inside transaction.atomic()")
    if not events:
        return []
    at = timezone.now()
    rows = []
    for new in events:
        new.stream.version += 1
        rows.append(Event(stream_type=new.stream_type, stream_id=new.stream.id, version=new.stream.version,
                          type=new.type, data=new.data, at=at, pool_id=new.pool_id, user_id=new.user_id))
    if connection.vendor == "postgresql":
        _insert_postgresql(rows)
    else:
        for row in rows:  # one writer at a time: autoincrement order is commit order
            row.save(force_insert=True)
    from notifications.services import event_publish  # late import: notifications reads uploads

    for row in rows:
        transaction.on_commit(lambda row=row: event_publish(event=row))  # type: ignore[misc]
    return rows


_INSERT = """
WITH x AS (SELECT pg_current_xact_id()::text::bigint AS t),
     n AS (SELECT x.t, COALESCE((SELECT max(e.seq) + 1 FROM uploads_event e
                                 WHERE e.seq >= x.t * {per} AND e.seq < (x.t + 1) * {per}), x.t * {per}) AS first
           FROM x)
INSERT INTO uploads_event (seq, txid, stream_type, stream_id, version, type, data, at, pool_id, user_id)
SELECT n.first + v.ord, n.t, v.stream_type, v.stream_id::uuid, v.version, v.type, v.data::jsonb,
       v.at::timestamptz, v.pool_id::uuid, v.user_id::uuid
FROM n, (VALUES {values}) AS v(ord, stream_type, stream_id, version, type, data, at, pool_id, user_id)
RETURNING seq, txid
"""


def _insert_postgresql(rows: list[Event]) -> None:
    """One INSERT for all rows, `seq` derived from this transaction's id (see the module doc)."""
    placeholders = ", ".join(["(%s::int, %s, %s, %s::int, %s, %s, %s, %s, %s)"] * len(rows))
    params: list[Any] = []
    for ord_, row in enumerate(rows):
        params += [ord_, row.stream_type, str(row.stream_id), row.version, row.type,
                   json.dumps(row.data, cls=DjangoJSONEncoder), _iso(row.at),
                   str(row.pool_id) if row.pool_id else None, str(row.user_id) if row.user_id else None]
    with connection.cursor() as cursor:
        cursor.execute(_INSERT.format(per=SEQ_PER_TRANSACTION, values=placeholders), params)
        returned = sorted(cursor.fetchall())
    if returned[-1][0] % SEQ_PER_TRANSACTION < len(rows) - 1 or len(returned) != len(rows):
        raise RuntimeError("one transaction appended more events than SEQ_PER_TRANSACTION")
    for row, (seq, txid) in zip(rows, returned, strict=True):
        row.seq, row.txid = seq, txid
        row._state.adding = False
        row._state.db = connection.alias


def _iso(at: datetime) -> str:
    return at.isoformat()
