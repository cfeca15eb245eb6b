"""Admin actions as services: reopen keeps a group open for the grace period, re-export lets a
completed group be exported again (earlier results kept); and bad methods or ids on every path."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import LatePolicy
from batching import services
from batching.models import Group, GroupStatus, Lease, LeaseEnd, Result
from tests.batching.conftest import T0, stored_upload
from tests.conftest import error_code
from uploads.models import Event

pytestmark = pytest.mark.django_db


def _result(api, user, group, data: bytes) -> dict:
    lease_id = api(user).post(f"/api/v1/groups/{group.id}/claim").json()["lease_id"]
    file = io.BytesIO(data)
    file.name = "r.bin"
    response = api(user).post(f"/api/v1/groups/{group.id}/result", {"file": file, "lease_id": lease_id},
                              format="multipart")
    assert response.status_code == 201, response.content
    return response.json()


def test_a_reopened_past_window_takes_uploads_until_its_hold_ends(pool, contributor):
    past = timezone.now() - timedelta(hours=5)
    group = stored_upload(pool=pool, uploader=contributor, timestamp=past, data=b"x").group  # accepted late
    assert group is not None
    services.group_close(group_id=group.id, reason="time")
    pool.late_policy = LatePolicy.REJECT  # from now on only an open, held window takes this timestamp
    pool.save()
    services.group_reopen(group_id=group.id)
    group.refresh_from_db()
    assert group.status == GroupStatus.OPEN
    assert services.groups_close_due() == []  # held open for the pool's grace period
    joined = stored_upload(pool=pool, uploader=contributor, timestamp=past + timedelta(seconds=1), data=b"y").group
    assert joined == group
    assert group.hold_until is not None
    assert services.groups_close_due(now=group.hold_until + timedelta(seconds=1)) == [group.id]


def test_reopening_an_exporting_group_revokes_the_lease(api, closed_group, exporter):
    lease = services.group_claim(group_id=closed_group.id, exporter=exporter)
    services.group_reopen(group_id=closed_group.id)
    lease.refresh_from_db()
    assert lease.end_reason == LeaseEnd.REVOKED
    file = io.BytesIO(b"too late")
    file.name = "r.bin"
    response = api(exporter).post(f"/api/v1/groups/{closed_group.id}/result", {"file": file, "lease_id": lease.id},
                                  format="multipart")
    assert (response.status_code, error_code(response)) == (409, "lease_expired")
    assert Event.objects.filter(stream_id=closed_group.id, type="group.lease_revoked").count() == 1


def test_reexport_lets_a_completed_group_be_exported_again(api, pool, closed_group, exporter, listener):
    first = _result(api, exporter, closed_group, b"first aggregate")
    services.group_reexport(group_id=closed_group.id)
    closed_group.refresh_from_db()
    assert closed_group.status == GroupStatus.CLOSED
    second = _result(api, exporter, closed_group, b"second aggregate")
    assert Result.objects.filter(group=closed_group).count() == 2
    latest = api(listener).get(f"/api/v1/pools/{pool.id}/results/latest").json()
    assert latest["id"] == second["id"] != first["id"]
    assert api(listener).get(f"/api/v1/results/{first['id']}").status_code == 200


def test_an_open_group_cannot_be_reexported_nor_a_completed_one_reopened(api, pool, contributor, closed_group,
                                                                         exporter):
    stored_upload(pool=pool, uploader=contributor, timestamp=T0 + timedelta(hours=3), data=b"x")
    open_group = Group.objects.get(status=GroupStatus.OPEN)
    with pytest.raises(services.Conflict):
        services.group_reexport(group_id=open_group.id)
    _result(api, exporter, closed_group, b"done")
    with pytest.raises(services.Conflict):
        services.group_reopen(group_id=closed_group.id)
    closed_group.refresh_from_db()
    assert closed_group.status == GroupStatus.COMPLETED
    assert Lease.objects.filter(group=closed_group, released_at__isnull=True).count() == 0


@pytest.mark.parametrize(("method", "path"), [
    ("delete", "/api/v1/groups/{group}"),
    ("get", "/api/v1/groups/{group}/close"),
    ("get", "/api/v1/groups/{group}/claim"),
    ("post", "/api/v1/groups/{group}/archive"),
    ("get", "/api/v1/groups/{group}/result"),
    ("post", "/api/v1/pools/{pool}/results/latest"),
    ("post", "/api/v1/pools/{pool}/groups"),
])
def test_wrong_methods_answer_in_the_contract_shape(api, pool, closed_group, exporter, method, path):
    response = getattr(api(exporter), method)(path.format(group=closed_group.id, pool=pool.id))
    assert (response.status_code, error_code(response)) == (405, "method_not_allowed")
    closed_group.refresh_from_db()
    assert closed_group.status == GroupStatus.CLOSED


@pytest.mark.parametrize("path", [
    "/api/v1/results/00000000-0000-0000-0000-000000000000",
    "/api/v1/results/00000000-0000-0000-0000-000000000000/content",
    "/api/v1/pools/00000000-0000-0000-0000-000000000000/results/latest",
    "/api/v1/pools/00000000-0000-0000-0000-000000000000/groups",
])
def test_unknown_ids_are_not_found(api, exporter, path):
    response = api(exporter).get(path)
    assert (response.status_code, error_code(response)) == (404, "not_found")
