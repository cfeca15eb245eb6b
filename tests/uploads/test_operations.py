"""Operating uploads: admin list and re-drive, beat's re-drive of stuck uploads, regrouping, memory."""

from __future__ import annotations

import tracemalloc
from datetime import timedelta

import pytest
from django.test import Client
from rest_framework.test import APIRequestFactory, force_authenticate

from batching.models import Group
from tests.uploads.conftest import WHEN, named, payload, post_upload
from tests.uploads.test_store_faults import fail_point
from uploads.api.views import PoolUploadCreateApi
from uploads.models import Event, Upload
from uploads.services import upload_regroup
from uploads.tasks import uploads_stuck_redrive

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_browser(admin_user) -> Client:
    admin_user.is_staff = admin_user.is_superuser = True
    admin_user.save()
    browser = Client()
    browser.force_login(admin_user)
    return browser


def test_admin_lists_every_upload_with_filters(admin_browser, api, pool, contributor, manager):
    post_upload(api(contributor), pool, payload(10, seed=1), name="from-contributor.bin")
    post_upload(api(manager), pool, payload(10, seed=2), name="from-manager.bin")
    page = admin_browser.get("/admin/uploads/upload/")
    assert page.status_code == 200
    assert b"from-contributor.bin" in page.content and b"from-manager.bin" in page.content
    filtered = admin_browser.get("/admin/uploads/upload/", {"uploader__id__exact": str(manager.id)})
    assert b"from-manager.bin" in filtered.content and b"from-contributor.bin" not in filtered.content
    assert b"By status" in page.content and b"By uploader" in page.content
    by_pool = admin_browser.get("/admin/uploads/upload/", {"pool__id__exact": str(pool.id), "status": "cached"})
    assert b"from-manager.bin" in by_pool.content and b"from-contributor.bin" in by_pool.content


def test_admin_action_redrives_failed_uploads(admin_browser, api, pool, contributor,
                                               django_capture_on_commit_callbacks):
    fail_point("alwaysOn", failCommands=["insert"], errorCode=2)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            upload_id = post_upload(api(contributor), pool, payload(1000)).json()["id"]
    finally:
        fail_point("off")
    assert Upload.objects.get(id=upload_id).status == "failed"
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_browser.post("/admin/uploads/upload/", {"action": "redrive", "_selected_action": [upload_id]})
    assert response.status_code == 302
    assert Upload.objects.get(id=upload_id).status == "stored"


def test_beat_redrives_uploads_left_cached(api, pool, contributor, settings, django_capture_on_commit_callbacks):
    upload_id = post_upload(api(contributor), pool, payload(1000)).json()["id"]  # its task was never sent
    settings.POOLHUB_STUCK_CACHED_SECONDS = 0
    with django_capture_on_commit_callbacks(execute=True):
        assert uploads_stuck_redrive() == 1
    assert Upload.objects.get(id=upload_id).status == "stored"


def test_recent_cached_uploads_are_left_alone_by_beat(api, pool, contributor, django_capture_on_commit_callbacks):
    post_upload(api(contributor), pool, payload(1000))
    with django_capture_on_commit_callbacks(execute=True):
        assert uploads_stuck_redrive() == 0


def test_regrouping_is_an_event_with_status_and_attempts(api, pool, contributor):
    upload = Upload.objects.get(id=post_upload(api(contributor), pool, payload(100)).json()["id"])
    assert upload.group is not None
    later = Group.objects.create(pool=pool, window_start=upload.group.window_end,
                                 window_end=upload.group.window_end + timedelta(seconds=pool.window_seconds))
    upload_regroup(upload=upload, group=later, reason="late")
    upload.refresh_from_db()
    assert upload.group_id == later.id
    event = Event.objects.filter(stream_id=upload.id).last()
    assert event is not None
    assert event.type == "upload.regrouped"
    assert {"status", "attempts", "group"} <= set(event.data)
    from uploads.projections import projections_rebuild

    assert projections_rebuild(fix=False) == []


def test_a_10_mb_upload_is_streamed_not_held_in_memory(pool, contributor):
    data = payload(10 * 1024 * 1024)
    request = APIRequestFactory().post(f"/api/v1/pools/{pool.id}/uploads",
                                       {"file": named(data), "timestamp": WHEN}, format="multipart")
    force_authenticate(request, user=contributor)
    del data
    tracemalloc.start()
    try:
        response = PoolUploadCreateApi.as_view()(request, pool_id=pool.id)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 202
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes while receiving a 10 MiB file"
