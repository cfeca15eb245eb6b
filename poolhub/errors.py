"""The contract's error shape: {"error": {"code", "message", "details"}} for every error."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rest_framework import exceptions, status
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class ApiError(exceptions.APIException):
    """An error the contract names: raise it from services and views with a code and details."""

    status_code: int = status.HTTP_400_BAD_REQUEST
    default_code = "invalid"
    default_detail = "the request is invalid"

    def __init__(self, message: str | None = None, *, code: str | None = None,
                 details: dict[str, Any] | None = None, status_code: int | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message or self.default_detail, code or self.default_code)
        self.code = code or self.default_code
        self.message = message or str(self.default_detail)
        self.details = details or {}
        self.retry_after = retry_after
        if status_code is not None:
            self.status_code = status_code


class BadRequest(ApiError):
    status_code = 400


class NotFound(ApiError):
    status_code = 404
    default_code = "not_found"
    default_detail = "not found"


class Forbidden(ApiError):
    status_code = 403
    default_code = "forbidden"
    default_detail = "your role in this pool does not allow this"


class Conflict(ApiError):
    status_code = 409
    default_code = "conflict"
    default_detail = "the current state does not allow this"


class Gone(ApiError):
    status_code = 410
    default_code = "gone"
    default_detail = "this content is no longer kept"


class Unavailable(ApiError):
    status_code = 503
    default_code = "unavailable"
    default_detail = "a dependency is unavailable; try again later"

    def __init__(self, message: str | None = None, *, code: str | None = None,
                 details: dict[str, Any] | None = None, retry_after: int = 5) -> None:
        super().__init__(message, code=code, details=details, retry_after=retry_after)


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


_DRF_CODES: dict[type[exceptions.APIException], str] = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "invalid_token",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    exceptions.ParseError: "invalid",
    exceptions.ValidationError: "invalid",
}


def _flatten(detail: Any) -> Any:
    """DRF ErrorDetail trees become plain JSON: lists of messages per field."""
    if isinstance(detail, dict):
        return {str(key): _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return [_flatten(item) for item in detail]
    return str(detail)


def _first_message(detail: Any) -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            inner = _first_message(value)
            return inner if key == "non_field_errors" else f"{key}: {inner}"
        return "the request is invalid"
    if isinstance(detail, list):
        return _first_message(detail[0]) if detail else "the request is invalid"
    return str(detail)


def describe_error(exc: exceptions.APIException) -> tuple[str, str, dict[str, Any]]:
    if isinstance(exc, ApiError):
        return exc.code, exc.message, exc.details
    if isinstance(exc, exceptions.ValidationError):
        details = _flatten(exc.detail)
        fields = details if isinstance(details, dict) else {"non_field_errors": details}
        return "invalid", _first_message(exc.detail), {"fields": fields}
    code = next((name for cls, name in _DRF_CODES.items() if isinstance(exc, cls)), None)
    if code is None:
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "error"
    if isinstance(exc, exceptions.AuthenticationFailed):
        detail_code = exc.get_codes()
        # simplejwt attaches its own codes; the contract distinguishes credentials from tokens.
        if isinstance(detail_code, str) and detail_code in {"invalid_credentials", "token_revoked"}:
            code = detail_code
    message = exc.detail if isinstance(exc.detail, str) else _first_message(exc.detail)
    if isinstance(exc.detail, dict) and "detail" in exc.detail:
        message = str(exc.detail["detail"])
    return code, str(message), {}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, Http404):
        exc = NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = Forbidden()
    elif isinstance(exc, RedisConnectionError | RedisTimeoutError):
        # Redis (throttles, login guard, staging) unreachable: a dependency down is the contract's
        # 503 with Retry-After, so clients retry; not a 500.
        logger.warning("Redis unavailable: %s", exc)
        exc = Unavailable()
    from rest_framework.views import exception_handler  # late: DRF's views import our auth classes

    response = exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    code, message, details = describe_error(exc)
    fields = details.get("fields")
    if isinstance(fields, dict) and fields and "field" not in details:
        # Every field error names its (first) field the same way: details.field.
        details = {**details, "field": next(iter(fields))}
    response.data = error_body(code, message, details)
    retry_after = getattr(exc, "retry_after", None)
    wait = getattr(exc, "wait", None)
    if isinstance(exc, exceptions.Throttled) and wait is not None:
        retry_after = max(1, int(wait + 0.999))
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    if response.status_code == 401:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


@csrf_exempt  # an unknown API path is a 404 for every method, not a CSRF page
def json_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(error_body("not_found", "no such endpoint"), status=404)


def json_server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse(error_body("server_error", "the server failed; the request was not completed"), status=500)
