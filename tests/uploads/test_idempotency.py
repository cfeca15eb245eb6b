"""Idempotency-Key: a repeat replays the first response, a different request is 409, a race creates one."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest

from accounts.tokens import token_pair_issue
from poolhub.redis import redis_client
from tests.conftest import error_code
from tests.uploads.conftest import WHEN, WHEN_DT, assert_nothing_left, payload, post_upload, staged_keys
from uploads.idempotency import Outcome, _redis_key, idempotent
from uploads.models import Event, Upload


@pytest.mark.django_db
def test_repeat_returns_the_first_response_and_creates_nothing(api, pool, contributor):
    client = api(contributor)
    data = payload(50_000)
    first = post_upload(client, pool, data, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 202
    keys_after_first = staged_keys()
    events_after_first = Event.objects.count()
    again = post_upload(client, pool, data, headers={"Idempotency-Key": "k-1"})
    assert again.status_code == 202
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert Upload.objects.count() == 1
    assert Event.objects.count() == events_after_first
    assert staged_keys() == keys_after_first


@pytest.mark.django_db
def test_different_request_under_the_same_key_is_a_conflict(api, pool, contributor):
    client = api(contributor)
    post_upload(client, pool, payload(1000), headers={"Idempotency-Key": "k-2"})
    other_bytes = post_upload(client, pool, payload(1000, seed=7), headers={"Idempotency-Key": "k-2"})
    assert other_bytes.status_code == 409
    assert error_code(other_bytes) == "idempotency_conflict"
    other_time = post_upload(client, pool, payload(1000), timestamp=(WHEN_DT - timedelta(seconds=1)).isoformat(),
                             headers={"Idempotency-Key": "k-2"})
    assert error_code(other_time) == "idempotency_conflict"
    assert Upload.objects.count() == 1


@pytest.mark.django_db
def test_keys_belong_to_one_user(api, pool, contributor, manager):
    post_upload(api(contributor), pool, payload(1000), headers={"Idempotency-Key": "shared"})
    response = post_upload(api(manager), pool, payload(1000), headers={"Idempotency-Key": "shared"})
    assert response.status_code == 202
    assert "Idempotent-Replayed" not in response
    assert Upload.objects.count() == 2


@pytest.mark.django_db
def test_a_refused_request_does_not_use_up_its_key(api, pool, contributor):
    client = api(contributor)
    refused = post_upload(client, pool, payload(1000), timestamp="not a time", headers={"Idempotency-Key": "k-3"})
    assert refused.status_code == 400
    assert_nothing_left()
    fixed = post_upload(client, pool, payload(1000), headers={"Idempotency-Key": "k-3"})
    assert fixed.status_code == 202


@pytest.mark.django_db
def test_batches_take_keys_too(api, pool, contributor):
    client = api(contributor)
    form = {"manifest": json.dumps({"items": [{"file": "a", "timestamp": WHEN}]})}

    def send():
        from tests.uploads.conftest import named

        return client.post(f"/api/v1/pools/{pool.id}/batches", {**form, "a": named(payload(300))},
                           format="multipart", headers={"Idempotency-Key": "batch-1"})

    first, again = send(), send()
    assert again.status_code == 202
    assert again.json() == first.json()
    assert Upload.objects.count() == 1


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_create_one_upload(live_server_url, pool, contributor):
    token = token_pair_issue(user=contributor)["access"]
    data = payload(3 * 1024 * 1024)

    def send(_: int) -> httpx.Response:
        return httpx.post(f"{live_server_url}/api/v1/pools/{pool.id}/uploads",
                          headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "race"},
                          data={"timestamp": WHEN}, files={"file": ("race.bin", data)}, timeout=60)

    with ThreadPoolExecutor(max_workers=4) as pool_of_threads:
        responses = list(pool_of_threads.map(send, range(4)))
    assert [r.status_code for r in responses] == [202] * 4
    assert len({r.json()["id"] for r in responses}) == 1
    assert Upload.objects.count() == 1
    assert len(staged_keys()) == 1


@pytest.mark.django_db
def test_a_key_left_pending_by_a_dead_process_is_taken_over_within_seconds(api, pool, contributor, settings):
    """The process that claimed the key was killed mid-request: nothing renews its claim."""
    settings.POOLHUB_IDEMPOTENCY_PENDING_SECONDS = 1
    dead = json.dumps({"state": "pending", "owner": "a-killed-process"})
    redis_client().set(_redis_key(user_id=contributor.id, key="k-dead"), dead, ex=1)
    response = post_upload(api(contributor), pool, payload(100), headers={"Idempotency-Key": "k-dead"})
    assert response.status_code == 202, response.json()  # not 409 "still in progress"
    assert Upload.objects.count() == 1


@pytest.mark.django_db
def test_a_slow_request_keeps_its_key_claimed(contributor, settings):
    settings.POOLHUB_IDEMPOTENCY_PENDING_SECONDS = 1
    redis_key = _redis_key(user_id=contributor.id, key="k-slow")
    held: list[bool] = []

    def run() -> Outcome:
        for _ in range(4):  # well past the claim's lifetime: the lease is renewed meanwhile
            time.sleep(0.75)
            held.append(json.loads(redis_client().get(redis_key) or b"{}").get("state") == "pending")
        return Outcome("fp", 202, {"ok": True})

    outcome, replayed = idempotent(user_id=contributor.id, key="k-slow", run=run, fingerprint=lambda: "fp")
    assert (outcome.status, replayed) == (202, False)
    assert held == [True] * 4
    assert json.loads(redis_client().get(redis_key) or b"{}")["state"] == "done"
