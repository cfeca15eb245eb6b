"""Django admin: purge tombstones, read-only (the pools list shows usage, in accounts/admin.py)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from lifecycle.models import Purge


@admin.register(Purge)
class PurgeAdmin(admin.ModelAdmin):
    list_display = ["stream_type", "stream_id", "pool_id", "bytes", "reason", "marked_at", "removed_at"]
    list_filter = ["stream_type", "reason"]
    search_fields = ["stream_id", "pool_id"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a deleted tombstone would make purged content look present (503 instead of 410)
