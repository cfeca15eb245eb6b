from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.backends.base.operations import BaseDatabaseOperations
from rest_framework import serializers

from accounts.models import (
    MAX_TIMESTAMP_AGE_SECONDS,
    MAX_WINDOW_SECONDS,
    MIN_WINDOW_SECONDS,
    LatePolicy,
    Membership,
    Pool,
    Role,
    User,
)

BIG_INTEGER_MAX = BaseDatabaseOperations.integer_field_ranges["PositiveBigIntegerField"][1]


class UserOutput(serializers.Serializer):
    id = serializers.UUIDField()
    username = serializers.CharField()
    role = serializers.SerializerMethodField()

    def get_role(self, user: User) -> str:
        return "admin" if user.is_poolhub_admin else "user"


class CredentialsInput(serializers.Serializer):
    username = serializers.RegexField(r"^[\w.@+-]+\Z", max_length=150)
    password = serializers.CharField(max_length=256, trim_whitespace=False)


class SignupInput(CredentialsInput):
    """The signup body as documented: the password rules `user_signup` enforces (400 weak_password)."""

    password = serializers.CharField(min_length=10, max_length=256, trim_whitespace=False,
                                     help_text="At least 10 characters, not entirely numeric, not a common "
                                               "password, not too similar to the username.")


class RefreshInput(serializers.Serializer):
    refresh = serializers.CharField()


class LogoutInput(serializers.Serializer):
    refresh = serializers.CharField(required=False, allow_blank=True)


class PasswordChangeInput(serializers.Serializer):
    current_password = serializers.CharField(max_length=256, trim_whitespace=False)
    new_password = serializers.CharField(max_length=256, trim_whitespace=False)
    refresh = serializers.CharField(required=False, allow_blank=True)


class TokenPairOutput(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()


class AuthOutput(TokenPairOutput):
    user = UserOutput()


class PoolRoleOutput(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    role = serializers.CharField()


class ValidateOutput(serializers.Serializer):
    user = UserOutput()
    pools = PoolRoleOutput(many=True)


class PoolSerializer(serializers.ModelSerializer):
    """A pool's settings. Integers are bounded by their column's range (a larger one is a 400, not a
    database error)."""

    window_seconds = serializers.IntegerField(min_value=MIN_WINDOW_SECONDS, max_value=MAX_WINDOW_SECONDS,
                                              required=False)
    grace_seconds = serializers.IntegerField(min_value=0, max_value=MAX_WINDOW_SECONDS, required=False)
    max_file_bytes = serializers.IntegerField(min_value=1, max_value=BIG_INTEGER_MAX, required=False)
    max_result_bytes = serializers.IntegerField(min_value=1, max_value=2**62, required=False)
    max_timestamp_age_seconds = serializers.IntegerField(min_value=MIN_WINDOW_SECONDS,
                                                         max_value=MAX_TIMESTAMP_AGE_SECONDS, required=False)
    allowed_types = serializers.ListField(child=serializers.CharField(max_length=100), required=False,
                                          max_length=100)
    late_policy = serializers.ChoiceField(choices=LatePolicy.choices, required=False)
    webhook_secret = serializers.CharField(write_only=True, required=False, allow_blank=True, max_length=128)

    def build_standard_field(self, field_name: str, model_field: Any) -> tuple[type[Any], dict[str, Any]]:
        field_class, kwargs = super().build_standard_field(field_name, model_field)
        if isinstance(model_field, models.IntegerField) and "max_value" not in kwargs:
            kwargs["max_value"] = BaseDatabaseOperations.integer_field_ranges[model_field.get_internal_type()][1]
        return field_class, kwargs

    def validate_webhook_url(self, value: str) -> str:
        from batching.webhooks import webhook_url_check  # public addresses only (server-side request forgery)

        webhook_url_check(url=value)
        return value

    class Meta:
        model = Pool
        fields = ["id", "name", "window_seconds", "grace_seconds", "max_file_bytes", "allowed_types",
                  "late_policy", "created_at", "origin", "lease_seconds", "close_min_uploads",
                  "close_min_contributors", "webhook_url", "webhook_secret", "max_result_bytes",
                  "max_timestamp_age_seconds",
                  # lifecycle (docs/lifecycle.md)
                  "quota_bytes", "retention_days", "min_contributors", "short_round_policy",
                  "max_uploads_per_contributor"]
        read_only_fields = ["id", "created_at"]


class PoolOutput(PoolSerializer):
    role = serializers.SerializerMethodField()

    class Meta(PoolSerializer.Meta):
        fields = [*PoolSerializer.Meta.fields, "role"]

    def get_role(self, pool: Pool) -> str | None:
        roles: dict[Any, str] = self.context.get("roles", {})
        return roles.get(pool.id)

    def to_representation(self, pool: Pool) -> dict[str, Any]:
        data = super().to_representation(pool)
        # A webhook URL can carry the receiver's credentials: only admins and managers see it.
        if not self.context.get("admin") and data.get("role") != "manager":
            data.pop("webhook_url", None)
        return data


class MemberSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=Role.choices)

    def to_representation(self, membership: Membership) -> dict[str, Any]:
        return {"username": membership.user.username, "role": membership.role}


class MemberRoleInput(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class ProvisionInput(serializers.Serializer):
    count = serializers.IntegerField(min_value=1)
    prefix = serializers.CharField(max_length=100, required=False, default="client-")
    role = serializers.ChoiceField(choices=Role.choices, required=False, default=Role.CONTRIBUTOR)


class ProvisionSchemaInput(ProvisionInput):
    """The provisioning body as documented: the bounds `pool_members_provision` checks."""

    count = serializers.IntegerField(min_value=1, max_value=settings.POOLHUB_PROVISION_MAX)
    prefix = serializers.RegexField(r"^[\w.@+-]{1,100}$", required=False, default="client-")


class ProvisionedMemberOutput(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField()
    role = serializers.CharField()


class ProvisionOutput(serializers.Serializer):
    members = ProvisionedMemberOutput(many=True)
