"""Chunked uploads over the websocket (filled in on the uploads staging interface)."""

from __future__ import annotations

from typing import Any

from accounts.models import User
from poolhub.errors import ApiError


def _pending() -> ApiError:
    return ApiError("chunked transfers are not available yet", code="unavailable", status_code=503)


def transfer_start(*, user: User, frame: dict[str, Any]) -> dict[str, Any]:
    raise _pending()


def transfer_write(*, user: User, frame: dict[str, Any]) -> dict[str, Any]:
    raise _pending()


def transfer_complete(*, user: User, frame: dict[str, Any]) -> dict[str, Any]:
    raise _pending()


def transfer_status(*, user: User, frame: dict[str, Any]) -> dict[str, Any]:
    raise _pending()
