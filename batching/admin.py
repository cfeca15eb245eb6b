"""Admin for rounds: groups per pool with their state, leases, results and webhook deliveries;
actions to close, reopen and re-export a group, and to re-send a webhook."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, QuerySet, Sum
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat

from batching import services, webhooks
from batching.models import Group, Lease, Result, WebhookDelivery
from poolhub.errors import ApiError


class _ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class LeaseInline(_ReadOnlyInline):
    model = Lease
    fields = readonly_fields = ("id", "exporter", "created_at", "expires_at", "released_at", "end_reason")


class ResultInline(_ReadOnlyInline):
    model = Result
    fields = readonly_fields = ("id", "filename", "size", "sha256", "lease", "created_at")


class WebhookDeliveryInline(_ReadOnlyInline):
    model = WebhookDelivery
    fields = readonly_fields = ("id", "url", "status", "attempts", "response_status", "last_error", "created_at",
                                "delivered_at")


def _run(request: HttpRequest, groups: QuerySet[Group], action: str) -> None:
    done = 0
    for group in groups:
        try:
            if action == "close":
                services.group_close(group_id=group.id, reason="admin")
            elif action == "reopen":
                services.group_reopen(group_id=group.id)
            else:
                services.group_reexport(group_id=group.id)
            done += 1
        except ApiError as exc:
            messages.warning(request, f"{group}: {exc.message}")
    messages.info(request, f"{action}: {done} group(s)")


@admin.register(Group)
class GroupAdmin(admin.ModelAdmin):
    list_display = ["id", "pool", "window_start", "window_end", "status", "n_uploads", "n_bytes", "closed_at"]
    list_filter = ["status", "pool"]
    date_hierarchy = "created_at"  # windows follow clients' timestamps, which may be any year
    search_fields = ["id", "pool__name"]
    readonly_fields = ["id", "pool", "window_start", "window_end", "status", "version", "closed_at", "hold_until",
                       "created_at"]
    inlines = [LeaseInline, ResultInline, WebhookDeliveryInline]
    actions = ["close_groups", "reopen_groups", "reexport_groups"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Group]:
        return super().get_queryset(request).select_related("pool").annotate(
            upload_total=Count("uploads"), byte_total=Sum("uploads__size"))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # groups come from uploads' timestamps

    @admin.display(description="uploads", ordering="upload_total")
    def n_uploads(self, group: Group) -> int:
        return int(getattr(group, "upload_total", 0) or 0)

    @admin.display(description="size", ordering="byte_total")
    def n_bytes(self, group: Group) -> str:
        return filesizeformat(int(getattr(group, "byte_total", 0) or 0))

    @admin.action(description="Close now (the trigger event)")
    def close_groups(self, request: HttpRequest, queryset: QuerySet[Group]) -> None:
        _run(request, queryset, "close")

    @admin.action(description="Reopen (take uploads again for the pool's grace period)")
    def reopen_groups(self, request: HttpRequest, queryset: QuerySet[Group]) -> None:
        _run(request, queryset, "reopen")

    @admin.action(description="Re-export (revoke leases, close again, call the webhook)")
    def reexport_groups(self, request: HttpRequest, queryset: QuerySet[Group]) -> None:
        _run(request, queryset, "reexport")


@admin.register(Lease)
class LeaseAdmin(admin.ModelAdmin):
    list_display = ["id", "group", "exporter", "created_at", "expires_at", "released_at", "end_reason"]
    list_filter = ["end_reason", ("group__pool", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["id", "group__id", "exporter__username", "group__pool__name"]
    list_select_related = ["group", "exporter"]
    date_hierarchy = "created_at"
    readonly_fields = ["id", "group", "exporter", "created_at", "expires_at", "released_at", "end_reason"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Result)
class ResultAdmin(admin.ModelAdmin):
    list_display = ["id", "pool", "group", "filename", "file_size", "sha256", "created_at"]
    list_filter = [("pool", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["id", "filename", "sha256", "pool__name", "group__id"]
    list_select_related = ["pool", "group"]
    date_hierarchy = "created_at"
    readonly_fields = ["id", "pool", "group", "lease", "filename", "size", "sha256", "content_type", "upload_ids",
                       "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="size", ordering="size")
    def file_size(self, result: Result) -> str:
        return filesizeformat(result.size)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["id", "pool", "group", "url", "status", "attempts", "response_status", "created_at",
                    "delivered_at"]
    list_filter = ["status", ("pool", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["id", "url", "pool__name", "group__id", "last_error"]
    list_select_related = ["pool", "group"]
    date_hierarchy = "created_at"
    readonly_fields = ["id", "pool", "group", "event_seq", "url", "payload", "status", "attempts", "response_status",
                       "last_error", "created_at", "updated_at", "delivered_at"]
    actions = ["redeliver"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Send again")
    def redeliver(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        for delivery in queryset:
            webhooks.webhook_redeliver(delivery_id=delivery.id)
        messages.info(request, f"{queryset.count()} delivery(ies) queued")
