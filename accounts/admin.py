"""Django admin for IAM: users, pools and memberships, with bulk member adds."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.models import Group as AuthGroup
from django.db import models
from django.db.models import F, QuerySet
from django.db.models.expressions import Combinable
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse

from accounts import services
from accounts.models import Membership, Pool, Role, User
from poolhub.errors import ApiError

# The console an operator works from: pools, members, uploads, rounds, results, webhooks.
admin.site.site_header = admin.site.site_title = "poolhub console"
admin.site.index_title = "Operations"
# Access is by pool role and the account's system role; Django's permission groups are unused.
admin.site.unregister(AuthGroup)


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ["username", "role", "is_active", "date_joined", "last_login"]
    list_filter = ["role", "is_active", "is_staff"]
    search_fields = ["username", "email"]
    fieldsets = (*(BaseUserAdmin.fieldsets or ()), ("poolhub", {"fields": ("role",)}))

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change and "is_active" in form.changed_data:  # deactivation ends its tokens and sockets
            services.user_active_set(user=obj, active=obj.is_active)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    show_change_link = False


class BulkMembersForm(forms.Form):
    usernames = forms.CharField(widget=forms.Textarea(attrs={"rows": 12, "cols": 60}),
                                help_text="One username per line (or separated by commas or spaces).")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.CONTRIBUTOR)

    def clean_usernames(self) -> list[str]:
        raw = self.cleaned_data["usernames"].replace(",", " ").split()
        return sorted(set(raw))


class ProvisionForm(forms.Form):
    count = forms.IntegerField(min_value=1, initial=10)  # the service enforces POOLHUB_PROVISION_MAX
    name_prefix = forms.CharField(max_length=100, initial="client-", label="Username prefix")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.CONTRIBUTOR)


@admin.register(Pool)
class PoolAdmin(admin.ModelAdmin):
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ["name", "window_seconds", "grace_seconds", "late_policy", "member_count", "stored_bytes",
                    "quota_bytes", "retention_days", "created_at"]
    list_filter = ["late_policy"]
    search_fields = ["name"]
    inlines = [MembershipInline]
    readonly_fields = ["id", "created_at"]
    actions = ["provision_members"]

    @admin.action(description="Provision new member accounts (downloads their credentials as CSV)")
    def provision_members(self, request: HttpRequest, queryset: QuerySet[Pool]) -> HttpResponse | None:
        """The same service as the API: generated passwords, shown once in the CSV, never stored."""
        if queryset.count() != 1:
            messages.error(request, "Select exactly one pool to provision accounts in.")
            return None
        pool = queryset.get()
        form = ProvisionForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            try:
                members = services.pool_members_provision(pool=pool, count=form.cleaned_data["count"],
                                                          prefix=form.cleaned_data["name_prefix"],
                                                          role=form.cleaned_data["role"])
            except ApiError as exc:
                messages.error(request, exc.message)
                return None
            response = HttpResponse(content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="{pool.name}-credentials.csv"'
            response["Cache-Control"] = "no-store"
            services.members_csv_write(response, members=members, pool=pool,
                                        url=request.build_absolute_uri("/").rstrip("/"))
            return response
        context = {**self.admin_site.each_context(request), "form": form, "pool": pool, "opts": self.model._meta,
                   "title": f"Provision accounts in {pool.name}",
                   "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME}
        return render(request, "admin/accounts/pool/provision.html", context)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Pool]:
        from django.db.models import Count

        return super().get_queryset(request).annotate(_members=Count("memberships", distinct=True),
                                                      _stored=Coalesce("usage__bytes", 0))

    @admin.display(description="members", ordering="_members")
    def member_count(self, pool: Any) -> int:
        return int(pool._members)

    def get_ordering(self, request: HttpRequest) -> tuple[str | Combinable, ...]:
        return (F("usage__bytes").desc(nulls_last=True), "name")  # the pools that hold the most first

    @admin.display(description="stored bytes", ordering="_stored")
    def stored_bytes(self, pool: Any) -> str:
        """lifecycle.PoolUsage: uploads (staged or stored) and results the pool holds. Sortable."""
        return f"{int(pool._stored):,}"

    def get_urls(self) -> list[Any]:
        extra = [path("<uuid:pool_id>/add-members/", self.admin_site.admin_view(self.add_members),
                      name="accounts_pool_add_members")]
        return extra + super().get_urls()

    def add_members(self, request: HttpRequest, pool_id: Any) -> HttpResponse:
        pool = get_object_or_404(Pool, id=pool_id)
        form = BulkMembersForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            names: list[str] = form.cleaned_data["usernames"]
            added = services.pool_members_add_many(pool=pool, usernames=names, role=form.cleaned_data["role"])
            known = set(User.objects.filter(username__in=names).values_list("username", flat=True))
            unknown = [n for n in names if n not in known]
            messages.success(request, f"Added {added} member(s) to {pool.name}.")
            if unknown:
                messages.warning(request, f"No such user(s), not added: {', '.join(unknown[:50])}")
            return HttpResponseRedirect(reverse("admin:accounts_pool_change", args=[pool.id]))
        context = {**self.admin_site.each_context(request), "form": form, "pool": pool,
                   "opts": self.model._meta, "title": f"Add members to {pool.name}"}
        return render(request, "admin/accounts/pool/add_members.html", context)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "pool", "role", "created_at"]
    list_filter = ["role", "pool"]
    search_fields = ["user__username", "pool__name"]
    autocomplete_fields = ["user", "pool"]
    actions = ["make_listener", "make_contributor"]

    @admin.action(description="Set role: listener")
    def make_listener(self, request: HttpRequest, queryset: QuerySet[Membership]) -> None:
        count = queryset.update(role=Role.LISTENER)
        messages.info(request, f"{count} membership(s) are now listeners.")

    @admin.action(description="Set role: contributor")
    def make_contributor(self, request: HttpRequest, queryset: QuerySet[Membership]) -> None:
        count = queryset.update(role=Role.CONTRIBUTOR)
        messages.info(request, f"{count} membership(s) are now contributors.")
