"""Export under a lease: claim, the archive, the result, and what members read afterwards."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from datetime import timedelta

import pytest
from django.utils import timezone

from batching import tasks
from batching.models import Group, GroupStatus, Lease, Result
from batching.services import leases_expire
from poolhub.filestore import mongo_db
from tests.batching.conftest import T0, stored_upload
from tests.conftest import error_code
from uploads.models import Event, UploadStatus

pytestmark = pytest.mark.django_db


def claim(api, user, group):
    return api(user).post(f"/api/v1/groups/{group.id}/claim")


def post_result(api, user, group, lease_id, data=b"the aggregate", **extra):
    payload = {"file": io.BytesIO(data), "lease_id": str(lease_id), **extra}
    payload["file"].name = "aggregate.bin"
    return api(user).post(f"/api/v1/groups/{group.id}/result", payload, format="multipart")


def archive_members(response) -> tuple[list[str], dict[str, bytes]]:
    raw = b"".join(response.streaming_content)
    assert len(raw) == int(response["Content-Length"])
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        names = tar.getnames()
        return names, {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def group_events(group, type):
    return list(Event.objects.filter(stream_type="group", stream_id=group.id, type=type))


# --- claim ----------------------------------------------------------------------------------------

def test_exporter_claims_a_closed_group(api, closed_group, exporter):
    response = claim(api, exporter, closed_group)
    assert response.status_code == 200
    body = response.json()
    lease = Lease.objects.get(id=body["lease_id"])
    assert lease.exporter == exporter
    assert body["expires_at"].startswith(str(lease.expires_at.year))
    assert timedelta(seconds=590) < lease.expires_at - timezone.now() <= timedelta(seconds=600)
    closed_group.refresh_from_db()
    assert closed_group.status == GroupStatus.EXPORTING
    assert len(group_events(closed_group, "group.claimed")) == 1


def test_one_lease_at_a_time(api, closed_group, exporter, second_exporter):
    assert claim(api, exporter, closed_group).status_code == 200
    for user in (second_exporter, exporter):
        response = claim(api, user, closed_group)
        assert (response.status_code, error_code(response)) == (409, "already_claimed")
    assert Lease.objects.filter(group=closed_group).count() == 1


def test_an_open_group_is_not_ready(api, pool, contributor, exporter):
    stored_upload(pool=pool, uploader=contributor, timestamp=T0, data=b"x")
    group = Group.objects.get(pool=pool)
    response = claim(api, exporter, group)
    assert (response.status_code, error_code(response)) == (409, "not_ready")
    assert response.json()["error"]["details"]["status"] == "open"
    assert not Lease.objects.exists()


def test_a_group_with_uploads_still_cached_is_not_ready_with_counts(api, closed_group, pool, contributor, exporter):
    stored_upload(pool=pool, uploader=contributor, timestamp=T0 + timedelta(minutes=40), data=b"x",
                  status=UploadStatus.CACHED)
    stored_upload(pool=pool, uploader=contributor, timestamp=T0 + timedelta(minutes=41), data=b"y",
                  status=UploadStatus.FAILED)
    response = claim(api, exporter, closed_group)
    assert (response.status_code, error_code(response)) == (409, "not_ready")
    details = response.json()["error"]["details"]
    assert (details["cached"], details["stored"], details["failed"], details["total"]) == (1, 3, 1, 5)
    closed_group.refresh_from_db()
    assert closed_group.status == GroupStatus.CLOSED


@pytest.mark.parametrize("persona", ["manager", "contributor", "listener"])
def test_only_exporters_claim(api, closed_group, persona, request):
    response = claim(api, request.getfixturevalue(persona), closed_group)
    assert (response.status_code, error_code(response)) == (403, "forbidden")
    assert not Lease.objects.exists()


def test_outsider_cannot_claim(api, closed_group, outsider):
    response = claim(api, outsider, closed_group)
    assert (response.status_code, error_code(response)) == (404, "not_found")


# --- archive --------------------------------------------------------------------------------------

def test_archive_has_the_manifest_first_then_every_stored_file(api, closed_group, pool, contributor, exporter):
    stored_upload(pool=pool, uploader=contributor, timestamp=T0 + timedelta(minutes=50), data=b"lost",
                  status=UploadStatus.FAILED)
    lease_id = claim(api, exporter, closed_group).json()["lease_id"]
    response = api(exporter).get(f"/api/v1/groups/{closed_group.id}/archive", {"lease": lease_id})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-tar"
    assert response["Content-Disposition"].startswith("attachment")
    names, files = archive_members(response)
    assert names[0] == "manifest.json"
    manifest = json.loads(files["manifest.json"])
    uploads = closed_group.uploads.filter(status=UploadStatus.STORED).order_by("timestamp")
    assert [(e["id"], e["uploader"], e["filename"], e["size"], e["sha256"]) for e in manifest["uploads"]] == [
        (str(u.id), "contributor", u.filename, u.size, u.sha256) for u in uploads
    ]
    assert manifest["uploads"][0]["timestamp"] == "2026-11-28T10:00:00Z"
    assert len(manifest["failed"]) == 1
    assert names[1:] == [e["path"] for e in manifest["uploads"]]
    for entry in manifest["uploads"]:
        assert hashlib.sha256(files[entry["path"]]).hexdigest() == entry["sha256"]


@pytest.mark.parametrize(("query", "status", "code"), [
    ({}, 400, "invalid"),
    ({"lease": "nope"}, 400, "invalid"),
    ({"lease": "00000000-0000-0000-0000-000000000000"}, 409, "conflict"),
])
def test_archive_needs_the_groups_lease(api, closed_group, exporter, query, status, code):
    claim(api, exporter, closed_group)
    response = api(exporter).get(f"/api/v1/groups/{closed_group.id}/archive", query)
    assert (response.status_code, error_code(response)) == (status, code)


def test_archive_under_another_exporters_lease_is_refused(api, closed_group, exporter, second_exporter):
    lease_id = claim(api, exporter, closed_group).json()["lease_id"]
    response = api(second_exporter).get(f"/api/v1/groups/{closed_group.id}/archive", {"lease": lease_id})
    assert (response.status_code, error_code(response)) == (403, "forbidden")


def test_archive_refused_to_non_exporters(api, closed_group, exporter, manager):
    lease_id = claim(api, exporter, closed_group).json()["lease_id"]
    response = api(manager).get(f"/api/v1/groups/{closed_group.id}/archive", {"lease": lease_id})
    assert (response.status_code, error_code(response)) == (403, "forbidden")


# --- result ---------------------------------------------------------------------------------------

def test_result_completes_the_group_and_is_announced(api, closed_group, exporter, listener, pool):
    lease_id = claim(api, exporter, closed_group).json()["lease_id"]
    data = b"R" * 300_000  # past the in-memory upload limit: spooled to disk, streamed to GridFS
    response = post_result(api, exporter, closed_group, lease_id, data, sha256=hashlib.sha256(data).hexdigest())
    assert response.status_code == 201
    body = response.json()
    assert (body["size"], body["sha256"], body["group"], body["pool"]) == (
        len(data), hashlib.sha256(data).hexdigest(), str(closed_group.id), str(pool.id))
    result = Result.objects.get(id=body["id"])
    assert sorted(result.upload_ids) == sorted(str(u.id) for u in closed_group.uploads.all())
    closed_group.refresh_from_db()
    assert closed_group.status == GroupStatus.COMPLETED
    [event] = group_events(closed_group, "result.available")
    assert event.data == {"group": str(closed_group.id), "result_id": body["id"], "size": len(data),
                          "sha256": body["sha256"], "url": f"/api/v1/results/{body['id']}/content"}
    assert event.pool_id == pool.id
    # A member who was offline finds it.
    latest = api(listener).get(f"/api/v1/pools/{pool.id}/results/latest")
    assert latest.status_code == 200
    assert latest.json()["id"] == body["id"]
    content = api(listener).get(f"/api/v1/results/{body['id']}/content")
    assert content.status_code == 200
    assert b"".join(content.streaming_content) == data
    assert content["X-Content-Type-Options"] == "nosniff"
    assert content["Content-Disposition"].startswith("attachment")


def test_posting_the_same_result_twice_is_harmless(api, closed_group, exporter):
    lease_id = claim(api, exporter, closed_group).json()["lease_id"]
    first = post_result(api, exporter, closed_group, lease_id)
    again = post_result(api, exporter, closed_group, lease_id)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert Result.objects.count() == 1
    assert len(group_events(closed_group, "result.available")) == 1
    different = post_result(api, exporter, closed_group, lease_id, b"something else")
    assert (different.status_code, error_code(different)) == (409, "conflict")
    assert Result.objects.count() == 1


@pytest.mark.parametrize(("payload", "code"), [
    ({"lease_id": "x"}, "invalid"),
    ({"file": "not a file"}, "invalid"),
    ({"sha256": "zz"}, "invalid"),
    ({"data": b""}, "empty_file"),
    ({"sha256": "0" * 64}, "checksum_mismatch"),
])
def test_bad_result_posts_change_nothing(api, closed_group, exporter, payload, code):
    lease_id = claim(api, exporter, closed_group).json()["lease_id"]
    stored_results = mongo_db()["results.files"].count_documents({})
    data = payload.pop("data", b"result")
    body: dict[str, object] = {"file": io.BytesIO(data), "lease_id": lease_id}
    body["file"].name = "r.bin"  # type: ignore[attr-defined]
    body.update(payload)
    response = api(exporter).post(f"/api/v1/groups/{closed_group.id}/result", body, format="multipart")
    assert (response.status_code, error_code(response)) == (400, code)
    assert not Result.objects.exists()
    assert mongo_db()["results.files"].count_documents({}) == stored_results
    closed_group.refresh_from_db()
    assert closed_group.status == GroupStatus.EXPORTING


def test_result_as_json_is_refused(api, closed_group, exporter):
    lease_id = claim(api, exporter, closed_group).json()["lease_id"]
    response = api(exporter).post(f"/api/v1/groups/{closed_group.id}/result", {"lease_id": lease_id}, format="json")
    assert (response.status_code, error_code(response)) == (400, "invalid")
    assert not Result.objects.exists()


def test_result_under_a_foreign_lease_is_refused(api, closed_group, exporter, second_exporter):
    lease_id = claim(api, exporter, closed_group).json()["lease_id"]
    response = post_result(api, second_exporter, closed_group, lease_id)
    assert (response.status_code, error_code(response)) == (403, "forbidden")
    assert not Result.objects.exists()


def test_result_under_another_groups_lease_is_refused(api, closed_group, pool, contributor, exporter):
    stored_upload(pool=pool, uploader=contributor, timestamp=T0 + timedelta(hours=2), data=b"x")
    other = Group.objects.exclude(id=closed_group.id).get()
    Group.objects.filter(id=other.id).update(status="closed")
    lease_id = claim(api, exporter, closed_group).json()["lease_id"]
    claim(api, exporter, other)
    response = post_result(api, exporter, other, lease_id)
    assert (response.status_code, error_code(response)) == (409, "conflict")
    assert not Result.objects.exists()


def test_non_exporter_cannot_post_a_result(api, closed_group, exporter, manager):
    lease_id = claim(api, exporter, closed_group).json()["lease_id"]
    response = post_result(api, manager, closed_group, lease_id)
    assert (response.status_code, error_code(response)) == (403, "forbidden")
    assert not Result.objects.exists()


# --- leases expire --------------------------------------------------------------------------------

def _expire(lease_id):
    Lease.objects.filter(id=lease_id).update(expires_at=timezone.now() - timedelta(seconds=1))


def test_an_expired_lease_returns_the_group_and_refuses_the_late_result(api, closed_group, exporter,
                                                                        second_exporter):
    lease_id = claim(api, exporter, closed_group).json()["lease_id"]
    _expire(lease_id)
    assert tasks.leases_expire() == [lease_id]
    closed_group.refresh_from_db()
    assert closed_group.status == GroupStatus.CLOSED
    [event] = group_events(closed_group, "group.lease_expired")
    assert event.data == {"group": str(closed_group.id), "lease_id": lease_id}
    late = post_result(api, exporter, closed_group, lease_id)
    assert (late.status_code, error_code(late)) == (409, "lease_expired")
    archive = api(exporter).get(f"/api/v1/groups/{closed_group.id}/archive", {"lease": lease_id})
    assert (archive.status_code, error_code(archive)) == (409, "lease_expired")
    # Someone claims again and finishes the round.
    new_lease = claim(api, second_exporter, closed_group).json()["lease_id"]
    assert post_result(api, second_exporter, closed_group, new_lease).status_code == 201
    assert post_result(api, exporter, closed_group, lease_id).status_code == 409
    assert Result.objects.count() == 1


def test_a_lease_past_its_time_is_refused_before_beat_notices(api, closed_group, exporter, second_exporter):
    lease_id = claim(api, exporter, closed_group).json()["lease_id"]
    _expire(lease_id)
    late = post_result(api, exporter, closed_group, lease_id)
    assert (late.status_code, error_code(late)) == (409, "lease_expired")
    assert not Result.objects.exists()
    response = claim(api, second_exporter, closed_group)  # the expired lease does not block a new claim
    assert response.status_code == 200
    assert leases_expire() == []
    assert len(group_events(closed_group, "group.lease_expired")) == 1


def test_claiming_a_completed_group_conflicts(api, closed_group, exporter):
    lease_id = claim(api, exporter, closed_group).json()["lease_id"]
    post_result(api, exporter, closed_group, lease_id)
    response = claim(api, exporter, closed_group)
    assert (response.status_code, error_code(response)) == (409, "conflict")


def test_latest_result_when_there_is_none(api, pool, listener):
    response = api(listener).get(f"/api/v1/pools/{pool.id}/results/latest")
    assert (response.status_code, error_code(response)) == (404, "not_found")


def test_outsider_cannot_read_a_result(api, closed_group, exporter, outsider):
    lease_id = claim(api, exporter, closed_group).json()["lease_id"]
    result_id = post_result(api, exporter, closed_group, lease_id).json()["id"]
    for path in (f"/api/v1/results/{result_id}", f"/api/v1/results/{result_id}/content"):
        response = api(outsider).get(path)
        assert (response.status_code, error_code(response)) == (404, "not_found")


def test_archive_keeps_long_and_non_ascii_filenames(api, pool, contributor, exporter):
    name = "données-été-" + "x" * 200 + ".bin"
    stored_upload(pool=pool, uploader=contributor, timestamp=T0, data=b"accents", filename=name)
    stored_upload(pool=pool, uploader=contributor, timestamp=T0 + timedelta(minutes=1), data=b"dots",
                  filename="../../etc/passwd")
    group = Group.objects.get(pool=pool)
    Group.objects.filter(id=group.id).update(status="closed")
    lease_id = claim(api, exporter, group).json()["lease_id"]
    response = api(exporter).get(f"/api/v1/groups/{group.id}/archive", {"lease": lease_id})
    names, files = archive_members(response)
    manifest = json.loads(files["manifest.json"])
    assert [e["filename"] for e in manifest["uploads"]] == [name, "../../etc/passwd"]
    assert names[1].endswith("/" + name)
    assert names[2].endswith("/passwd") and ".." not in names[2]
    assert (files[names[1]], files[names[2]]) == (b"accents", b"dots")


def test_archive_with_a_missing_stored_file_is_503_not_a_truncated_tar(api, closed_group, exporter):
    from poolhub.filestore import Bucket, file_delete

    lost = closed_group.uploads.order_by("timestamp").first()
    file_delete(bucket=Bucket.UPLOADS, file_id=lost.id)
    lease_id = claim(api, exporter, closed_group).json()["lease_id"]
    response = api(exporter).get(f"/api/v1/groups/{closed_group.id}/archive", {"lease": lease_id})
    assert (response.status_code, error_code(response)) == (503, "unavailable")
    assert response.json()["error"]["details"]["uploads"] == [str(lost.id)]
    assert "Retry-After" in response


# --- result size (the pool's max_result_bytes) -----------------------------------------------------

def test_a_result_over_the_pools_limit_is_refused_and_stores_nothing(api, closed_group, exporter, pool):
    pool.max_result_bytes = 1024
    pool.save(update_fields=["max_result_bytes"])
    lease_id = claim(api, exporter, closed_group).json()["lease_id"]
    stored_results = mongo_db()["results.files"].count_documents({})
    response = post_result(api, exporter, closed_group, lease_id, data=b"r" * 1025)
    assert (response.status_code, error_code(response)) == (413, "file_too_large")
    assert response.json()["error"]["details"]["max_bytes"] == 1024
    assert not Result.objects.exists()
    assert mongo_db()["results.files"].count_documents({}) == stored_results
    closed_group.refresh_from_db()
    assert closed_group.status == GroupStatus.EXPORTING
    assert post_result(api, exporter, closed_group, lease_id, data=b"r" * 1024).status_code == 201


def test_pools_have_a_result_limit_of_64_mib_by_default(api, pool, manager):
    body = api(manager).get(f"/api/v1/pools/{pool.id}").json()
    assert body["max_result_bytes"] == 64 * 1024 * 1024
    response = api(manager).patch(f"/api/v1/pools/{pool.id}", {"max_result_bytes": 0}, format="json")
    assert (response.status_code, error_code(response)) == (400, "invalid")
