"""Exporting a group larger than 100 MB keeps the server's memory bounded: the archive is read
from GridFS a chunk at a time and sent as it is read (measured on the server process's RSS)."""

from __future__ import annotations

import hashlib
import os
import threading
from datetime import timedelta

import httpx
import psutil
import pytest

from accounts.models import Membership, Pool, Role
from accounts.tokens import token_pair_issue
from batching.models import Group
from poolhub.filestore import Bucket, file_write
from tests import live
from tests.batching.conftest import T0
from tests.conftest import make_user
from uploads.models import Upload, UploadStatus

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MB = 1024 * 1024
FILES = 11
FILE_BYTES = 10 * MB  # 110 MB in all


def _big_group(pool: Pool) -> Group:
    contributor = make_user("bulk-contributor")
    Membership.objects.create(pool=pool, user=contributor, role=Role.CONTRIBUTOR)
    group = Group.objects.create(pool=pool, window_start=T0, window_end=T0 + timedelta(hours=1), status="closed")
    block = os.urandom(MB)
    for i in range(FILES):
        data_blocks = [bytes([i]) + block[1:]] * (FILE_BYTES // MB)
        digest = hashlib.sha256()
        for b in data_blocks:
            digest.update(b)
        upload = Upload.objects.create(pool=pool, uploader=contributor, filename=f"big-{i}.bin", size=FILE_BYTES,
                                       sha256=digest.hexdigest(), content_type="application/octet-stream",
                                       timestamp=T0 + timedelta(minutes=i), group=group, status=UploadStatus.STORED)
        file_write(bucket=Bucket.UPLOADS, file_id=upload.id, filename=upload.filename, chunks=iter(data_blocks))
    return group


def test_exporting_a_group_over_100_mb_keeps_server_memory_bounded():
    pool = Pool.objects.create(name="big-pool")
    exporter = make_user("bulk-exporter")
    Membership.objects.create(pool=pool, user=exporter, role=Role.EXPORTER)
    group = _big_group(pool)
    headers = {"Authorization": f"Bearer {token_pair_issue(user=exporter)['access']}"}
    process, base = live.start_web()
    try:
        server = psutil.Process(process.pid)
        with httpx.Client(base_url=base, headers=headers, timeout=300) as http:
            lease_id = http.post(f"/api/v1/groups/{group.id}/claim").json()["lease_id"]
            # Warm up (imports, connection pools, a first small archive read), then take the baseline.
            with http.stream("GET", f"/api/v1/groups/{group.id}/archive", params={"lease": lease_id}) as warm:
                next(warm.iter_bytes())
            baseline = server.memory_info().rss
            peak = baseline
            done = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, server.memory_info().rss)
                    done.wait(0.02)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            received = 0
            with http.stream("GET", f"/api/v1/groups/{group.id}/archive", params={"lease": lease_id}) as response:
                assert response.status_code == 200
                for chunk in response.iter_bytes(256 * 1024):
                    received += len(chunk)
            done.set()
            sampler.join()
        assert received == int(response.headers["content-length"])
        assert received > FILES * FILE_BYTES > 100 * MB
        growth = peak - baseline
        print(f"archive of {received / MB:.0f} MB: server RSS grew {growth / MB:.1f} MB")
        assert growth < 25 * MB, f"server RSS grew {growth / MB:.0f} MB while streaming {received / MB:.0f} MB"
    finally:
        live.stop(process)
