"""Retention with a fake clock: files leave the file store (checked in the store), events record
it, content answers 410, the latest result survives, and a killed run is finished by the next."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

import lifecycle.services
from batching.models import Group
from lifecycle.models import PoolUsage, Purge
from lifecycle.services import purge_expired, upload_discard
from poolhub.filestore import Bucket, mongo_db
from tests.conftest import error_code
from tests.lifecycle.conftest import NOW, in_store, round_with_result, upload
from uploads.models import Event, Upload

pytestmark = pytest.mark.django_db

LATER = NOW + timedelta(days=8)  # the fake clock: past a 7-day retention


@pytest.fixture
def two_rounds(api, pool, contributor, exporter, django_capture_on_commit_callbacks) -> dict[str, Any]:
    """Two completed rounds (each an upload and a result), all created "now"; retention 7 days."""
    pool.retention_days = 7
    pool.save()
    on_commit = django_capture_on_commit_callbacks
    old_upload, old_result = round_with_result(api, pool, contributor, exporter, at=NOW - timedelta(hours=3),
                                               seed=1, result=b"result one" * 300, on_commit=on_commit)
    new_upload, new_result = round_with_result(api, pool, contributor, exporter, at=NOW - timedelta(minutes=5),
                                               seed=2, result=b"result two" * 300, on_commit=on_commit)
    return {"uploads": [old_upload, new_upload], "old_result": old_result, "new_result": new_result}


def events(stream_type: str, stream_id: Any, type: str) -> int:
    return Event.objects.filter(stream_type=stream_type, stream_id=stream_id, type=type).count()


def test_nothing_leaves_before_its_time(two_rounds, pool):
    report = purge_expired(now=NOW + timedelta(days=6))
    assert report.marked == 0
    for upload_id in two_rounds["uploads"]:
        assert in_store(Bucket.UPLOADS, upload_id)[0] == 1


def test_expired_content_leaves_the_file_store_and_answers_410(api, two_rounds, pool, contributor, manager,
                                                               exporter):
    held_before = PoolUsage.objects.get(pool=pool).bytes

    report = purge_expired(now=LATER)

    assert (report.uploads, report.results, report.removed) == (2, 1, 3)
    for upload_id in two_rounds["uploads"]:
        assert in_store(Bucket.UPLOADS, upload_id) == (0, 0)
        assert events("upload", upload_id, "upload.purged") == 1
        content = api(contributor).get(f"/api/v1/uploads/{upload_id}/content")
        assert content.status_code == 410
        assert error_code(content) == "gone"
        detail = api(contributor).get(f"/api/v1/uploads/{upload_id}")
        assert detail.status_code == 200  # the row and its events stay
        assert "upload.purged" in [e["type"] for e in detail.json()["events"]]
    old, new = two_rounds["old_result"], two_rounds["new_result"]
    assert in_store(Bucket.RESULTS, old) == (0, 0)
    assert events("result", old, "result.purged") == 1
    assert api(contributor).get(f"/api/v1/results/{old}/content").status_code == 410
    assert api(contributor).get(f"/api/v1/results/{old}").status_code == 200
    # The latest result survives, however old.
    assert in_store(Bucket.RESULTS, new)[0] == 1
    latest = api(contributor).get(f"/api/v1/pools/{pool.id}/results/latest")
    assert latest.json()["id"] == new
    assert api(contributor).get(f"/api/v1/results/{new}/content").status_code == 200
    seen = api(manager).get(f"/api/v1/pools/{pool.id}/usage").json()
    assert (seen["uploads"], seen["results"], seen["purged_uploads"]) == (0, 1, 2)
    assert seen["stored_bytes"] == held_before - 2 * 2000 - len(b"result one" * 300)
    assert purge_expired(now=LATER).marked == 0  # nothing twice


def test_the_archive_of_a_purged_group_is_410(api, two_rounds, exporter):
    group = str(Upload.objects.get(id=two_rounds["uploads"][0]).group_id)
    purge_expired(now=LATER)
    Group.objects.filter(id=group).update(status="closed")  # as an admin's re-export would
    lease = api(exporter).post(f"/api/v1/groups/{group}/claim").json()["lease_id"]

    response = api(exporter).get(f"/api/v1/groups/{group}/archive", {"lease": lease})

    assert response.status_code == 410
    assert error_code(response) == "gone"


def test_uploads_of_a_group_being_exported_wait(api, pool, contributor, exporter, django_capture_on_commit_callbacks):
    pool.retention_days = 7
    pool.save()
    with django_capture_on_commit_callbacks(execute=True):
        upload_id = upload(api(contributor), pool, 3000).json()["id"]
    group = str(Upload.objects.get(id=upload_id).group_id)
    api(exporter).post(f"/api/v1/groups/{group}/close")
    assert api(exporter).post(f"/api/v1/groups/{group}/claim").status_code == 200

    assert purge_expired(now=LATER).uploads == 0
    assert in_store(Bucket.UPLOADS, upload_id)[0] == 1

    Group.objects.filter(id=group).update(status="closed")  # the export ended (lease expired)
    assert purge_expired(now=LATER).uploads == 1
    assert in_store(Bucket.UPLOADS, upload_id) == (0, 0)


def test_a_run_starts_where_earlier_runs_left_off(api, pool, contributor, django_capture_on_commit_callbacks):
    """Each pool keeps a mark below which every upload is purged; a run reads only from there. An
    upload still in staging when its time came holds the mark back, and is purged once stored."""
    pool.retention_days = 7
    pool.save()
    with django_capture_on_commit_callbacks(execute=True):
        first, staged, last = (upload(api(contributor), pool, 1000, seed=seed).json()["id"] for seed in (1, 2, 3))
    Upload.objects.filter(id=staged).update(status="cached")  # as if its store were still being retried

    assert purge_expired(now=LATER).uploads == 2
    # What lies below the mark is never read again: even with its tombstone removed by hand, the
    # first upload is not purged twice (a run that rescanned would count it and log it again).
    Purge.objects.filter(stream_id=first).delete()
    Upload.objects.filter(id=staged).update(status="stored")  # its store succeeded at last

    report = purge_expired(now=LATER)

    assert report.uploads == 1  # the one that was in staging, nothing else
    assert events("upload", staged, "upload.purged") == 1
    assert events("upload", first, "upload.purged") == 1
    assert events("upload", last, "upload.purged") == 1
    assert in_store(Bucket.UPLOADS, staged) == (0, 0)
    assert purge_expired(now=LATER).uploads == 0


class Killed(BaseException):
    """What a SIGKILL looks like from inside: nothing gets to clean up."""


def test_a_run_killed_mid_way_is_finished_by_the_next(api, two_rounds, pool, monkeypatch):
    real_delete = lifecycle.services.file_delete
    deletes: list[Any] = []

    def delete_then_die(**kwargs: Any) -> None:
        if deletes:
            raise Killed()
        deletes.append(kwargs)
        real_delete(**kwargs)

    monkeypatch.setattr(lifecycle.services, "file_delete", delete_then_die)
    with pytest.raises(Killed):
        purge_expired(now=LATER, batch=1)
    monkeypatch.setattr(lifecycle.services, "file_delete", real_delete)
    assert Purge.objects.filter(removed_at__isnull=True).exists()  # marked, bytes still there
    stored_ids = [*two_rounds["uploads"]]
    assert sum(in_store(Bucket.UPLOADS, upload_id)[0] for upload_id in stored_ids) == 1

    report = purge_expired(now=LATER, batch=1)

    assert report.removed >= 1
    assert not Purge.objects.filter(removed_at__isnull=True).exists()
    for upload_id in stored_ids:
        assert in_store(Bucket.UPLOADS, upload_id) == (0, 0)
        assert events("upload", upload_id, "upload.purged") == 1
    assert in_store(Bucket.RESULTS, two_rounds["old_result"]) == (0, 0)
    assert events("result", two_rounds["old_result"], "result.purged") == 1
    held = PoolUsage.objects.get(pool=pool).bytes
    assert held == len(b"result two" * 300)  # counted down once per object, not once per run


def test_the_file_store_reclaims_the_space(two_rounds):
    """The store's own statistics (collStats) shrink: the bytes are gone, not only unlisted."""
    db = mongo_db()
    before = db.command("collStats", f"{Bucket.UPLOADS}.chunks")["size"]
    purge_expired(now=LATER)
    after = db.command("collStats", f"{Bucket.UPLOADS}.chunks")["size"]
    assert after <= before - 2 * 2000


def failed_upload(api: Any, pool: Any, contributor: Any) -> Upload:
    response = upload(api(contributor), pool, 1500, seed=9)  # staged; its store task never ran
    assert response.status_code == 202
    item = Upload.objects.get(id=response.json()["id"])
    Upload.objects.filter(id=item.id).update(status="failed", attempts=3)
    item.refresh_from_db()
    return item


def test_failed_uploads_staged_bytes_are_released_after_the_setting(api, pool, contributor, manager, settings):
    from uploads.staging import staging_exists, staging_used_bytes

    settings.POOLHUB_FAILED_UPLOAD_KEEP_DAYS = 3
    item = failed_upload(api, pool, contributor)
    assert purge_expired(now=NOW + timedelta(days=2)).released == 0
    assert staging_exists(key=item.staging_key)

    report = purge_expired(now=NOW + timedelta(days=4))

    assert report.released == 1
    assert not staging_exists(key=item.staging_key)
    assert staging_used_bytes() == 0
    assert events("upload", item.id, "upload.released") == 1
    assert api(contributor).get(f"/api/v1/uploads/{item.id}/content").status_code == 410
    assert api(manager).get(f"/api/v1/pools/{pool.id}/usage").json()["stored_bytes"] == 0


def test_an_admin_discards_a_failed_upload_at_once(client, api, pool, contributor, admin_user):
    from uploads.staging import staging_exists

    item = failed_upload(api, pool, contributor)
    admin_user.is_staff = True
    admin_user.is_superuser = True
    admin_user.save()
    client.force_login(admin_user)

    response = client.post("/admin/uploads/upload/", {"action": "discard", "_selected_action": [str(item.id)]})

    assert response.status_code == 302
    assert not staging_exists(key=item.staging_key)
    assert events("upload", item.id, "upload.discarded") == 1
    assert api(contributor).get(f"/api/v1/uploads/{item.id}/content").status_code == 410
    with pytest.raises(Exception, match="already gone"):
        upload_discard(upload_id=item.id)
