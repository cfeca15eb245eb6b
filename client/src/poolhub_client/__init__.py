"""poolhub's Python SDK: a sync and an asyncio client, an offline outbox and an exporter helper.

    from poolhub_client import PoolhubClient

    with PoolhubClient("http://127.0.0.1:8000") as client:
        client.login("station-7", password)
        client.upload(pool_id, "reading.bin", timestamp="2026-11-28T10:15:00Z")
"""

from poolhub_client._core import BatchItem, Tokens
from poolhub_client.aio import AsyncPoolhubClient, Listener
from poolhub_client.client import PoolhubClient
from poolhub_client.errors import (
    AuthError,
    ChecksumMismatch,
    Conflict,
    FileTooLarge,
    Forbidden,
    ForbiddenType,
    NotFound,
    PoolhubError,
    ServerError,
    Throttled,
    TransportError,
    Unavailable,
    ValidationError,
)
from poolhub_client.exporter import Exporter
from poolhub_client.outbox import FlushReport, Outbox

__all__ = [
    "AsyncPoolhubClient",
    "AuthError",
    "BatchItem",
    "ChecksumMismatch",
    "Conflict",
    "Exporter",
    "FileTooLarge",
    "FlushReport",
    "Forbidden",
    "ForbiddenType",
    "Listener",
    "NotFound",
    "Outbox",
    "PoolhubClient",
    "PoolhubError",
    "ServerError",
    "Throttled",
    "Tokens",
    "TransportError",
    "Unavailable",
    "ValidationError",
]
