"""Range on the result's content and the group archive: 206, 416, If-Range, and an archive whose bytes
are the same on every request, so a download cut anywhere resumes to the same file."""

from __future__ import annotations

import hashlib
import io
import random
import tarfile
from typing import Any

import httpx
import pytest

from accounts.tokens import token_pair_issue
from batching.models import Group
from poolhub.filestore import GRIDFS_CHUNK_BYTES
from tests.batching.conftest import T0, stored_upload
from tests.batching.test_export_api import claim, post_result
from tests.conftest import error_code
from uploads.models import Upload, UploadStatus

pytestmark = pytest.mark.django_db


def body(response: Any) -> bytes:
    return b"".join(response.streaming_content)


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
def big_group(pool, contributor) -> Group:
    """A closed group whose files span several GridFS chunks (and one small file)."""
    sizes = [3 * GRIDFS_CHUNK_BYTES + 77, 1000, GRIDFS_CHUNK_BYTES]
    for i, size in enumerate(sizes):
        stored_upload(pool=pool, uploader=contributor, timestamp=T0.replace(minute=i), data=payload(size, i),
                      filename=f"f{i}.bin")
    group = Group.objects.get(pool=pool, window_start=T0)
    Group.objects.filter(id=group.id).update(status="closed")
    group.refresh_from_db()
    return group


def get_archive(api, exporter, group, lease_id, **headers: str):
    return api(exporter).get(f"/api/v1/groups/{group.id}/archive", {"lease": lease_id}, headers=headers)


def test_the_archive_is_the_same_bytes_on_every_request_and_under_every_lease(api, big_group, exporter,
                                                                               second_exporter):
    lease = claim(api, exporter, big_group).json()["lease_id"]
    first = get_archive(api, exporter, big_group, lease)
    again = get_archive(api, exporter, big_group, lease)
    assert first.status_code == again.status_code == 200
    assert first["Accept-Ranges"] == "bytes"
    assert first["ETag"] == again["ETag"] and first["ETag"].startswith('"')
    whole = body(first)
    assert body(again) == whole
    assert len(whole) == int(first["Content-Length"])
    with tarfile.open(fileobj=io.BytesIO(whole), mode="r:") as tar:
        names = tar.getnames()
        assert names[0] == "manifest.json"
        assert [tar.extractfile(name).read() for name in names[1:]] == [  # type: ignore[union-attr]
            payload(size, i) for i, size in enumerate([3 * GRIDFS_CHUNK_BYTES + 77, 1000, GRIDFS_CHUNK_BYTES])]

    from batching.models import Lease  # the first lease runs out; another exporter claims the same group
    Lease.objects.filter(id=lease).update(expires_at=T0)
    other = claim(api, second_exporter, big_group).json()["lease_id"]
    third = get_archive(api, second_exporter, big_group, other)
    assert third["ETag"] == first["ETag"]
    assert body(third) == whole


def test_first_middle_and_last_bytes_of_the_archive(api, big_group, exporter):
    lease = claim(api, exporter, big_group).json()["lease_id"]
    whole = body(get_archive(api, exporter, big_group, lease))
    length = len(whole)
    middle = GRIDFS_CHUNK_BYTES + 1500  # inside the first file, across no boundary the reader may assume
    for header, (start, stop) in {
        "bytes=0-99": (0, 100),
        f"bytes={middle}-{middle + 2 * GRIDFS_CHUNK_BYTES}": (middle, middle + 2 * GRIDFS_CHUNK_BYTES + 1),
        "bytes=-700": (length - 700, length),
        f"bytes={length - 1}-": (length - 1, length),
        f"bytes=10-{length + 5000}": (10, length),
    }.items():
        response = get_archive(api, exporter, big_group, lease, Range=header)
        assert response.status_code == 206, header
        assert response["Content-Range"] == f"bytes {start}-{stop - 1}/{length}"
        assert int(response["Content-Length"]) == stop - start
        assert body(response) == whole[start:stop], header


def test_an_archive_resumed_from_random_offsets_reassembles_to_the_same_sha256(api, big_group, exporter):
    lease = claim(api, exporter, big_group).json()["lease_id"]
    full = get_archive(api, exporter, big_group, lease)
    etag, whole = full["ETag"], body(full)
    rng = random.Random(14)
    for _ in range(6):
        cut = rng.randrange(1, len(whole))
        rest = get_archive(api, exporter, big_group, lease, Range=f"bytes={cut}-", **{"If-Range": etag})
        assert rest.status_code == 206
        assert hashlib.sha256(whole[:cut] + body(rest)).hexdigest() == hashlib.sha256(whole).hexdigest()


def test_a_stale_if_range_gets_the_whole_archive(api, big_group, exporter):
    lease = claim(api, exporter, big_group).json()["lease_id"]
    before = get_archive(api, exporter, big_group, lease)["ETag"]
    # The group's stored files change (one of them is marked failed): other bytes, other ETag.
    Upload.objects.filter(id=big_group.uploads.order_by("timestamp")[0].id).update(status=UploadStatus.FAILED)
    now = get_archive(api, exporter, big_group, lease)
    etag, whole = now["ETag"], body(now)
    assert etag != before
    for stale in [before, f"W/{etag}", "Wed, 21 Oct 2015 07:28:00 GMT"]:
        response = get_archive(api, exporter, big_group, lease, Range="bytes=100-", **{"If-Range": stale})
        assert response.status_code == 200, stale
        assert "Content-Range" not in response
        assert body(response) == whole
    assert get_archive(api, exporter, big_group, lease, Range="bytes=100-", **{"If-Range": etag}).status_code == 206


def test_an_unsatisfiable_range_is_416_with_the_length(api, big_group, exporter):
    lease = claim(api, exporter, big_group).json()["lease_id"]
    length = int(get_archive(api, exporter, big_group, lease)["Content-Length"])
    response = get_archive(api, exporter, big_group, lease, Range=f"bytes={length}-")
    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{length}"
    assert error_code(response) == "range_not_satisfiable"


def test_a_malformed_or_multiple_range_gets_the_whole_body(api, big_group, exporter):
    lease = claim(api, exporter, big_group).json()["lease_id"]
    length = int(get_archive(api, exporter, big_group, lease)["Content-Length"])
    for header in ["bytes=abc", "items=0-5", "bytes=0-5,10-20", "bytes=9-3"]:
        response = get_archive(api, exporter, big_group, lease, Range=header)
        assert (response.status_code, int(response["Content-Length"])) == (200, length), header


def test_ranges_of_the_result(api, big_group, exporter, listener):
    lease = claim(api, exporter, big_group).json()["lease_id"]
    data = payload(2 * GRIDFS_CHUNK_BYTES + 99, 7)
    result = post_result(api, exporter, big_group, lease, data=data).json()
    url = f"/api/v1/results/{result['id']}/content"
    whole = api(listener).get(url)
    assert (whole.status_code, whole["Accept-Ranges"], body(whole)) == (200, "bytes", data)
    assert whole["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    middle = GRIDFS_CHUNK_BYTES - 10
    for header, (start, stop) in {"bytes=0-0": (0, 1), f"bytes={middle}-{middle + 19}": (middle, middle + 20),
                                  "bytes=-1": (len(data) - 1, len(data))}.items():
        response = api(listener).get(url, headers={"Range": header, "If-Range": whole["ETag"]})
        assert response.status_code == 206
        assert response["Content-Range"] == f"bytes {start}-{stop - 1}/{len(data)}"
        assert body(response) == data[start:stop]
    stale = api(listener).get(url, headers={"Range": "bytes=5-", "If-Range": '"stale"'})
    assert (stale.status_code, body(stale)) == (200, data)
    assert api(listener).get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_an_archive_download_cut_midway_resumes_over_the_live_server(big_group, exporter, live_server_url):
    headers = {"Authorization": f"Bearer {token_pair_issue(user=exporter)['access']}"}
    with httpx.Client(base_url=live_server_url, headers=headers, timeout=60) as http:
        lease = http.post(f"/api/v1/groups/{big_group.id}/claim").json()["lease_id"]
        url, params = f"/api/v1/groups/{big_group.id}/archive", {"lease": lease}
        full = http.get(url, params=params)
        received = bytearray()
        with http.stream("GET", url, params=params) as cut:  # the connection drops after some of it
            etag = cut.headers["etag"]
            for chunk in cut.iter_raw(64 * 1024):
                received += chunk
                if len(received) > GRIDFS_CHUNK_BYTES:
                    break
        rest = http.get(url, params=params, headers={"Range": f"bytes={len(received)}-", "If-Range": etag})
    assert rest.status_code == 206
    assert rest.headers["content-range"] == f"bytes {len(received)}-{len(full.content) - 1}/{len(full.content)}"
    assert hashlib.sha256(bytes(received) + rest.content).hexdigest() == hashlib.sha256(full.content).hexdigest()
