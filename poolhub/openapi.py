"""OpenAPI pieces every app's schema uses: the contract's error body and binary downloads."""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

# DRF's CharField refuses NUL characters and, trimming whitespace, a blank value: say so.
NOT_BLANK = r"^[^\x00]*[^\s\x00][^\x00]*$"


class PoolhubAutoSchema(AutoSchema):
    """drf-spectacular's schema, with request strings as strict as DRF's CharField is."""

    def _get_request_for_media_type(self, serializer: Any, direction: str = "request") -> Any:
        """PATCH bodies are partial, except on views whose PATCH takes a whole body (`patch_is_partial`)."""
        if self.method != "PATCH" or getattr(self.view, "patch_is_partial", True):
            return super()._get_request_for_media_type(serializer, direction)
        self.method = "PUT"
        try:
            return super()._get_request_for_media_type(serializer, direction)
        finally:
            self.method = "PATCH"

    def _map_serializer_field(self, field: Any, direction: str, bypass_extensions: bool = False) -> dict[str, Any]:
        schema: dict[str, Any] = super()._map_serializer_field(field, direction, bypass_extensions)
        plain = type(field) is serializers.CharField and schema.get("type") == "string"
        constrained = {"pattern", "format", "enum"} & set(schema)
        if direction == "request" and plain and not field.allow_blank and not constrained:
            schema["pattern"] = NOT_BLANK
        if direction == "request" and isinstance(field, serializers.FileField) and not field.allow_empty_file:
            schema["minLength"] = 1  # an empty file is refused (400 empty_file)
        return schema


class ErrorBodyOutput(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.DictField()


class ErrorOutput(serializers.Serializer):
    """The contract's error shape, {"error": {"code", "message", "details"}}, for the schema."""

    error = ErrorBodyOutput()


def error_responses(*statuses: int) -> dict[int, type[ErrorOutput]]:
    """The error statuses an operation may answer, each with the contract's error body."""
    return dict.fromkeys(statuses, ErrorOutput)


def binary_response(content_type: str = "application/octet-stream") -> dict[Any, Any]:
    return {(200, content_type): OpenApiTypes.BINARY}


IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key", str, OpenApiParameter.HEADER, required=False,
    description="The same key with the same request returns the first response again and creates nothing; "
                "with a different request it is 409 idempotency_conflict.")
