"""One account against the others: caps on a user's open transfers and the bytes they may stage.

Without them one contributor could open 32 transfers of 64 MiB and hold the whole staging budget
(2 GiB) for an hour, and every other upload would get 503. Each transfer reserves its declared
size when it starts and releases it when it completes, is aborted (`abort-transfer`) or expires;
past `POOLHUB_WS_MAX_OPEN_TRANSFERS` transfers or `POOLHUB_USER_STAGING_BYTES` reserved bytes,
that user's next `start-transfer` gets 503 `staging_full` with `Retry-After` (docs/api.md "Limits and
abuse"), while other users are not affected. The check and the reservation are one Lua script, so
concurrent starts cannot overshoot together.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from poolhub.redis import redis_client
from uploads.checks import StagingFull

_PREFIX = "poolhub:transfer-reservations:"

# KEYS[1]: the user's reservations (transfer id -> bytes). ARGV: id, bytes, max open, max bytes, ttl.
_RESERVE = """
local sizes = redis.call('HVALS', KEYS[1])
local total = 0
for _, size in ipairs(sizes) do total = total + tonumber(size) end
if #sizes >= tonumber(ARGV[3]) then return {1, #sizes, total} end
if total + tonumber(ARGV[2]) > tonumber(ARGV[4]) then return {2, #sizes, total} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[5]) then redis.call('EXPIRE', KEYS[1], ARGV[5]) end
return {0, #sizes + 1, total + tonumber(ARGV[2])}
"""


def _key(user_id: Any) -> str:
    return f"{_PREFIX}{user_id}"


def transfer_reserve(*, user_id: Any, transfer_id: str, size: int, idle_seconds: int | None = None) -> None:
    """Reserve a new transfer's declared bytes for its user, or 503 `staging_full` for that user.
    Websocket transfers and tus uploads (uploads/tus.py, `idle_seconds` its longer expiry) share
    the one cap."""
    max_open = int(settings.POOLHUB_WS_MAX_OPEN_TRANSFERS)
    max_bytes = int(settings.POOLHUB_USER_STAGING_BYTES)
    # A backstop (releases are explicit), never shorter than the longest-lived reservation's.
    ttl = (idle_seconds or int(settings.POOLHUB_WS_TRANSFER_TTL_SECONDS)) * 2
    verdict, count, total = redis_client().eval(_RESERVE, 1, _key(user_id), transfer_id, size, max_open,
                                                max_bytes, ttl)
    if verdict == 0:
        return
    details = {"scope": "user", "open_transfers": int(count), "staged_bytes": int(total),
               "max_open_transfers": max_open, "max_staged_bytes": max_bytes}
    reason = (f"you have {max_open} transfers open" if verdict == 1
              else f"your open transfers already reserve {int(total)} of your {max_bytes} bytes")
    raise StagingFull(f"{reason}: complete or abort one first", details=details,
                      retry_after=60)


def transfer_release(*, user_id: Any, transfer_id: str) -> None:
    redis_client().hdel(_key(user_id), transfer_id)
