"""Groups over the API: list, detail, close (the trigger), close rules, beat closing; personas."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import Membership, Role
from batching import services
from batching.models import Group, GroupStatus
from batching.tasks import groups_close_due
from tests.batching.conftest import T0, stored_upload
from tests.conftest import error_code, make_user
from uploads.models import Event

pytestmark = pytest.mark.django_db


def _closed_events(group: Group) -> list[Event]:
    return list(Event.objects.filter(stream_type="group", stream_id=group.id, type="group.closed"))


def test_member_lists_groups_with_counts_and_bytes(api, pool, contributor, listener):
    stored_upload(pool=pool, uploader=contributor, timestamp=T0, data=b"a" * 10)
    stored_upload(pool=pool, uploader=contributor, timestamp=T0 + timedelta(minutes=30), data=b"b" * 5)
    stored_upload(pool=pool, uploader=contributor, timestamp=T0 + timedelta(hours=1), data=b"c" * 7)
    response = api(listener).get(f"/api/v1/pools/{pool.id}/groups")
    assert response.status_code == 200
    groups = response.json()
    assert [(g["window_start"], g["window_end"], g["upload_count"], g["bytes"], g["status"]) for g in groups] == [
        ("2026-11-28T11:00:00Z", "2026-11-28T12:00:00Z", 1, 7, "open"),
        ("2026-11-28T10:00:00Z", "2026-11-28T11:00:00Z", 2, 15, "open"),
    ]
    assert set(groups[0]) >= {"id", "pool", "window_start", "window_end", "status", "upload_count", "bytes"}
    assert groups[0]["pool"] == str(pool.id)


def test_list_filters_by_status(api, pool, closed_group, contributor, listener):
    stored_upload(pool=pool, uploader=contributor, timestamp=T0 + timedelta(hours=5), data=b"x")
    closed = api(listener).get(f"/api/v1/pools/{pool.id}/groups", {"status": "closed"}).json()
    assert [g["id"] for g in closed] == [str(closed_group.id)]
    bad = api(listener).get(f"/api/v1/pools/{pool.id}/groups", {"status": "shut"})
    assert bad.status_code == 400
    assert error_code(bad) == "invalid"


def test_group_detail(api, closed_group, listener):
    body = api(listener).get(f"/api/v1/groups/{closed_group.id}").json()
    assert body["id"] == str(closed_group.id)
    assert (body["status"], body["upload_count"], body["bytes"]) == ("closed", 3, 2400)


def test_outsider_sees_no_group_of_the_pool(api, pool, closed_group, outsider):
    for path in (f"/api/v1/groups/{closed_group.id}", f"/api/v1/pools/{pool.id}/groups",
                 f"/api/v1/pools/{pool.id}/results/latest"):
        response = api(outsider).get(path)
        assert response.status_code == 404, path
        assert error_code(response) == "not_found"
    response = api(outsider).post(f"/api/v1/groups/{closed_group.id}/close")
    assert (response.status_code, error_code(response)) == (404, "not_found")


def test_anonymous_is_refused(api, closed_group):
    response = api(None).get(f"/api/v1/groups/{closed_group.id}")
    assert (response.status_code, error_code(response)) == (401, "not_authenticated")


def test_unknown_and_malformed_group_ids_are_not_found(api, listener):
    for path in ("/api/v1/groups/00000000-0000-0000-0000-000000000000", "/api/v1/groups/not-a-uuid"):
        response = api(listener).get(path)
        assert (response.status_code, error_code(response)) == (404, "not_found")


@pytest.mark.parametrize("role", [Role.MANAGER, Role.EXPORTER])
def test_manager_or_exporter_closes_a_group_now(api, pool, contributor, role, run_on_commit):
    user = make_user(f"closer-{role}")
    Membership.objects.create(pool=pool, user=user, role=role)
    stored_upload(pool=pool, uploader=contributor, timestamp=T0, data=b"x")
    group = Group.objects.get(pool=pool)
    response = run_on_commit(api(user).post, f"/api/v1/groups/{group.id}/close")
    assert response.status_code == 200
    assert response.json()["status"] == "closed"
    [event] = _closed_events(group)
    assert event.data == {"group": str(group.id)}
    assert event.pool_id == pool.id
    again = api(user).post(f"/api/v1/groups/{group.id}/close")  # closing twice changes nothing
    assert again.status_code == 200
    assert len(_closed_events(group)) == 1


@pytest.mark.parametrize("persona", ["contributor", "listener"])
def test_other_roles_cannot_close(api, pool, persona, request):
    user = request.getfixturevalue(persona)
    stored_upload(pool=pool, uploader=request.getfixturevalue("contributor"), timestamp=T0, data=b"x")
    group = Group.objects.get(pool=pool)
    response = api(user).post(f"/api/v1/groups/{group.id}/close")
    assert (response.status_code, error_code(response)) == (403, "forbidden")
    group.refresh_from_db()
    assert group.status == GroupStatus.OPEN
    assert _closed_events(group) == []


def test_beat_closes_windows_past_end_plus_grace_only(pool, contributor):
    now = timezone.now()
    pool.grace_seconds = 600
    pool.save()
    done = stored_upload(pool=pool, uploader=contributor, timestamp=now - timedelta(hours=3), data=b"x").group
    current = stored_upload(pool=pool, uploader=contributor, timestamp=now, data=b"y").group
    assert done is not None and current is not None
    closed = groups_close_due()
    assert closed == [str(done.id)]
    done.refresh_from_db()
    current.refresh_from_db()
    assert (done.status, current.status) == (GroupStatus.CLOSED, GroupStatus.OPEN)
    assert groups_close_due() == []  # nothing twice


def test_beat_respects_the_grace_period(pool, contributor):
    now = timezone.now()
    pool.grace_seconds = 3 * 3600
    pool.save()
    group = stored_upload(pool=pool, uploader=contributor, timestamp=now - timedelta(hours=2), data=b"x").group
    assert group is not None
    assert services.groups_close_due(now=now) == []
    assert services.groups_close_due(now=group.window_end + timedelta(hours=3)) == [group.id]


def test_close_rule_on_uploads_closes_the_group_as_soon_as_it_is_reached(pool, contributor, run_on_commit):
    pool.close_min_uploads = 3
    pool.save()
    for minute in range(2):
        run_on_commit(stored_upload, pool=pool, uploader=contributor, timestamp=T0 + timedelta(minutes=minute),
                      data=b"x")
    group = Group.objects.get(pool=pool)
    assert group.status == GroupStatus.OPEN
    run_on_commit(stored_upload, pool=pool, uploader=contributor, timestamp=T0 + timedelta(minutes=2), data=b"x")
    group.refresh_from_db()
    assert group.status == GroupStatus.CLOSED
    assert len(_closed_events(group)) == 1


def test_close_rule_on_distinct_contributors(pool, contributor, manager, run_on_commit):
    pool.close_min_contributors = 2
    pool.save()
    for minute in range(3):
        run_on_commit(stored_upload, pool=pool, uploader=contributor, timestamp=T0 + timedelta(minutes=minute),
                      data=b"x")
    group = Group.objects.get(pool=pool)
    assert group.status == GroupStatus.OPEN
    run_on_commit(stored_upload, pool=pool, uploader=manager, timestamp=T0 + timedelta(minutes=9), data=b"x")
    group.refresh_from_db()
    assert group.status == GroupStatus.CLOSED


def test_beat_is_a_backstop_for_close_rules(pool, contributor):
    stored_upload(pool=pool, uploader=contributor, timestamp=T0, data=b"x")  # no on-commit check ran
    pool.close_min_uploads = 1
    pool.save()
    group = Group.objects.get(pool=pool)
    assert groups_close_due() == [str(group.id)]


def test_beat_schedule_registers_the_rounds_tasks(settings):
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"groups_close_due", "leases_expire"} <= tasks
