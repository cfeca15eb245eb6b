"""Django admin: every upload, filtered by pool, user, status and window; re-drive failed ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat

from lifecycle.services import upload_discard
from poolhub.errors import ApiError
from uploads.models import Event, Upload, UploadStatus
from uploads.services import upload_redrive


@admin.register(Upload)
class UploadAdmin(admin.ModelAdmin):
    list_display = ["filename", "pool", "uploader", "status", "attempts", "file_size", "content_type", "timestamp",
                    "group", "created_at"]
    list_filter = ["status", ("pool", admin.RelatedOnlyFieldListFilter),
                   ("uploader", admin.RelatedOnlyFieldListFilter), ("group", admin.RelatedOnlyFieldListFilter),
                   "content_type"]
    date_hierarchy = "created_at"  # when it arrived: a client's `timestamp` may be any year
    search_fields = ["id", "filename", "sha256", "uploader__username", "pool__name"]
    list_select_related = ["pool", "uploader", "group"]
    readonly_fields = ["id", "pool", "uploader", "batch_id", "filename", "size", "sha256", "content_type",
                       "timestamp", "group", "status", "attempts", "staging_key", "version", "created_at",
                       "updated_at", "events"]
    actions = ["redrive", "discard"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the event log outlives nothing it describes

    @admin.display(description="size", ordering="size")
    def file_size(self, upload: Upload) -> str:
        return filesizeformat(upload.size)

    @admin.display(description="events")
    def events(self, upload: Upload) -> str:
        rows = Event.objects.filter(stream_type="upload", stream_id=upload.id).order_by("seq")
        return "\n".join(f"#{e.seq} {e.at:%Y-%m-%d %H:%M:%S} {e.type} {e.data}" for e in rows)

    @admin.action(description="Re-drive selected failed uploads to storage")
    def redrive(self, request: HttpRequest, queryset: QuerySet[Upload]) -> None:
        self._each_failed(request, queryset, upload_redrive, done="re-driven")

    @admin.action(description="Discard selected failed uploads (their staged bytes go now; no re-drive after)")
    def discard(self, request: HttpRequest, queryset: QuerySet[Upload]) -> None:
        self._each_failed(request, queryset, upload_discard, done="discarded")

    def _each_failed(self, request: HttpRequest, queryset: QuerySet[Upload], service: Callable[..., Any],
                     *, done: str) -> None:
        count = 0
        for upload in queryset.filter(status=UploadStatus.FAILED):
            try:
                service(upload_id=upload.id, by=request.user)
                count += 1
            except ApiError as exc:
                self.message_user(request, f"{upload}: {exc.message}", messages.ERROR)
        self.message_user(request, f"{count} upload(s) {done}", messages.SUCCESS)


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["seq", "type", "stream_type", "stream_id", "version", "at", "pool_id", "user_id"]
    list_filter = ["stream_type", "type"]
    search_fields = ["stream_id"]
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
