"""Rebuilding upload projections from the event log.

Each upload event's data carries the projection after it (`status`, `attempts`, and `group` when
it changes), so folding a stream is taking the last value of each; `version` is the number of
events. `projections_rebuild(fix=False)` only reports; `fix=True` rewrites the rows that differ.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from django.db import transaction

from uploads.models import Event, Upload


@dataclass
class UploadProjection:
    status: str | None = None
    attempts: int = 0
    group_id: str | None = None
    version: int = 0
    group_seen: bool = False

    def apply(self, data: dict[str, Any]) -> None:
        self.version += 1
        self.status = data.get("status", self.status)
        self.attempts = int(data.get("attempts", self.attempts))
        if "group" in data:
            self.group_seen = True
            self.group_id = data["group"]


@dataclass
class Difference:
    stream_id: UUID
    problem: str
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # name -> (row, log)

    def __str__(self) -> str:
        changes = ", ".join(f"{name}: row {row!r} != log {log!r}" for name, (row, log) in self.fields.items())
        return f"upload {self.stream_id}: {self.problem}{': ' + changes if changes else ''}"


def _folded() -> Iterator[tuple[UUID, UploadProjection]]:
    """Every upload stream folded, one stream at a time, reading the log in seq order per stream."""
    current: UUID | None = None
    projection = UploadProjection()
    events = (Event.objects.filter(stream_type="upload").order_by("stream_id", "seq")
              .values_list("stream_id", "data").iterator(chunk_size=2000))
    for stream_id, data in events:
        if stream_id != current:
            if current is not None:
                yield current, projection
            current, projection = stream_id, UploadProjection()
        projection.apply(data or {})
    if current is not None:
        yield current, projection


def _compare(upload: Upload, projection: UploadProjection) -> dict[str, tuple[Any, Any]]:
    row = {"status": upload.status, "attempts": upload.attempts, "version": upload.version}
    log: dict[str, Any] = {"status": projection.status, "attempts": projection.attempts,
                           "version": projection.version}
    if projection.group_seen:
        row["group"] = str(upload.group_id) if upload.group_id else None
        log["group"] = projection.group_id
    return {name: (row[name], log[name]) for name in row if row[name] != log[name]}


def projections_rebuild(*, fix: bool) -> list[Difference]:
    """Compare (and with `fix`, rewrite) every upload's projection against its log."""
    differences: list[Difference] = []
    seen: set[UUID] = set()
    for stream_id, projection in _folded():
        seen.add(stream_id)
        upload = Upload.objects.filter(id=stream_id).first()
        if upload is None:
            differences.append(Difference(stream_id, "events without an upload row"))
            continue
        changed = _compare(upload, projection)
        if changed:
            differences.append(Difference(stream_id, "projection differs from the log", changed))
            if fix:
                _rewrite(upload, projection)
    for upload_id in Upload.objects.values_list("id", flat=True).iterator(chunk_size=2000):
        if upload_id not in seen:
            differences.append(Difference(upload_id, "upload row without events"))
    return differences


def _rewrite(upload: Upload, projection: UploadProjection) -> None:
    with transaction.atomic():
        values: dict[str, Any] = {"status": projection.status, "attempts": projection.attempts,
                                  "version": projection.version}
        if projection.group_seen:
            values["group_id"] = projection.group_id
        Upload.objects.filter(id=upload.id).update(**values)
