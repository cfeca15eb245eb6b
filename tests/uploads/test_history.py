"""GET /uploads, /uploads/{id} (with events) and /uploads/{id}/content: who sees what."""

from __future__ import annotations

import pytest

from tests.conftest import error_code
from tests.uploads.conftest import assert_nothing_left, payload, post_upload, sha
from uploads.models import Upload
from uploads.services import upload_store

pytestmark = pytest.mark.django_db


@pytest.fixture
def stored(api, pool, contributor, django_capture_on_commit_callbacks):
    data = payload(300 * 1024, seed=3)
    with django_capture_on_commit_callbacks(execute=True):
        body = post_upload(api(contributor), pool, data, name="station-7.bin").json()
    return Upload.objects.get(id=body["id"]), data


def test_history_lists_the_callers_uploads_only(api, pool, contributor, manager, admin_user):
    mine = post_upload(api(contributor), pool, payload(10, seed=1)).json()
    theirs = post_upload(api(manager), pool, payload(10, seed=2)).json()
    assert [u["id"] for u in api(contributor).get("/api/v1/uploads").json()["results"]] == [mine["id"]]
    assert [u["id"] for u in api(manager).get("/api/v1/uploads").json()["results"]] == [theirs["id"]]
    everyone = api(admin_user).get("/api/v1/uploads").json()
    assert everyone["count"] == 2


def test_history_filters(api, pool, other_pool, contributor, admin_user):
    one = post_upload(api(contributor), pool, payload(10, seed=1)).json()
    client = api(admin_user)
    assert client.get("/api/v1/uploads", {"pool": str(pool.id)}).json()["count"] == 1
    assert client.get("/api/v1/uploads", {"pool": str(other_pool.id)}).json()["count"] == 0
    assert client.get("/api/v1/uploads", {"user": "contributor"}).json()["count"] == 1
    assert client.get("/api/v1/uploads", {"user": str(contributor.id)}).json()["count"] == 1
    assert client.get("/api/v1/uploads", {"status": "stored"}).json()["count"] == 0
    assert client.get("/api/v1/uploads", {"status": "cached"}).json()["count"] == 1
    assert client.get("/api/v1/uploads", {"group": one["group"]}).json()["count"] == 1
    bad = client.get("/api/v1/uploads", {"status": "lost"})
    assert bad.status_code == 400
    assert error_code(bad) == "invalid"


def test_history_is_paginated(api, pool, contributor):
    for seed in range(5):
        post_upload(api(contributor), pool, payload(10, seed=seed))
    page = api(contributor).get("/api/v1/uploads", {"limit": 2}).json()
    assert page["count"] == 5
    assert len(page["results"]) == 2
    rest = api(contributor).get(page["next"]).json()
    assert not {u["id"] for u in rest["results"]} & {u["id"] for u in page["results"]}


def test_detail_has_the_contract_fields_and_events_in_order(api, contributor, stored):
    upload, data = stored
    body = api(contributor).get(f"/api/v1/uploads/{upload.id}").json()
    assert {"id", "pool", "uploader", "filename", "size", "sha256", "content_type", "timestamp", "status",
            "group", "attempts", "created_at", "events"} <= set(body)
    assert body["status"] == "stored"
    assert body["sha256"] == sha(data)
    assert [e["type"] for e in body["events"]] == ["upload.cached", "upload.storing", "upload.stored"]
    seqs = [e["seq"] for e in body["events"]]
    assert seqs == sorted(seqs)
    assert all({"status", "attempts"} <= set(e["data"]) for e in body["events"])


@pytest.mark.parametrize("persona", ["contributor", "manager", "exporter", "admin_user"])
def test_uploader_managers_exporters_and_admins_can_read(api, stored, persona, request):
    upload, data = stored
    client = api(request.getfixturevalue(persona))
    assert client.get(f"/api/v1/uploads/{upload.id}").status_code == 200
    content = client.get(f"/api/v1/uploads/{upload.id}/content")
    assert content.status_code == 200
    assert b"".join(content.streaming_content) == data


def test_listener_gets_403_and_outsider_404(api, stored, listener, outsider):
    upload, _ = stored
    assert api(listener).get(f"/api/v1/uploads/{upload.id}").status_code == 403
    for path in (f"/api/v1/uploads/{upload.id}", f"/api/v1/uploads/{upload.id}/content"):
        response = api(outsider).get(path)
        assert response.status_code == 404
        assert error_code(response) == "not_found"


def test_unknown_upload_is_404(api, contributor):
    response = api(contributor).get("/api/v1/uploads/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404


def test_content_is_an_attachment_that_browsers_do_not_sniff(api, contributor, stored):
    upload, data = stored
    response = api(contributor).get(f"/api/v1/uploads/{upload.id}/content")
    assert response["Content-Disposition"].startswith("attachment")
    assert "station-7.bin" in response["Content-Disposition"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Length"] == str(len(data))


def test_content_before_storage_comes_from_staging(api, pool, contributor):
    data = payload(150_000, seed=5)
    body = post_upload(api(contributor), pool, data).json()  # no commit: the store task never ran
    assert body["status"] == "cached"
    response = api(contributor).get(f"/api/v1/uploads/{body['id']}/content")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == data


def test_nothing_left_helper_sees_a_real_upload(api, pool, contributor):
    """The leftovers check used by every refusal test does notice an accepted upload."""
    post_upload(api(contributor), pool, payload(10))
    with pytest.raises(AssertionError):
        assert_nothing_left()


def test_download_started_from_staging_finishes_from_the_file_store(api, pool, contributor, settings,
                                                                     django_capture_on_commit_callbacks):
    settings.POOLHUB_STAGING_CHUNK_BYTES = 256 * 1024
    data = payload(1024 * 1024, seed=8)
    upload_id = post_upload(api(contributor), pool, data).json()["id"]
    response = api(contributor).get(f"/api/v1/uploads/{upload_id}/content")
    pieces = iter(response.streaming_content)
    first = next(pieces)
    with django_capture_on_commit_callbacks(execute=True):  # the store runs and drops the staged bytes
        upload_store(upload_id=upload_id)
    assert Upload.objects.get(id=upload_id).status == "stored"
    assert first + b"".join(pieces) == data
