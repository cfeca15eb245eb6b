"""OpenAPI for the upload endpoints: their multipart forms, query filters and answers.

The tus endpoints speak the tus 1.0 protocol (headers and raw bytes, docs/api.md "Resumable
uploads"), which tus clients implement from that protocol: they are left out of the schema.

The views read their forms by streaming them (uploads/api/views.py), not through serializers, so
the shapes are described here, beside them, and attached with drf-spectacular's view extensions.
Constraints JSON Schema cannot say (a declared sha256 must match the bytes, a timestamp may not be
ahead of the server's clock by more than POOLHUB_TIMESTAMP_MAX_FUTURE_SECONDS, a manifest item
names a file field of the same form) are in the descriptions.
"""

from __future__ import annotations

from typing import Any, cast

from drf_spectacular.extensions import OpenApiViewExtension
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiRequest,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers

from poolhub.openapi import IDEMPOTENCY_KEY, binary_response, error_responses
from uploads.api.serializers import UploadListFilters
from uploads.models import UploadStatus

SHA256 = r"^[0-9a-fA-F]{64}$"
TIMESTAMP_HELP = ("When the client produced the file: ISO-8601 with a UTC offset, no further ahead of the "
                  "server's clock than the allowed skew (10 minutes by default) and no older than the pool's "
                  "max_timestamp_age_seconds.")


class UploadForm(serializers.Serializer):
    file = serializers.FileField(help_text="The file's bytes (not empty); its type is decided from the content.")
    timestamp = serializers.DateTimeField(help_text=TIMESTAMP_HELP)
    sha256 = serializers.RegexField(SHA256, required=False,
                                    help_text="The file's sha256 in hex; when given it must match the bytes.")


class ManifestItem(serializers.Serializer):
    file = serializers.CharField(min_length=1, help_text="The name of the form field holding this item's file.")
    timestamp = serializers.DateTimeField(help_text=TIMESTAMP_HELP)
    sha256 = serializers.RegexField(SHA256, required=False, help_text="When given, must match the item's bytes.")


class Manifest(serializers.Serializer):
    items = serializers.ListField(child=ManifestItem(), min_length=1, max_length=500)


class BatchForm(serializers.Serializer):
    """`manifest` (JSON) plus one file field per item, named by the item's `file`."""

    manifest = Manifest(help_text='JSON: {"items": [{"file": "<form field name>", "timestamp": "...", '
                                  '"sha256": "..."}]}, one item per file field of the form.')


class UploadShape(serializers.Serializer):
    id = serializers.UUIDField()
    pool = serializers.UUIDField()
    uploader = serializers.UUIDField()
    uploader_username = serializers.CharField()
    filename = serializers.CharField()
    size = serializers.IntegerField()
    sha256 = serializers.CharField()
    content_type = serializers.CharField()
    timestamp = serializers.DateTimeField()
    status = serializers.ChoiceField(choices=UploadStatus.choices)
    group = serializers.UUIDField(allow_null=True)
    attempts = serializers.IntegerField()
    batch = serializers.UUIDField(allow_null=True)
    created_at = serializers.DateTimeField()


# `data` would shadow Serializer.data in a class body: built inline instead.
EventShape = inline_serializer("EventShape", fields={
    "seq": serializers.IntegerField(), "type": serializers.CharField(), "at": serializers.DateTimeField(),
    "data": serializers.DictField()})


class UploadDetailShape(UploadShape):
    events = serializers.ListField(child=EventShape)


class BatchShape(serializers.Serializer):
    id = serializers.UUIDField()
    uploads = UploadShape(many=True)


class UploadPage(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = UploadShape(many=True)


EXCLUDED = extend_schema(exclude=True)
PAGE_PARAMETERS = [OpenApiParameter("limit", int, description="Page size (default 100)."),
                   OpenApiParameter("offset", int, description="Items to skip.")]
ACCEPT_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 415, 429, 503)


def _replace(target: Any, method: str, **schema: Any) -> Any:
    """The view with `method` carrying the schema (drf-spectacular's documented way for views we
    do not decorate in place)."""
    wrapped = extend_schema(**schema)(getattr(target, method))
    return type(target.__name__, (target,), {method: wrapped})


class PoolUploadCreateSchema(OpenApiViewExtension):
    target_class = "uploads.api.views.PoolUploadCreateApi"

    def view_replacement(self) -> Any:
        return _replace(self.target_class, "post", request={"multipart/form-data": UploadForm},
                        parameters=[IDEMPOTENCY_KEY], responses={202: UploadShape, **ACCEPT_ERRORS})


class PoolBatchCreateSchema(OpenApiViewExtension):
    target_class = "uploads.api.views.PoolBatchCreateApi"

    def view_replacement(self) -> Any:
        manifest_as_json = {"manifest": {"contentType": "application/json"}}
        return _replace(self.target_class, "post",
                        request={"multipart/form-data": OpenApiRequest(BatchForm, encoding=manifest_as_json)},
                        parameters=[IDEMPOTENCY_KEY], responses={202: BatchShape, **ACCEPT_ERRORS})


class UploadListSchema(OpenApiViewExtension):
    target_class = "uploads.api.views.UploadListApi"

    def view_replacement(self) -> Any:
        return _replace(self.target_class, "get", operation_id="uploads_list",
                        parameters=[UploadListFilters, *PAGE_PARAMETERS],
                        responses={200: UploadPage, **error_responses(400, 401)})


class UploadDetailSchema(OpenApiViewExtension):
    target_class = "uploads.api.views.UploadDetailApi"

    def view_replacement(self) -> Any:
        return _replace(self.target_class, "get", responses={200: UploadDetailShape, **error_responses(401, 404)})


class UploadContentSchema(OpenApiViewExtension):
    target_class = "uploads.api.views.UploadContentApi"

    def view_replacement(self) -> Any:
        return _replace(self.target_class, "get", responses={**binary_response(), **error_responses(401, 404, 503)})


class TusCreateSchema(OpenApiViewExtension):
    target_class = "uploads.api.tus.TusCreateApi"

    def view_replacement(self) -> Any:
        return extend_schema_view(options=EXCLUDED, post=EXCLUDED)(cast(Any, self.target_class))


class TusUploadSchema(OpenApiViewExtension):
    target_class = "uploads.api.tus.TusUploadApi"

    def view_replacement(self) -> Any:
        return extend_schema_view(options=EXCLUDED, head=EXCLUDED, patch=EXCLUDED,
                                  delete=EXCLUDED)(cast(Any, self.target_class))
