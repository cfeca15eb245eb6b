"""Lifecycle fixtures: a clean file store per test and helpers that run whole rounds through the API."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from poolhub.filestore import Bucket, mongo_db
from tests.uploads.conftest import payload, post_upload

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(autouse=True)
def _clean_filestore() -> Iterator[None]:
    yield
    db = mongo_db()
    for bucket in Bucket:
        db[f"{bucket}.files"].delete_many({})
        db[f"{bucket}.chunks"].delete_many({})


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def in_store(bucket: Bucket, file_id: Any) -> tuple[int, int]:
    """(files documents, chunks) the file store holds for this id: checked in the store itself."""
    db = mongo_db()
    return (db[f"{bucket}.files"].count_documents({"_id": str(file_id)}),
            db[f"{bucket}.chunks"].count_documents({"files_id": str(file_id)}))


def upload(client: Any, pool: Any, size: int, *, seed: int = 0, at: datetime | None = None) -> Any:
    return post_upload(client, pool, payload(size, seed=seed), timestamp=iso(at or NOW - timedelta(minutes=5)))


def round_with_result(api: Any, pool: Any, contributor: Any, exporter: Any, *, at: datetime, seed: int,
                      result: bytes, on_commit: Any) -> tuple[str, str]:
    """One whole round through the API: an upload in the window of `at` (stored by its task, run
    on commit), closed, claimed, a result posted. Returns (upload id, result id)."""
    with on_commit(execute=True):
        response = upload(api(contributor), pool, 2000, seed=seed, at=at)
    assert response.status_code == 202, response.json()
    body = response.json()
    group = body["group"]
    assert api(exporter).post(f"/api/v1/groups/{group}/close").status_code == 200
    lease = api(exporter).post(f"/api/v1/groups/{group}/claim")
    assert lease.status_code == 200, lease.json()
    handle = io.BytesIO(result)
    handle.name = "result.bin"
    posted = api(exporter).post(f"/api/v1/groups/{group}/result",
                                {"file": handle, "lease_id": lease.json()["lease_id"]}, format="multipart")
    assert posted.status_code == 201, posted.json()
    return body["id"], posted.json()["id"]
