"""Round settings: a minimum of contributors before a close by time exports (roll or skip), and a
cap on one contributor's uploads per window."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from accounts.models import Membership, Role
from batching.models import Group
from batching.projections import group_rebuild
from batching.services import groups_close_due
from tests.batching.conftest import T0, stored_upload
from tests.conftest import error_code, make_user
from tests.lifecycle.conftest import NOW, iso, upload
from tests.uploads.conftest import named, payload
from uploads.models import Event, Upload

pytestmark = pytest.mark.django_db

DUE = T0 + timedelta(hours=1, minutes=2)  # the fake clock: T0's window (one hour) plus its grace (60 s) is over


def group_events(group: Group) -> list[str]:
    return list(Event.objects.filter(stream_type="group", stream_id=group.id).values_list("type", flat=True))


def test_too_few_contributors_roll_the_window_into_the_next(pool, contributor):
    pool.min_contributors = 2
    pool.save()  # short_round_policy "roll" is the default
    upload = stored_upload(pool=pool, uploader=contributor, timestamp=T0 + timedelta(minutes=5), data=b"x" * 100)
    group = Group.objects.get(id=str(upload.group_id))

    groups_close_due(now=DUE)

    group.refresh_from_db()
    upload.refresh_from_db()
    assert group.status == "skipped"
    assert "group.closed" not in group_events(group)  # no export, no webhook
    skipped = Event.objects.get(stream_type="group", stream_id=group.id, type="group.skipped")
    assert skipped.data["contributors"] == 1
    assert skipped.data["rolled_into"] == str(upload.group_id)
    rolled_into = Group.objects.get(id=str(upload.group_id))
    assert rolled_into.id != group.id
    assert rolled_into.window_start == group.window_end  # the next window, open
    assert rolled_into.status == "open"
    assert Event.objects.filter(stream_type="upload", stream_id=upload.id, type="upload.regrouped").count() == 1
    Group.objects.filter(id=group.id).update(status="open", closed_at=None)  # the projection, lost
    assert group_rebuild(group_id=group.id)  # ... is rebuilt from the log
    group.refresh_from_db()
    assert group.status == "skipped"
    assert group.closed_at is not None


def test_too_few_contributors_skip_the_window_when_the_pool_says_so(api, pool, contributor, exporter):
    pool.min_contributors = 2
    pool.short_round_policy = "skip"
    pool.save()
    upload = stored_upload(pool=pool, uploader=contributor, timestamp=T0 + timedelta(minutes=5), data=b"x" * 100)

    groups_close_due(now=DUE)

    group = Group.objects.get(id=str(upload.group_id))  # the upload stayed
    assert group.status == "skipped"
    claim = api(exporter).post(f"/api/v1/groups/{group.id}/claim")
    assert claim.status_code == 409
    listed = api(exporter).get(f"/api/v1/pools/{pool.id}/groups", {"status": "skipped"}).json()
    assert [g["id"] for g in listed] == [str(group.id)]


def test_enough_contributors_close_and_export_as_usual(pool, contributor):
    pool.min_contributors = 2
    pool.save()
    other = make_user("contributor-two")
    Membership.objects.create(pool=pool, user=other, role=Role.CONTRIBUTOR)
    for uploader in (contributor, other):
        upload = stored_upload(pool=pool, uploader=uploader, timestamp=T0 + timedelta(minutes=5),
                               data=uploader.username.encode() * 10)

    groups_close_due(now=DUE)

    group = Group.objects.get(id=str(upload.group_id))
    assert group.status == "closed"
    assert "group.closed" in group_events(group)


def test_a_close_by_trigger_ignores_the_minimum(api, pool, contributor, exporter):
    pool.min_contributors = 5
    pool.save()
    upload = stored_upload(pool=pool, uploader=contributor, timestamp=T0 + timedelta(minutes=5), data=b"x" * 100)
    assert api(exporter).post(f"/api/v1/groups/{upload.group_id}/close").json()["status"] == "closed"


def test_a_contributor_s_uploads_per_window_are_capped(api, pool, contributor, manager):
    pool.max_uploads_per_contributor = 2
    pool.save()
    client = api(contributor)
    at = NOW - timedelta(minutes=5)
    assert upload(client, pool, 100, seed=1, at=at).status_code == 202
    assert upload(client, pool, 100, seed=2, at=at - timedelta(seconds=1)).status_code == 202

    third = upload(client, pool, 100, seed=3, at=at - timedelta(seconds=2))

    assert third.status_code == 409
    assert error_code(third) == "upload_cap_reached"
    assert third.json()["error"]["details"]["max_uploads_per_contributor"] == 2
    assert upload(api(manager), pool, 100, seed=4, at=at).status_code == 202  # another member is not capped
    assert Upload.objects.count() == 3


def test_a_batch_past_the_cap_is_refused_whole(api, pool, contributor):
    pool.max_uploads_per_contributor = 2
    pool.save()
    files = {f"f{i}": payload(100, seed=i) for i in range(3)}
    at = NOW - timedelta(minutes=5)
    items: list[dict[str, Any]] = [{"file": name, "timestamp": iso(at - timedelta(seconds=i))}
                                   for i, name in enumerate(files)]
    form: dict[str, Any] = {"manifest": json.dumps({"items": items})}
    form.update({name: named(data, f"{name}.bin") for name, data in files.items()})

    response = api(contributor).post(f"/api/v1/pools/{pool.id}/batches", form, format="multipart")

    assert response.status_code == 409
    assert error_code(response) == "upload_cap_reached"
    assert Upload.objects.count() == 0
