"""Staging: the budget answers 503 and changes nothing, Redis must not evict, writers clean up."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from poolhub.redis import redis_client
from tests.conftest import error_code
from tests.uploads.conftest import assert_nothing_left, payload, post_upload, staged_keys
from uploads.apps import staging_eviction_check
from uploads.checks import FileTooLarge, ForbiddenType
from uploads.models import Event, Upload
from uploads.staging import StagingWriter, _policy_verdict, staging_read, staging_used_bytes
from uploads.tasks import staging_reconcile as staging_reconcile_task


@pytest.fixture
def evicting_redis(settings) -> Iterator[None]:
    """The policy is server-wide: only flip it on the embedded Redis this test run owns."""
    if not settings.REDIS_URL.startswith("unix://"):
        pytest.skip("would change the eviction policy of a Redis shared with others")
    client = redis_client()
    _policy_verdict.cache_clear()
    client.config_set("maxmemory-policy", "allkeys-lru")
    yield
    client.config_set("maxmemory-policy", "noeviction")
    _policy_verdict.cache_clear()


@pytest.mark.django_db
def test_staging_full_gives_503_with_retry_after_and_changes_nothing(api, pool, contributor, settings):
    settings.POOLHUB_STAGING_BUDGET_BYTES = 1024 * 1024
    first = post_upload(api(contributor), pool, payload(600 * 1024, seed=1))
    assert first.status_code == 202
    keys, used, events = staged_keys(), staging_used_bytes(), Event.objects.count()
    response = post_upload(api(contributor), pool, payload(600 * 1024, seed=2))
    assert response.status_code == 503
    assert error_code(response) == "staging_full"
    assert int(response["Retry-After"]) > 0
    assert Upload.objects.count() == 1
    assert (staged_keys(), staging_used_bytes(), Event.objects.count()) == (keys, used, events)


@pytest.mark.django_db
def test_staging_has_room_again_once_bytes_are_stored(api, pool, contributor, settings,
                                                      django_capture_on_commit_callbacks):
    settings.POOLHUB_STAGING_BUDGET_BYTES = 1024 * 1024
    with django_capture_on_commit_callbacks(execute=True):
        assert post_upload(api(contributor), pool, payload(600 * 1024, seed=1)).status_code == 202
    assert staging_used_bytes() == 0
    assert post_upload(api(contributor), pool, payload(600 * 1024, seed=2)).status_code == 202


@pytest.mark.django_db
def test_uploads_are_refused_when_redis_may_evict_until_it_is_fixed(api, pool, contributor, evicting_redis):
    response = post_upload(api(contributor), pool, payload(100))
    assert response.status_code == 503
    assert error_code(response) == "unavailable"
    assert_nothing_left()
    redis_client().config_set("maxmemory-policy", "noeviction")
    assert post_upload(api(contributor), pool, payload(100)).status_code == 202


def test_startup_check_reports_an_evicting_redis(evicting_redis):
    assert [m.id for m in staging_eviction_check()] == ["uploads.E001"]


def test_startup_check_passes_on_noeviction():
    _policy_verdict.cache_clear()
    assert staging_eviction_check() == []


def test_writer_refuses_past_the_limit_and_discards():
    writer = StagingWriter(max_bytes=100_000, filename="x.bin")
    writer.write(payload(90_000))
    with pytest.raises(FileTooLarge):
        writer.write(payload(20_000))
    writer.discard()
    assert staged_keys() == []
    assert staging_used_bytes() == 0


def test_writer_checks_the_type_as_soon_as_it_has_the_head():
    writer = StagingWriter(max_bytes=None, filename="innocent.txt")
    with pytest.raises(ForbiddenType):
        writer.write(b"#!/usr/bin/env python\n" + b"print(1)\n" * 2000)
    writer.discard()
    assert staging_used_bytes() == 0


def test_writer_resumes_an_unfinished_file(settings):
    settings.POOLHUB_STAGING_CHUNK_BYTES = 64 * 1024
    data = payload(500_000, seed=4)
    first = StagingWriter(max_bytes=None, filename="a.bin")
    first.write(data[:200_000])
    first.flush()
    resumed = StagingWriter.resume(key=first.key, max_bytes=None, filename="a.bin")
    assert resumed.size == 200_000
    resumed.write(data[200_000:])
    staged = resumed.finish()
    assert staged.size == len(data)
    assert b"".join(staging_read(key=staged.key)) == data
    assert max(len(chunk) for chunk in staging_read(key=staged.key)) <= 64 * 1024
    resumed.discard()
    assert staging_used_bytes() == 0


def test_budget_held_by_expired_staged_files_is_released():
    writer = StagingWriter(max_bytes=None, filename="abandoned.bin")
    writer.write(payload(300_000))
    writer.flush()  # then the writer's process dies; its keys expire
    assert staging_used_bytes() == 300_000
    redis_client().delete(f"poolhub:staging:{writer.key}:data", f"poolhub:staging:{writer.key}:meta")
    live = StagingWriter(max_bytes=None, filename="live.bin")
    live.write(payload(1000))
    live.flush()
    assert staging_reconcile_task() == 300_000
    assert staging_used_bytes() == 1000
    live.discard()
    assert staging_used_bytes() == 0
