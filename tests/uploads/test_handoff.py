"""The hand-off to storage is durable: once an upload is accepted, a broker that is down loses
nothing (the committed `cached` rows are the outbox; the relay kicks them again), and workers
store waiting uploads in batches, each exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kombu.exceptions import OperationalError

from poolhub.filestore import Bucket, file_chunks
from tests.uploads.conftest import gridfs_counts, payload, post_upload, sha, staged_keys
from tests.uploads.test_batch import iso, post_batch
from uploads import services, tasks
from uploads.models import Event, Upload
from uploads.staging import staging_drop

pytestmark = pytest.mark.django_db


@pytest.fixture
def broker_down() -> Iterator[pytest.MonkeyPatch]:
    """Every publish of the store kick fails as it does with the broker unreachable (until `undo()`)."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("[Errno 111] Connection refused")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tasks.uploads_store_pending, "delay", refuse)
        yield patch


def relay(settings: Any, capture: Any, broker: pytest.MonkeyPatch) -> int:
    """The beat's relay, with the broker back, as soon as it may run."""
    broker.undo()
    settings.POOLHUB_STORE_KICK_SECONDS = 0
    with capture(execute=True):
        return tasks.uploads_pending_kick()


def event_types(upload_id: Any) -> list[str]:
    return list(Event.objects.filter(stream_id=upload_id).order_by("seq").values_list("type", flat=True))


def test_broker_down_at_publish_still_accepts_and_the_relay_stores_it(
        api, pool, contributor, broker_down, settings, django_capture_on_commit_callbacks):
    data = payload(300 * 1024, seed=7)
    with django_capture_on_commit_callbacks(execute=True):
        response = post_upload(api(contributor), pool, data)
    assert response.status_code == 202, response.json()
    upload = Upload.objects.get(id=response.json()["id"])
    assert upload.status == "cached"
    assert len(staged_keys()) == 1  # the bytes are kept, not dropped by the request's clean-up
    # A retry of the same request (the client did not hear back) is the same upload.
    with django_capture_on_commit_callbacks(execute=True):
        assert post_upload(api(contributor), pool, data).json()["id"] == str(upload.id)
    assert len(staged_keys()) == 1

    assert relay(settings, django_capture_on_commit_callbacks, broker_down) == 1
    upload.refresh_from_db()
    assert upload.status == "stored"
    assert b"".join(file_chunks(bucket=Bucket.UPLOADS, file_id=upload.id)) == data
    assert event_types(upload.id) == ["upload.cached", "upload.storing", "upload.stored"]
    assert gridfs_counts()[0] == 1
    assert staged_keys() == []
    assert relay(settings, django_capture_on_commit_callbacks, broker_down) == 0  # nothing left waiting


def test_broker_down_at_publish_of_a_batch_loses_no_item(
        api, pool, contributor, broker_down, settings, django_capture_on_commit_callbacks):
    files = {f"f{i}": payload(50 * 1024 + i, seed=20 + i) for i in range(4)}
    items = [{"file": name, "timestamp": iso(i), "sha256": sha(data)} for i, (name, data) in enumerate(files.items())]
    with django_capture_on_commit_callbacks(execute=True):
        response = post_batch(api(contributor), pool, files, items)
    assert response.status_code == 202, response.json()
    ids = [u["id"] for u in response.json()["uploads"]]
    assert set(Upload.objects.filter(id__in=ids).values_list("status", flat=True)) == {"cached"}
    assert len(staged_keys()) == 4

    assert relay(settings, django_capture_on_commit_callbacks, broker_down) == 4
    for upload_id, data in zip(ids, files.values(), strict=True):
        assert Upload.objects.get(id=upload_id).status == "stored"
        assert b"".join(file_chunks(bucket=Bucket.UPLOADS, file_id=upload_id)) == data
        assert event_types(upload_id) == ["upload.cached", "upload.storing", "upload.stored"]
    assert gridfs_counts()[0] == 4


def test_one_kick_stores_every_waiting_upload_once(api, pool, contributor, settings, broker_down,
                                                   django_capture_on_commit_callbacks):
    datas = [payload(40 * 1024, seed=40 + i) for i in range(5)]
    ids = [post_upload(api(contributor), pool, data, name=f"{i}.bin").json()["id"] for i, data in enumerate(datas)]
    settings.POOLHUB_STORE_BATCH_FILES = 3
    with django_capture_on_commit_callbacks(execute=True):
        result = services.uploads_store_pending(upload_ids=[ids[-1]])
    assert result.stored == 5
    for upload_id, data in zip(ids, datas, strict=True):
        assert event_types(upload_id) == ["upload.cached", "upload.storing", "upload.stored"]
        assert b"".join(file_chunks(bucket=Bucket.UPLOADS, file_id=upload_id)) == data
    with django_capture_on_commit_callbacks(execute=True):
        assert services.uploads_store_pending(upload_ids=ids).stored == 0  # a repeated kick: nothing to do
    assert gridfs_counts()[0] == 5


def test_a_bad_item_fails_alone_and_the_batch_is_stored(api, pool, contributor, broker_down,
                                                        django_capture_on_commit_callbacks):
    datas = [payload(30 * 1024, seed=60 + i) for i in range(3)]
    ids = [post_upload(api(contributor), pool, data, name=f"{i}.bin").json()["id"] for i, data in enumerate(datas)]
    staging_drop(key=Upload.objects.get(id=ids[1]).staging_key)  # its staged bytes are gone
    with django_capture_on_commit_callbacks(execute=True):
        services.uploads_store_pending(upload_ids=ids)
    assert [Upload.objects.get(id=i).status for i in ids] == ["stored", "failed", "stored"]
    assert event_types(ids[1]).count("upload.store_failed") == 3  # three counted attempts
    assert gridfs_counts()[0] == 2
