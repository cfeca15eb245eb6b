"""Range on an upload's content, staged (accepted, not stored yet) and stored: the same bytes, the same ETag."""

from __future__ import annotations

from typing import Any

import pytest

from poolhub.filestore import GRIDFS_CHUNK_BYTES, Bucket, file_delete
from tests.conftest import error_code
from tests.uploads.conftest import payload, post_upload, sha
from uploads.models import Upload, UploadStatus

pytestmark = pytest.mark.django_db

SIZE = 2 * GRIDFS_CHUNK_BYTES + 4321


def body(response: Any) -> bytes:
    return b"".join(response.streaming_content)


def spans(size: int) -> dict[str, tuple[int, int]]:
    middle = GRIDFS_CHUNK_BYTES - 100
    return {"bytes=0-9": (0, 10), f"bytes={middle}-{middle + 299}": (middle, middle + 300),
            "bytes=-5": (size - 5, size), f"bytes={size - 1}-": (size - 1, size)}


@pytest.mark.parametrize("stored", [False, True], ids=["staged", "stored"])
def test_first_middle_and_last_bytes_of_an_upload(api, pool, contributor, manager, stored,
                                                  django_capture_on_commit_callbacks):
    data = payload(SIZE, seed=3)
    with django_capture_on_commit_callbacks(execute=stored):
        upload_id = post_upload(api(contributor), pool, data).json()["id"]
    assert Upload.objects.get(id=upload_id).status == (UploadStatus.STORED if stored else UploadStatus.CACHED)
    url = f"/api/v1/uploads/{upload_id}/content"
    whole = api(manager).get(url)
    assert (whole.status_code, whole["Accept-Ranges"], whole["ETag"]) == (200, "bytes", f'"{sha(data)}"')
    assert body(whole) == data
    for header, (start, stop) in spans(SIZE).items():
        response = api(manager).get(url, headers={"Range": header, "If-Range": whole["ETag"]})
        assert response.status_code == 206, header
        assert response["Content-Range"] == f"bytes {start}-{stop - 1}/{SIZE}"
        assert response["Content-Length"] == str(stop - start)
        assert response["X-Content-Type-Options"] == "nosniff"
        assert body(response) == data[start:stop], header
    stale = api(manager).get(url, headers={"Range": "bytes=10-", "If-Range": '"another"'})
    assert (stale.status_code, body(stale)) == (200, data)
    refused = api(manager).get(url, headers={"Range": f"bytes={SIZE}-"})
    assert (refused.status_code, refused["Content-Range"], error_code(refused)) == (
        416, f"bytes */{SIZE}", "range_not_satisfiable")


def test_ranges_need_the_same_access_as_the_content(api, pool, contributor, outsider):
    upload_id = post_upload(api(contributor), pool, payload(1000)).json()["id"]
    response = api(outsider).get(f"/api/v1/uploads/{upload_id}/content", headers={"Range": "bytes=0-1"})
    assert response.status_code == 404


def test_head_answers_the_headers_without_reading_the_bytes(api, pool, contributor, manager,
                                                            django_capture_on_commit_callbacks):
    data = payload(SIZE, seed=4)
    with django_capture_on_commit_callbacks(execute=True):
        upload_id = post_upload(api(contributor), pool, data).json()["id"]
    url = f"/api/v1/uploads/{upload_id}/content"
    etag = api(manager).get(url)["ETag"]
    file_delete(bucket=Bucket.UPLOADS, file_id=upload_id)  # a HEAD that read the bytes would fail now
    whole = api(manager).head(url)
    assert (whole.status_code, whole["Content-Length"], whole["ETag"], whole.content) == (200, str(SIZE), etag, b"")
    assert whole["Accept-Ranges"] == "bytes"
    part = api(manager).head(url, headers={"Range": "bytes=10-19"})
    assert (part.status_code, part["Content-Length"], part["Content-Range"]) == (206, "10", f"bytes 10-19/{SIZE}")
