"""POST /pools/{pool}/batches: accepted whole or refused whole, each bad item named."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from poolhub.filestore import Bucket, file_chunks
from tests.conftest import error_code
from tests.uploads.conftest import WHEN_DT, assert_nothing_left, named, payload, sha
from uploads.models import Event, Upload

pytestmark = pytest.mark.django_db


def iso(minutes_before: int) -> str:
    return (WHEN_DT - timedelta(minutes=minutes_before)).strftime("%Y-%m-%dT%H:%M:%SZ")


def post_batch(client, pool, files: dict[str, bytes], items: list[dict], headers=None):
    form: dict[str, object] = {"manifest": json.dumps({"items": items})}
    form.update({field: named(data, f"{field}.bin") for field, data in files.items()})
    return client.post(f"/api/v1/pools/{pool.id}/batches", form, format="multipart", headers=headers or {})


def test_batch_is_accepted_whole_and_stored(api, pool, contributor, django_capture_on_commit_callbacks):
    files = {"a": payload(1, seed=1), "b": payload(200 * 1024, seed=2), "c": payload(3000, seed=3)}
    items = [{"file": name, "timestamp": iso(i * 90), "sha256": sha(data)} for i, (name, data) in
             enumerate(files.items())]
    with django_capture_on_commit_callbacks(execute=True):
        response = post_batch(api(contributor), pool, files, items)
    assert response.status_code == 202, response.json()
    body = response.json()
    assert [u["sha256"] for u in body["uploads"]] == [sha(data) for data in files.values()]
    assert {u["batch"] for u in body["uploads"]} == {body["id"]}
    for upload_body, data in zip(body["uploads"], files.values(), strict=True):
        upload = Upload.objects.get(id=upload_body["id"])
        assert upload.status == "stored"
        assert b"".join(file_chunks(bucket=Bucket.UPLOADS, file_id=upload.id)) == data
    # Timestamps 90 minutes apart in a one-hour pool: the items joined different windows.
    assert len({u["group"] for u in body["uploads"]}) >= 2


def test_bad_items_refuse_the_whole_batch_and_are_each_named(api, pool, contributor):
    files = {"good": payload(100, seed=1), "script": b"#!/bin/sh\necho hi\n", "empty": b"",
             "lying": payload(100, seed=4), "late": payload(100, seed=5)}
    items = [
        {"file": "good", "timestamp": iso(1)},
        {"file": "script", "timestamp": iso(1)},
        {"file": "empty", "timestamp": iso(1)},
        {"file": "lying", "timestamp": iso(1), "sha256": sha(b"other")},
        {"file": "late", "timestamp": "2026-11-28T10:15:00"},
        {"file": "missing", "timestamp": iso(1)},
    ]
    response = post_batch(api(contributor), pool, files, items)
    assert response.status_code == 415  # the first bad item's status
    assert error_code(response) == "forbidden_type"
    named_items = {(i["file"], i["code"]) for i in response.json()["error"]["details"]["items"]}
    assert named_items == {("script", "forbidden_type"), ("empty", "empty_file"), ("lying", "checksum_mismatch"),
                           ("late", "invalid_timestamp"), ("missing", "invalid")}
    assert_nothing_left()


def test_oversized_item_refuses_the_batch(api, pool, contributor):
    pool.max_file_bytes = 1000
    pool.save()
    files = {"small": payload(10), "big": payload(1001, seed=2)}
    response = post_batch(api(contributor), pool, files,
                          [{"file": "small", "timestamp": iso(1)}, {"file": "big", "timestamp": iso(1)}])
    assert response.status_code == 413
    assert error_code(response) == "file_too_large"
    assert response.json()["error"]["details"]["field"] == "big"
    assert_nothing_left()


@pytest.mark.parametrize("manifest", [None, "not json", "[]", '{"items": []}', '{"items": [{"timestamp": "x"}]}',
                                      '{"items": [{"file": "a"}, {"file": "a"}]}'],
                         ids=["missing", "not-json", "not-object", "empty", "no-file", "duplicate-field"])
def test_invalid_manifest_is_refused(api, pool, contributor, manifest):
    form = {"a": named(payload(100))}
    if manifest is not None:
        form["manifest"] = manifest
    response = api(contributor).post(f"/api/v1/pools/{pool.id}/batches", form, format="multipart")
    assert response.status_code == 400
    assert error_code(response) == "invalid_manifest"
    assert_nothing_left()


def test_file_not_in_the_manifest_is_refused(api, pool, contributor):
    response = post_batch(api(contributor), pool, {"a": payload(10), "stray": payload(20, seed=2)},
                          [{"file": "a", "timestamp": iso(1)}])
    assert response.status_code == 400
    assert error_code(response) == "invalid_manifest"
    assert_nothing_left()


def test_items_already_accepted_return_the_existing_uploads(api, pool, contributor):
    data = payload(500, seed=9)
    first = post_batch(api(contributor), pool, {"x": data}, [{"file": "x", "timestamp": iso(2)}]).json()
    again = post_batch(api(contributor), pool, {"x": data, "y": payload(600, seed=10)},
                       [{"file": "x", "timestamp": iso(2)}, {"file": "y", "timestamp": iso(2)}])
    assert again.status_code == 202
    uploads = again.json()["uploads"]
    assert uploads[0]["id"] == first["uploads"][0]["id"]
    assert Upload.objects.count() == 2
    assert Event.objects.filter(type="upload.cached").count() == 2


def test_same_bytes_at_another_timestamp_is_another_upload(api, pool, contributor):
    data = payload(500, seed=9)
    response = post_batch(api(contributor), pool, {"x": data, "y": data},
                          [{"file": "x", "timestamp": iso(2)}, {"file": "y", "timestamp": iso(3)}])
    assert response.status_code == 202
    assert len({u["id"] for u in response.json()["uploads"]}) == 2


def test_listener_cannot_send_a_batch(api, pool, listener):
    response = post_batch(api(listener), pool, {"a": payload(10)}, [{"file": "a", "timestamp": iso(1)}])
    assert response.status_code == 403
    assert_nothing_left()
