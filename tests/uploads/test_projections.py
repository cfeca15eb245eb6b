"""rebuild_projections: the status columns can be rebuilt from the log, and drift is reported."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from tests.uploads.conftest import payload, post_upload
from uploads.models import Upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def some_uploads(api, pool, contributor, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        stored = post_upload(api(contributor), pool, payload(100, seed=1)).json()
    cached = post_upload(api(contributor), pool, payload(100, seed=2)).json()
    return Upload.objects.get(id=stored["id"]), Upload.objects.get(id=cached["id"])


def test_check_finds_no_difference_after_uploads(some_uploads, capsys):
    call_command("rebuild_projections", "--check")
    assert "found 0 difference" in capsys.readouterr().out


def test_check_reports_a_tampered_projection_and_a_rebuild_repairs_it(some_uploads, capsys):
    stored, _ = some_uploads
    Upload.objects.filter(id=stored.id).update(status="failed", attempts=7)
    with pytest.raises(CommandError, match="1 projection"):
        call_command("rebuild_projections", "--check")
    assert f"upload {stored.id}" in capsys.readouterr().out
    call_command("rebuild_projections")
    stored.refresh_from_db()
    assert (stored.status, stored.attempts) == ("stored", 1)
    call_command("rebuild_projections", "--check")


def test_the_event_log_refuses_update_and_delete_on_postgresql(some_uploads):
    from django.db import DatabaseError, connection, transaction

    from uploads.models import Event

    if connection.vendor != "postgresql":
        pytest.skip("the append-only trigger exists on PostgreSQL only")
    events = Event.objects.filter(stream_type="upload")
    count = events.count()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        events.update(type="upload.tampered")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        events.delete()
    assert Event.objects.filter(stream_type="upload").count() == count
    assert not Event.objects.filter(type="upload.tampered").exists()
