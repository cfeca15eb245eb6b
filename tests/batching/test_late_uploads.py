"""Late uploads under each policy: `reject` refuses (409 late_upload, nothing written), `accept`
joins its own window while that is not exported, `next` joins the currently open group. Every
late placement is a `group.late_upload` event on the group it joined."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from accounts.models import LatePolicy, Pool
from batching.models import Group, GroupStatus
from batching.services import group_for_upload
from batching.windows import window_bounds
from poolhub.errors import Conflict
from tests.conftest import error_code
from uploads.models import Event, Upload
from uploads.staging import staging_used_bytes

pytestmark = pytest.mark.django_db


def _pool(policy: str) -> Pool:
    return Pool.objects.create(name=f"late-{policy}", window_seconds=3600, grace_seconds=60, late_policy=policy)


Window = tuple[datetime, datetime]


def _windows(pool: Pool) -> tuple[Window, Window]:
    """(the window before the current one, the current one)."""
    now = timezone.now()
    current = window_bounds(origin=pool.origin, window_seconds=pool.window_seconds, at=now)
    previous = window_bounds(origin=pool.origin, window_seconds=pool.window_seconds,
                             at=current[0] - timedelta(seconds=1))
    return previous, current


def _late_events(group: Group) -> list[Event]:
    return list(Event.objects.filter(stream_type="group", stream_id=group.id, type="group.late_upload"))


def _group(pool: Pool, start: datetime, status: str) -> Group:
    """The group of the window starting at `start`, in `status`."""
    end = start + timedelta(seconds=pool.window_seconds)
    return Group.objects.create(pool=pool, window_start=start, window_end=end, status=status)


@pytest.mark.parametrize("policy", [LatePolicy.ACCEPT, LatePolicy.NEXT, LatePolicy.REJECT])
def test_an_upload_on_time_joins_its_own_window_whatever_the_policy(policy: str) -> None:
    pool = _pool(policy)
    _, (start, end) = _windows(pool)
    group = group_for_upload(pool=pool, timestamp=start)
    assert (group.window_start, group.window_end, group.status) == (start, end, GroupStatus.OPEN)
    assert _late_events(group) == []


def test_within_the_grace_period_an_upload_is_on_time() -> None:
    pool = _pool(LatePolicy.REJECT)
    pool.grace_seconds = 7200
    pool.save()
    (start, _), _ = _windows(pool)
    assert group_for_upload(pool=pool, timestamp=start).window_start == start


def test_reject_refuses_an_upload_for_a_closed_window_and_writes_nothing() -> None:
    pool = _pool(LatePolicy.REJECT)
    (start, _), _ = _windows(pool)
    closed = _group(pool, start, GroupStatus.CLOSED)
    events_before = Event.objects.count()
    with pytest.raises(Conflict) as refused:
        group_for_upload(pool=pool, timestamp=start + timedelta(minutes=5))
    assert (refused.value.status_code, refused.value.code) == (409, "late_upload")
    assert refused.value.details["window_start"] == start.isoformat()
    assert Event.objects.count() == events_before
    assert list(pool.groups.all()) == [closed]


def test_reject_refuses_a_window_past_its_grace_even_before_beat_closed_it() -> None:
    pool = _pool(LatePolicy.REJECT)
    (previous_start, _), _ = _windows(pool)
    start = previous_start - timedelta(hours=1)  # ended at least an hour ago: past the 60 s grace
    with pytest.raises(Conflict) as refused:
        group_for_upload(pool=pool, timestamp=start)
    assert refused.value.code == "late_upload"
    assert pool.groups.count() == 0


def test_accept_joins_its_own_closed_window_while_it_is_not_exported() -> None:
    pool = _pool(LatePolicy.ACCEPT)
    (start, _), _ = _windows(pool)
    closed = _group(pool, start, GroupStatus.CLOSED)
    joined = group_for_upload(pool=pool, timestamp=start + timedelta(minutes=59))
    assert joined == closed
    assert joined.status == GroupStatus.CLOSED
    [event] = _late_events(closed)
    assert event.data["moved"] is False
    assert event.data["policy"] == "accept"


@pytest.mark.parametrize("status", [GroupStatus.EXPORTING, GroupStatus.COMPLETED])
def test_accept_sends_an_upload_for_an_exported_window_to_the_open_one(status: str) -> None:
    pool = _pool(LatePolicy.ACCEPT)
    (start, _), (current_start, _) = _windows(pool)
    exported = _group(pool, start, status)
    joined = group_for_upload(pool=pool, timestamp=start)
    assert joined.window_start == current_start
    assert joined.status == GroupStatus.OPEN
    assert exported.uploads.count() == 0
    [event] = _late_events(joined)
    assert event.data["moved"] is True
    assert event.data["window_start"] == start.isoformat()


def test_next_sends_a_late_upload_to_the_currently_open_group() -> None:
    pool = _pool(LatePolicy.NEXT)
    (start, _), (current_start, _) = _windows(pool)
    _group(pool, start, GroupStatus.CLOSED)
    joined = group_for_upload(pool=pool, timestamp=start)
    assert (joined.window_start, joined.status) == (current_start, GroupStatus.OPEN)
    assert len(_late_events(joined)) == 1


def test_next_skips_a_current_window_that_was_closed_by_trigger() -> None:
    pool = _pool(LatePolicy.NEXT)
    (start, _), (current_start, current_end) = _windows(pool)
    _group(pool, start, GroupStatus.CLOSED)
    _group(pool, current_start, GroupStatus.CLOSED)
    joined = group_for_upload(pool=pool, timestamp=start)
    assert (joined.window_start, joined.status) == (current_end, GroupStatus.OPEN)


def test_a_late_upload_never_lands_in_a_group_that_is_being_exported() -> None:
    pool = _pool(LatePolicy.NEXT)
    (start, _), (current_start, _) = _windows(pool)
    _group(pool, start, GroupStatus.EXPORTING)
    for minute in range(5):
        joined = group_for_upload(pool=pool, timestamp=start + timedelta(minutes=minute))
        assert joined.window_start == current_start


def test_the_upload_endpoint_answers_409_late_upload_and_keeps_nothing(api, pool, contributor):
    pool.late_policy = LatePolicy.REJECT
    pool.save()
    late = (timezone.now() - timedelta(hours=3)).isoformat()
    payload = io.BytesIO(b"PHUB-UPDATE\x00" + b"x" * 1000)
    payload.name = "late.bin"
    response = api(contributor).post(f"/api/v1/pools/{pool.id}/uploads", {"file": payload, "timestamp": late},
                                     format="multipart")
    assert (response.status_code, error_code(response)) == (409, "late_upload")
    assert not Upload.objects.exists()
    assert not Event.objects.exists()
    assert staging_used_bytes() == 0


def test_a_batch_with_one_late_item_is_refused_whole(api, pool, contributor):
    pool.late_policy = LatePolicy.REJECT
    pool.save()
    now = timezone.now()
    items = {"late": now - timedelta(hours=3), "fresh": now}
    manifest = {"items": [{"file": name, "timestamp": at.isoformat()} for name, at in items.items()]}
    body: dict[str, object] = {"manifest": json.dumps(manifest)}
    for name in items:
        body[name] = io.BytesIO(b"PHUB-UPDATE\x00" + name.encode() * 100)
        body[name].name = f"{name}.bin"  # type: ignore[attr-defined]
    response = api(contributor).post(f"/api/v1/pools/{pool.id}/batches", body, format="multipart")
    assert (response.status_code, error_code(response)) == (409, "late_upload")
    assert [item["file"] for item in response.json()["error"]["details"]["items"]] == ["late"]
    assert not Upload.objects.exists()
