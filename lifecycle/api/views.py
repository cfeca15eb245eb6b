"""Usage endpoint: validate, check access, read, serialize."""

from __future__ import annotations

from typing import cast
from uuid import UUID

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Role, User
from accounts.selectors import pool_access
from lifecycle.selectors import pool_usage
from poolhub.openapi import error_responses


class UsageOutput(serializers.Serializer):
    stored_bytes = serializers.IntegerField()
    uploads = serializers.IntegerField()
    results = serializers.IntegerField()
    quota_bytes = serializers.IntegerField(allow_null=True)
    retention_days = serializers.IntegerField(allow_null=True)
    staged_bytes = serializers.IntegerField()
    free_bytes = serializers.IntegerField(allow_null=True)
    purged_uploads = serializers.IntegerField()


class PoolUsageApi(APIView):
    @extend_schema(responses={200: UsageOutput, **error_responses(401, 403, 404)})
    def get(self, request: Request, pool_id: UUID) -> Response:
        pool = pool_access(user=cast(User, request.user), pool_id=pool_id, roles=[Role.MANAGER])
        return Response(UsageOutput(pool_usage(pool=pool)).data)
