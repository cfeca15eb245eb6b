from __future__ import annotations

from rest_framework import serializers

from batching.models import GroupStatus, Result
from batching.selectors import result_content_path


class GroupOutput(serializers.Serializer):
    id = serializers.UUIDField()
    pool = serializers.UUIDField(source="pool_id")
    window_start = serializers.DateTimeField()
    window_end = serializers.DateTimeField()
    status = serializers.CharField()
    upload_count = serializers.IntegerField()
    contributor_count = serializers.IntegerField()  # distinct uploaders so far (the web page's current window)
    bytes = serializers.IntegerField()
    closed_at = serializers.DateTimeField()


class GroupListInput(serializers.Serializer):
    status = serializers.ChoiceField(choices=GroupStatus.choices, required=False)


class LeaseOutput(serializers.Serializer):
    lease_id = serializers.UUIDField(source="id")
    group = serializers.UUIDField(source="group_id")
    expires_at = serializers.DateTimeField()


class ArchiveInput(serializers.Serializer):
    lease = serializers.UUIDField()


class ResultInput(serializers.Serializer):
    file = serializers.FileField(allow_empty_file=True, use_url=False)
    lease_id = serializers.UUIDField()
    sha256 = serializers.RegexField(r"^[0-9a-fA-F]{64}\Z", required=False)


class ResultOutput(serializers.Serializer):
    id = serializers.UUIDField()
    pool = serializers.UUIDField(source="pool_id")
    group = serializers.UUIDField(source="group_id")
    size = serializers.IntegerField()
    sha256 = serializers.CharField()
    filename = serializers.CharField()
    created_at = serializers.DateTimeField()
    url = serializers.SerializerMethodField()
    upload_ids = serializers.ListField(child=serializers.CharField())

    def get_url(self, result: Result) -> str:
        return result_content_path(result_id=result.id)


class WebhookTestOutput(serializers.Serializer):
    delivered = serializers.BooleanField()
    status = serializers.IntegerField(allow_null=True)  # the receiver's HTTP status; null when unreachable
    error = serializers.CharField(allow_blank=True)
