from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks


class UploadsConfig(AppConfig):
    name = "uploads"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        checks.register(staging_eviction_check, "poolhub")
        from uploads.api import schema  # noqa: F401  registers the OpenAPI description of the upload views


def staging_eviction_check(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Runs with `manage.py check` and `migrate` (so at every deploy and `make run`): staging must not evict.

    Web workers check again before their first staging write and refuse uploads if it fails.
    """
    import redis

    from uploads.staging import _policy_verdict

    try:
        _policy_verdict.cache_clear()
        verdict = _policy_verdict()
    except redis.RedisError as exc:
        return [checks.Warning(f"staging Redis unreachable, maxmemory-policy not checked: {exc}",
                               id="uploads.W001")]
    if verdict == "unknown":
        return [checks.Warning("cannot read Redis maxmemory-policy (CONFIG disabled); it must be noeviction",
                               id="uploads.W002")]
    if verdict != "noeviction":
        return [checks.Error(f"Redis maxmemory-policy is {verdict!r}: staged uploads could be evicted and lost",
                             hint="set `maxmemory-policy noeviction` on the staging Redis", id="uploads.E001")]
    return []
