"""Timestamps a client cannot have produced a file at are the contract's 400, and change nothing:
out of range (a year-1 time with an offset has no UTC time), before the epoch, or older than the
pool's `max_timestamp_age_seconds` (default 30 days), which would open an ancient window that beat
closes and exports at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from batching.models import Group
from tests.conftest import error_code
from tests.uploads.conftest import assert_nothing_left, payload, post_upload

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("timestamp", ["0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00Z",
                                       "1969-12-31T23:59:59Z", "9999-12-31T23:59:59-01:00"])
def test_out_of_range_timestamps_are_invalid(api, pool, contributor, timestamp):
    response = post_upload(api(contributor), pool, payload(100), timestamp=timestamp)
    assert (response.status_code, error_code(response)) == (400, "invalid_timestamp")
    assert response.json()["error"]["details"]["field"] == "timestamp"
    assert_nothing_left()
    assert not Group.objects.exists()


def test_a_timestamp_older_than_the_pool_accepts_is_refused(api, pool, contributor):
    old = (datetime.now(UTC) - timedelta(days=31)).strftime("%Y-%m-%dT%H:%M:%SZ")
    response = post_upload(api(contributor), pool, payload(100), timestamp=old)
    assert (response.status_code, error_code(response)) == (400, "invalid_timestamp")
    assert response.json()["error"]["details"]["max_age_seconds"] == 30 * 86400
    assert_nothing_left()
    assert not Group.objects.exists()


def test_a_pool_can_accept_older_timestamps(api, pool, contributor, manager):
    response = api(manager).patch(f"/api/v1/pools/{pool.id}", {"max_timestamp_age_seconds": 90 * 86400},
                                  format="json")
    assert response.status_code == 200
    assert response.json()["max_timestamp_age_seconds"] == 90 * 86400
    old = (datetime.now(UTC) - timedelta(days=31)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert post_upload(api(contributor), pool, payload(100), timestamp=old).status_code == 202
