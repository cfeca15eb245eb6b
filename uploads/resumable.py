"""What the two resumable ways in (tus, uploads/tus.py; the websocket transfer verbs,
uploads/transfers.py) share: one writer at a time per upload, and idle deadlines.

Both keep their state in Redis, so any web process can take the next request; these helpers
keep that state consistent across processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import redis

from poolhub.errors import ApiError
from poolhub.redis import redis_client


@contextmanager
def writer_lock(*, name: str, busy: Callable[[], ApiError], seconds: int = 60) -> Iterator[Callable[[], None]]:
    """Hold the Redis lock `name` (non-blocking: raises `busy()` when another request holds it).
    Yields a renew() that pushes the lock's expiry out again while bytes keep arriving; a holder
    that dies loses the lock `seconds` later."""
    lock = redis_client().lock(name, timeout=seconds, blocking=False)
    if not lock.acquire():
        raise busy()
    try:
        yield lambda: lock.extend(seconds, replace_ttl=True)
    finally:
        with suppress(redis.exceptions.LockError):  # it outlived its timeout: nothing left to release
            lock.release()


def deadline_push(*, client: redis.Redis, key: str, member: str, seconds: int) -> float:
    """Set `member`'s deadline in the sorted set `key` to now + seconds (idle expiry); returns it."""
    deadline = time.time() + seconds
    client.zadd(key, {member: deadline})
    return deadline


def deadlines_due(*, key: str, now: float | None = None, limit: int = 1000) -> list[str]:
    """Members of the deadline set `key` whose deadline has passed (at most `limit`)."""
    due: list[Any] = redis_client().zrangebyscore(key, "-inf", now if now is not None else time.time(),
                                                 start=0, num=limit)
    return [raw.decode() if isinstance(raw, bytes) else str(raw) for raw in due]
