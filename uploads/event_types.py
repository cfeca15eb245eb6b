"""Every event type of the log, in one place (the log itself: uploads.events).

`StrEnum`: each member is its string, so rows, frames and comparisons with stored values work
unchanged. Upload events carry the upload's projection after them (uploads.services); group and
result events are on the group's stream (batching.services).
"""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    UPLOAD_CACHED = "upload.cached"  # accepted
    UPLOAD_STORING = "upload.storing"  # a store attempt starts (counted before any byte moves)
    UPLOAD_STORE_FAILED = "upload.store_failed"
    UPLOAD_STORED = "upload.stored"
    UPLOAD_FAILED = "upload.failed"  # attempts exhausted; staged bytes kept
    UPLOAD_REDRIVEN = "upload.redriven"
    UPLOAD_REGROUPED = "upload.regrouped"
    GROUP_LATE_UPLOAD = "group.late_upload"
    GROUP_CLOSED = "group.closed"
    GROUP_CLAIMED = "group.claimed"
    GROUP_LEASE_EXPIRED = "group.lease_expired"
    GROUP_LEASE_REVOKED = "group.lease_revoked"
    GROUP_REOPENED = "group.reopened"
    GROUP_SKIPPED = "group.skipped"  # closed by time with too few contributors
    RESULT_AVAILABLE = "result.available"


UPLOAD_PREFIX = "upload."  # every upload event's type starts with it
