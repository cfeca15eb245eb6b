"""Typed exceptions carrying the contract's error shape: `code`, `message`, `details`, `status`."""

from __future__ import annotations

from typing import Any


class PoolhubError(Exception):
    """Base of every error the SDK raises. `status` is None when no HTTP response was received."""

    default_code = "error"

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None,
                 status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details: dict[str, Any] = details or {}
        self.status = status
        self.retry_after = retry_after

    def __str__(self) -> str:
        prefix = f"{self.status} " if self.status else ""
        return f"{prefix}{self.code}: {self.message}"


class TransportError(PoolhubError):
    """The server could not be reached, or the connection broke before a response."""

    default_code = "unreachable"


class ValidationError(PoolhubError):
    """400: the request is malformed; `details` names the field or the batch item."""

    default_code = "invalid"


class AuthError(PoolhubError):
    """401: no, bad, expired or logged-out credentials (after the automatic refresh was tried)."""

    default_code = "not_authenticated"


class Forbidden(PoolhubError):
    default_code = "forbidden"


class NotFound(PoolhubError):
    """404: unknown object, or an object in a pool the caller is not a member of."""

    default_code = "not_found"


class Conflict(PoolhubError):
    """409: `conflict`, `idempotency_conflict`, `not_ready`, `already_claimed`, `lease_expired`."""

    default_code = "conflict"


class FileTooLarge(PoolhubError):
    default_code = "file_too_large"


class ForbiddenType(PoolhubError):
    default_code = "forbidden_type"


class Throttled(PoolhubError):
    """429: rate limited; `retry_after` in seconds."""

    default_code = "throttled"


class Unavailable(PoolhubError):
    """503: back-pressure (`staging_full`) or a dependency down; `retry_after` in seconds."""

    default_code = "unavailable"


class ServerError(PoolhubError):
    default_code = "server_error"


class ChecksumMismatch(PoolhubError):
    """Downloaded bytes do not match the sha256 the server announced."""

    default_code = "checksum_mismatch"


_BY_STATUS: dict[int, type[PoolhubError]] = {
    400: ValidationError,
    401: AuthError,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: FileTooLarge,
    415: ForbiddenType,
    429: Throttled,
    503: Unavailable,
}

RETRYABLE_STATUS = frozenset({429, 503})


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare enough that the caller's own backoff is fine


def error_from_response(status: int, body: Any, retry_after: str | None = None) -> PoolhubError:
    """Build the typed exception for an error response, whatever its body looks like."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or "error")
        message = str(error.get("message") or code)
        details = error.get("details") if isinstance(error.get("details"), dict) else {}
    else:
        code, message, details = "", f"the server answered HTTP {status}", {}
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else PoolhubError)
    return cls(message, code=code or None, details=details, status=status,
               retry_after=parse_retry_after(retry_after))
