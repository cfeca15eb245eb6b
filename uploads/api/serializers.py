from __future__ import annotations

from typing import Any

from rest_framework import serializers

from uploads.models import Event, Upload, UploadStatus


class UploadOutput(serializers.Serializer):
    """The contract's upload: {id, pool, uploader, filename, size, sha256, content_type, timestamp,
    status, group, attempts, created_at}, plus `uploader_username` and `batch`."""

    def to_representation(self, upload: Upload) -> dict[str, Any]:
        return {
            "id": str(upload.id),
            "pool": str(upload.pool_id),
            "uploader": str(upload.uploader_id),
            "uploader_username": upload.uploader.username,
            "filename": upload.filename,
            "size": upload.size,
            "sha256": upload.sha256,
            "content_type": upload.content_type,
            "timestamp": serializers.DateTimeField().to_representation(upload.timestamp),
            "status": upload.status,
            "group": str(upload.group_id) if upload.group_id else None,
            "attempts": upload.attempts,
            "batch": str(upload.batch_id) if upload.batch_id else None,
            "created_at": serializers.DateTimeField().to_representation(upload.created_at),
        }


class EventOutput(serializers.Serializer):
    def to_representation(self, event: Event) -> dict[str, Any]:
        return {"seq": event.seq, "type": event.type,
                "at": serializers.DateTimeField().to_representation(event.at), "data": event.data}


class UploadDetailOutput(UploadOutput):
    def to_representation(self, upload: Upload) -> dict[str, Any]:
        events = self.context["events"]
        return {**super().to_representation(upload), "events": [EventOutput(e).data for e in events]}


class UploadListFilters(serializers.Serializer):
    pool = serializers.UUIDField(required=False)
    group = serializers.UUIDField(required=False)
    status = serializers.ChoiceField(choices=UploadStatus.choices, required=False)
    user = serializers.CharField(required=False, max_length=150)
