"""Throttle storage shared by every throttled view.

DRF's throttles keep their history in `django.core.cache.cache`, which under ASGI resolves per
request context: each request built a new Redis connection pool and connection (found by
`make bench`, BENCHMARKS.md). Throttles take this one cache object per process instead.
"""

from __future__ import annotations

from django.core.cache import BaseCache, caches

process_cache: BaseCache = caches.create_connection("default")
