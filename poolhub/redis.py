"""Shared Redis clients (staging, token denylist, idempotency): one pool per process, and one
asyncio client per event loop for the socket gateway's per-frame checks."""

from __future__ import annotations

import asyncio
import weakref
from functools import lru_cache

import redis
from django.conf import settings
from redis import asyncio as aioredis

# Sockets of one web process share these connections. A burst (thousands of sockets reconnecting
# at once) waits for a free connection instead of failing with MaxConnectionsError.
ASYNC_MAX_CONNECTIONS = 32
ASYNC_WAIT_SECONDS = 30

_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()


@lru_cache(maxsize=1)
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=10, socket_connect_timeout=5,
                                health_check_interval=30)


def async_redis_client() -> aioredis.Redis:
    """The running event loop's client (asyncio connections belong to the loop that opened them)."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL, max_connections=ASYNC_MAX_CONNECTIONS, timeout=ASYNC_WAIT_SECONDS,
            socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)
        client = _async_clients[loop] = aioredis.Redis(connection_pool=pool)
    return client
