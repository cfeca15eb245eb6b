"""Quotas: stored plus staged bytes of a pool, checked race-free at acceptance; GET /pools/{pool}/usage."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import Pool
from accounts.tokens import token_pair_issue
from tests.conftest import error_code
from tests.lifecycle.conftest import NOW, iso, upload
from tests.uploads.conftest import WHEN, named, payload, staged_keys
from uploads.models import Upload
from uploads.staging import staging_used_bytes


def usage(api: Any, user: Any, pool: Pool) -> dict[str, Any]:
    response = api(user).get(f"/api/v1/pools/{pool.id}/usage")
    assert response.status_code == 200, response.json()
    return dict(response.json())


@pytest.mark.django_db
def test_an_upload_past_the_quota_is_refused_and_leaves_nothing(api, pool, contributor, manager,
                                                                django_capture_on_commit_callbacks):
    pool.quota_bytes = 1000
    pool.save()
    with django_capture_on_commit_callbacks(execute=True):
        assert upload(api(contributor), pool, 600, seed=1).status_code == 202

    refused = upload(api(contributor), pool, 401, seed=2)

    assert refused.status_code == 413
    assert error_code(refused) == "quota_exceeded"
    assert refused.json()["error"]["details"] == {"quota_bytes": 1000, "used_bytes": 600}
    assert Upload.objects.count() == 1
    assert staged_keys() == []
    assert upload(api(contributor), pool, 400, seed=3).status_code == 202  # exactly the free bytes fit
    assert usage(api, manager, pool)["stored_bytes"] == 1000


@pytest.mark.django_db
def test_staged_bytes_count_against_the_quota(api, pool, contributor, manager):
    """An accepted upload not yet in the file store (its store task has not run) holds its bytes."""
    pool.quota_bytes = 1000
    pool.save()
    assert upload(api(contributor), pool, 700, seed=1).status_code == 202
    assert Upload.objects.get().status == "cached"
    assert staging_used_bytes() == 700

    refused = upload(api(contributor), pool, 301, seed=2)

    assert refused.status_code == 413
    assert refused.json()["error"]["details"]["used_bytes"] == 700
    seen = usage(api, manager, pool)
    assert (seen["stored_bytes"], seen["staged_bytes"], seen["uploads"], seen["free_bytes"]) == (700, 700, 1, 300)


@pytest.mark.django_db
def test_a_batch_that_would_pass_the_quota_is_refused_whole(api, pool, contributor, manager):
    pool.quota_bytes = 1000
    pool.save()
    files = {"a": payload(400, seed=1), "b": payload(400, seed=2), "c": payload(400, seed=3)}
    form: dict[str, Any] = {"manifest": json.dumps({"items": [{"file": name, "timestamp": WHEN} for name in files]})}
    form.update({name: named(data, f"{name}.bin") for name, data in files.items()})

    response = api(contributor).post(f"/api/v1/pools/{pool.id}/batches", form, format="multipart")

    assert response.status_code == 413
    assert error_code(response) == "quota_exceeded"
    assert [item["file"] for item in response.json()["error"]["details"]["items"]] == ["c"]
    assert Upload.objects.count() == 0
    assert staged_keys() == []
    assert usage(api, manager, pool)["stored_bytes"] == 0


def two_uploads_at_once(pool: Pool, contributor: Any, monkeypatch: Any, *, size: int) -> list[int]:
    """Two uploads by one contributor, each on its own database connection; the first to be
    admitted holds its transaction open until the other has reached its admission too."""
    import uploads.services

    real_admit = uploads.services.upload_admit
    arrivals = threading.Condition()
    arrived = [0]

    def admit_and_linger(**kwargs: Any) -> None:
        with arrivals:
            arrived[0] += 1
            arrivals.notify_all()
        real_admit(**kwargs)
        with arrivals:  # keep this transaction open until the other request is at its admission
            arrivals.wait_for(lambda: arrived[0] >= 2, timeout=2)  # (SQLite: it waits to begin instead)

    monkeypatch.setattr(uploads.services, "upload_admit", admit_and_linger)
    token = token_pair_issue(user=contributor)["access"]
    statuses: list[int] = []

    def send(seed: int) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        try:
            statuses.append(upload(client, pool, size, seed=seed).status_code)
        finally:
            from django.db import connection

            connection.close()

    threads = [threading.Thread(target=send, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return sorted(statuses)


@pytest.mark.django_db(transaction=True)
def test_the_last_free_bytes_go_to_exactly_one_of_two_concurrent_uploads(pool, contributor, monkeypatch):
    pool.quota_bytes = 1000
    pool.save()

    assert two_uploads_at_once(pool, contributor, monkeypatch, size=600) == [202, 413]
    assert Upload.objects.count() == 1
    from lifecycle.models import PoolUsage

    assert PoolUsage.objects.get(pool=pool).bytes == 600


@pytest.mark.django_db(transaction=True)
def test_the_last_upload_under_the_cap_goes_to_exactly_one_of_two_concurrent_uploads(pool, contributor,
                                                                                      monkeypatch):
    """Same contributor, same window, one slot left: the second waits for the first and counts it."""
    pool.max_uploads_per_contributor = 2
    pool.save()
    token = token_pair_issue(user=contributor)["access"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert upload(client, pool, 600, seed=3).status_code == 202  # the window's group exists: nothing else waits

    assert two_uploads_at_once(pool, contributor, monkeypatch, size=600) == [202, 409]
    assert Upload.objects.count() == 2


@pytest.mark.django_db
def test_usage_is_for_managers_and_admins(api, pool, manager, admin_user, contributor, listener, outsider):
    pool.quota_bytes = 5000
    pool.retention_days = 30
    pool.save()
    seen = usage(api, admin_user, pool)
    assert seen["quota_bytes"] == 5000
    assert seen["retention_days"] == 30
    assert set(seen) >= {"stored_bytes", "uploads", "results", "quota_bytes", "retention_days"}
    assert usage(api, manager, pool)["stored_bytes"] == 0
    for user in (contributor, listener):
        assert api(user).get(f"/api/v1/pools/{pool.id}/usage").status_code == 403
    assert api(outsider).get(f"/api/v1/pools/{pool.id}/usage").status_code == 404


@pytest.mark.django_db
def test_a_manager_sets_quota_retention_and_round_settings(api, pool, manager):
    response = api(manager).patch(f"/api/v1/pools/{pool.id}", {
        "quota_bytes": 10_000_000, "retention_days": 7, "min_contributors": 3, "short_round_policy": "skip",
        "max_uploads_per_contributor": 2}, format="json")
    assert response.status_code == 200, response.json()
    pool.refresh_from_db()
    assert (pool.quota_bytes, pool.retention_days, pool.min_contributors, pool.short_round_policy,
            pool.max_uploads_per_contributor) == (10_000_000, 7, 3, "skip", 2)
    bad = api(manager).patch(f"/api/v1/pools/{pool.id}", {"retention_days": 0}, format="json")
    assert bad.status_code == 400


@pytest.mark.django_db
def test_admin_lists_pools_by_usage(client, admin_user, pool, other_pool, contributor, api):
    from lifecycle.models import PoolUsage

    PoolUsage.objects.create(pool=other_pool, bytes=5_000_000)
    PoolUsage.objects.create(pool=pool, bytes=1_000)
    admin_user.is_staff = True
    admin_user.is_superuser = True
    admin_user.save()
    client.force_login(admin_user)
    page = client.get("/admin/accounts/pool/").content.decode()
    assert "5,000,000" in page
    assert page.index(other_pool.name) < page.index(pool.name)  # the pool holding the most first


@pytest.mark.django_db
def test_recount_sets_the_counter_from_the_rows(api, pool, contributor, manager):
    from io import StringIO

    from django.core.management import call_command

    from lifecycle.models import PoolUsage

    assert upload(api(contributor), pool, 700, seed=1).status_code == 202
    PoolUsage.objects.filter(pool=pool).update(bytes=5)  # a hand edit

    out = StringIO()
    call_command("recount_usage", "--pool", pool.name, stdout=out)

    assert out.getvalue().strip() == f"{pool.name}: 700 bytes (was 5)"
    assert usage(api, manager, pool)["stored_bytes"] == 700


@pytest.mark.django_db
def test_a_tus_upload_past_the_quota_is_refused_at_creation(api, pool, contributor, django_capture_on_commit_callbacks):
    """From its Upload-Length, before any byte: the REST status and error body, nothing kept."""
    from tests.uploads.test_tus import create, location

    pool.quota_bytes = 1000
    pool.save()
    with django_capture_on_commit_callbacks(execute=True):
        assert upload(api(contributor), pool, 600, seed=1).status_code == 202

    refused = create(api(contributor), pool, 401)

    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "quota_exceeded"
    assert refused.json()["error"]["details"] == {"quota_bytes": 1000, "used_bytes": 600}
    assert "Location" not in refused
    assert staging_used_bytes() == 0
    assert location(create(api(contributor), pool, 400))  # exactly the free bytes: created


@pytest.mark.django_db
def test_a_tus_upload_past_the_cap_per_contributor_is_refused_at_creation(api, pool, contributor):
    from tests.uploads.test_tus import create, location, metadata

    pool.max_uploads_per_contributor = 1
    pool.save()
    at = NOW - timedelta(minutes=5)
    first = upload(api(contributor), pool, 500, seed=1, at=at)
    assert first.status_code == 202

    refused = create(api(contributor), pool, 500, metadata(timestamp=iso(at)))

    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "upload_cap_reached"
    assert refused.json()["error"]["details"]["group"] == first.json()["group"]
    assert Upload.objects.count() == 1
    earlier = at - timedelta(seconds=pool.window_seconds)  # another window: room again
    assert location(create(api(contributor), pool, 500, metadata(timestamp=iso(earlier))))


@pytest.mark.django_db
def test_a_batch_over_the_quota_says_what_the_pool_held_before_it(api, pool, contributor, manager):
    """Top level: the pool's usage before the batch (API.md); the refused item: its usage with the
    batch's earlier items counted."""
    pool.quota_bytes = 1000
    pool.save()
    assert upload(api(contributor), pool, 100, seed=9).status_code == 202
    files = {"a": payload(400, seed=1), "b": payload(400, seed=2), "c": payload(400, seed=3)}
    form: dict[str, Any] = {"manifest": json.dumps({"items": [{"file": name, "timestamp": WHEN} for name in files]})}
    form.update({name: named(data, f"{name}.bin") for name, data in files.items()})

    response = api(contributor).post(f"/api/v1/pools/{pool.id}/batches", form, format="multipart")

    assert response.status_code == 413
    details = response.json()["error"]["details"]
    assert (details["quota_bytes"], details["used_bytes"]) == (1000, 100)
    [item] = details["items"]
    assert (item["file"], item["code"], item["details"]) == ("c", "quota_exceeded",
                                                             {"quota_bytes": 1000, "used_bytes": 900})
    assert usage(api, manager, pool)["stored_bytes"] == 100
