"""Rounds endpoints: validate, check access, call one service, serialize."""

from __future__ import annotations

from typing import Any, cast
from uuid import UUID

from django.http import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Role, User
from accounts.selectors import pool_access, user_is_admin
from batching import services
from batching.api.serializers import (
    ArchiveInput,
    GroupListInput,
    GroupOutput,
    LeaseOutput,
    ResultInput,
    ResultOutput,
    WebhookTestOutput,
)
from batching.archive import archive_read, group_archive
from batching.models import LeaseEnd
from batching.selectors import group_get_for, group_list, result_get_for, result_latest
from batching.webhooks import webhook_send_test
from lifecycle.selectors import group_archive_check, result_content_check
from poolhub.downloads import ranged_download
from poolhub.errors import BadRequest, Conflict, Unavailable
from poolhub.filestore import Bucket, FileStoreError, file_open, file_read
from poolhub.openapi import error_responses
from uploads.checks import max_result_bytes_for, size_check

EXPORT_ROLES = [Role.EXPORTER]
CLOSE_ROLES = [Role.MANAGER, Role.EXPORTER]



BINARY = {(200, "application/octet-stream"): OpenApiTypes.BINARY,
          (206, "application/octet-stream"): OpenApiTypes.BINARY}
RANGE_HEADERS = [
    OpenApiParameter("Range", str, OpenApiParameter.HEADER, description="bytes=<start>-[<end>]"),
    OpenApiParameter("If-Range", str, OpenApiParameter.HEADER, description="the ETag of an earlier answer"),
]


def _valid(serializer_class: type[Any], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return cast(dict[str, Any], serializer.validated_data)


def _user(request: Request) -> User:
    return cast(User, request.user)


def _group_output(group_id: UUID, user: User) -> dict[str, Any]:
    return cast(dict[str, Any], GroupOutput(group_get_for(user=user, group_id=group_id)).data)


class GroupListApi(APIView):
    @extend_schema(parameters=[GroupListInput],
                   responses={200: GroupOutput(many=True), **error_responses(400, 401, 404)})
    def get(self, request: Request, pool_id: UUID) -> Response:
        pool = pool_access(user=_user(request), pool_id=pool_id)
        data = _valid(GroupListInput, request.query_params)
        return Response(GroupOutput(group_list(pool=pool, status=data.get("status")), many=True).data)


class GroupDetailApi(APIView):
    @extend_schema(responses={200: GroupOutput, **error_responses(401, 404)})
    def get(self, request: Request, group_id: UUID) -> Response:
        return Response(GroupOutput(group_get_for(user=_user(request), group_id=group_id)).data)


class GroupCloseApi(APIView):
    @extend_schema(request=None, responses={200: GroupOutput, **error_responses(401, 403, 404)})
    def post(self, request: Request, group_id: UUID) -> Response:
        group = group_get_for(user=_user(request), group_id=group_id, roles=CLOSE_ROLES)
        services.group_close(group_id=group.id, reason="trigger")
        return Response(_group_output(group.id, _user(request)))


class GroupClaimApi(APIView):
    @extend_schema(request=None, responses={200: LeaseOutput, **error_responses(401, 403, 404, 409)})
    def post(self, request: Request, group_id: UUID) -> Response:
        group = group_get_for(user=_user(request), group_id=group_id, roles=EXPORT_ROLES)
        lease = services.group_claim(group_id=group.id, exporter=_user(request))
        return Response(LeaseOutput(lease).data)


class GroupArchiveApi(APIView):
    @extend_schema(parameters=[OpenApiParameter("lease", OpenApiTypes.UUID, required=True), *RANGE_HEADERS],
                   responses={(200, "application/x-tar"): OpenApiTypes.BINARY,
                              (206, "application/x-tar"): OpenApiTypes.BINARY,
                              **error_responses(400, 401, 403, 404, 409, 416, 503)})
    def get(self, request: Request, group_id: UUID) -> HttpResponseBase:
        user = _user(request)
        group = group_get_for(user=user, group_id=group_id, roles=EXPORT_ROLES)
        data = _valid(ArchiveInput, request.query_params)
        lease = services.lease_check(group=group, lease_id=data["lease"], user=user, is_admin=user_is_admin(user=user))
        if lease.end_reason == LeaseEnd.COMPLETED:
            raise Conflict("the result for this lease is in; claim the group again to export it again")
        group_archive_check(group=group)  # 410 once any of its uploads was purged
        archive = group_archive(group=group)
        return ranged_download(request=request, length=archive.length, etag=archive.etag,
                               read=lambda start, stop: archive_read(archive, start, stop),
                               filename=archive.filename, content_type="application/x-tar")


class GroupResultApi(APIView):
    @extend_schema(request={"multipart/form-data": ResultInput},
                   responses={201: ResultOutput, 200: ResultOutput,
                              **error_responses(400, 401, 403, 404, 409, 413, 503)})
    def post(self, request: Request, group_id: UUID) -> Response:
        user = _user(request)
        group = group_get_for(user=user, group_id=group_id, roles=EXPORT_ROLES)
        data = _valid(ResultInput, request.data)
        upload = data["file"]
        if upload.size == 0:
            raise BadRequest("the file has no bytes", code="empty_file", details={"field": "file"})
        size_check(size=upload.size, max_bytes=max_result_bytes_for(pool=group.pool))
        result, created = services.result_post(
            group=group, lease_id=data["lease_id"], user=user, is_admin=user_is_admin(user=user), source=upload,
            filename=upload.name or "result.bin", content_type=upload.content_type or "application/octet-stream",
            sha256=data["sha256"].lower() if data.get("sha256") else None,
        )
        return Response(ResultOutput(result).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class PoolWebhookTestApi(APIView):
    """POST /pools/{pool}/webhook/test: one signed `webhook.test` call now; what the receiver answered."""

    @extend_schema(request=None, responses={200: WebhookTestOutput, **error_responses(400, 401, 403, 404, 409)})
    def post(self, request: Request, pool_id: UUID) -> Response:
        pool = pool_access(user=_user(request), pool_id=pool_id, roles=[Role.MANAGER])
        return Response(WebhookTestOutput(webhook_send_test(pool=pool)).data)


class ResultLatestApi(APIView):
    @extend_schema(responses={200: ResultOutput, **error_responses(401, 404)})
    def get(self, request: Request, pool_id: UUID) -> Response:
        pool = pool_access(user=_user(request), pool_id=pool_id)
        return Response(ResultOutput(result_latest(pool=pool)).data)


class ResultDetailApi(APIView):
    @extend_schema(responses={200: ResultOutput, **error_responses(401, 404)})
    def get(self, request: Request, result_id: UUID) -> Response:
        return Response(ResultOutput(result_get_for(user=_user(request), result_id=result_id)).data)


class ResultContentApi(APIView):
    @extend_schema(parameters=RANGE_HEADERS, responses={**BINARY, **error_responses(401, 404, 416, 503)})
    def get(self, request: Request, result_id: UUID) -> HttpResponseBase:
        result = result_get_for(user=_user(request), result_id=result_id)
        result_content_check(result=result)  # 410 once purged
        try:  # opened before the response starts, so a missing file is a 503, not a truncated body
            stored = file_open(bucket=Bucket.RESULTS, file_id=result.id)
        except FileStoreError as exc:
            raise Unavailable("the result's bytes are not readable right now") from exc
        return ranged_download(request=request, length=result.size, etag=result.sha256,
                               read=lambda start, stop: file_read(stored=stored, start=start, end=stop),
                               filename=result.filename, content_type="application/octet-stream")
