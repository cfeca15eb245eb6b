"""Window assignment: half-open UTC windows from the pool's origin, one group per window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accounts.models import EPOCH, MAX_WINDOW_SECONDS, MIN_WINDOW_SECONDS, Pool
from batching.services import group_for_upload
from batching.windows import window_bounds

US = timedelta(microseconds=1)
moments = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))
widths = st.integers(min_value=MIN_WINDOW_SECONDS, max_value=MAX_WINDOW_SECONDS)


@given(origin=moments, window_seconds=widths, at=moments)
@settings(max_examples=500, deadline=None)
def test_every_timestamp_is_in_exactly_one_window(origin: datetime, window_seconds: int, at: datetime) -> None:
    width = timedelta(seconds=window_seconds)
    start, end = window_bounds(origin=origin, window_seconds=window_seconds, at=at)
    assert start <= at < end
    assert end - start == width
    assert (start - origin) % width == timedelta(0)  # aligned on the pool's origin
    # Every instant of the window maps back to it, and the neighbours do not contain `at`.
    assert window_bounds(origin=origin, window_seconds=window_seconds, at=start) == (start, end)
    assert window_bounds(origin=origin, window_seconds=window_seconds, at=end - US) == (start, end)
    assert window_bounds(origin=origin, window_seconds=window_seconds, at=end) == (end, end + width)
    assert window_bounds(origin=origin, window_seconds=window_seconds, at=start - US) == (start - width, start)


@given(origin=moments, window_seconds=widths, at=moments)
@settings(max_examples=200, deadline=None)
def test_window_is_utc_whatever_the_offset_of_the_timestamp(origin: datetime, window_seconds: int,
                                                             at: datetime) -> None:
    shifted = at.astimezone(timezone(timedelta(hours=-7, minutes=-30)))
    assert window_bounds(origin=origin, window_seconds=window_seconds, at=shifted) == window_bounds(
        origin=origin, window_seconds=window_seconds, at=at)


@pytest.mark.parametrize(("at", "expected_start"), [
    (datetime(2026, 11, 28, 10, 0, tzinfo=UTC), datetime(2026, 11, 28, 10, 0, tzinfo=UTC)),  # start: inside
    (datetime(2026, 11, 28, 10, 59, 59, 999999, tzinfo=UTC), datetime(2026, 11, 28, 10, 0, tzinfo=UTC)),
    (datetime(2026, 11, 28, 11, 0, tzinfo=UTC), datetime(2026, 11, 28, 11, 0, tzinfo=UTC)),  # end: next window
    (datetime(1969, 12, 31, 23, 30, tzinfo=UTC), datetime(1969, 12, 31, 23, 0, tzinfo=UTC)),  # before the origin
])
def test_hour_windows_at_the_edges(at: datetime, expected_start: datetime) -> None:
    assert window_bounds(origin=EPOCH, window_seconds=3600, at=at) == (expected_start,
                                                                       expected_start + timedelta(hours=1))


def test_thirty_day_windows_follow_the_pool_origin() -> None:
    origin = datetime(2026, 1, 1, 6, 0, tzinfo=UTC)
    start, end = window_bounds(origin=origin, window_seconds=MAX_WINDOW_SECONDS,
                               at=datetime(2026, 3, 5, 12, 0, tzinfo=UTC))
    assert (start, end) == (datetime(2026, 3, 2, 6, 0, tzinfo=UTC), datetime(2026, 4, 1, 6, 0, tzinfo=UTC))


@pytest.mark.django_db
def test_uploads_join_the_group_of_their_own_timestamp() -> None:
    pool = Pool.objects.create(name="minutes", window_seconds=60, grace_seconds=0,
                               origin=datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC))
    first = group_for_upload(pool=pool, timestamp=datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC))
    same = group_for_upload(pool=pool, timestamp=datetime(2030, 1, 1, 0, 1, 29, 999999, tzinfo=UTC))
    following = group_for_upload(pool=pool, timestamp=datetime(2030, 1, 1, 0, 1, 30, tzinfo=UTC))
    assert first == same
    assert following != first
    assert (first.window_start, first.window_end) == (datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC),
                                                      datetime(2030, 1, 1, 0, 1, 30, tzinfo=UTC))
    assert following.window_start == first.window_end
    assert pool.groups.count() == 2
