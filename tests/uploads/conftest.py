"""Upload fixtures: a clean file store per test, and helpers that look everywhere for leftovers."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from poolhub.filestore import Bucket, mongo_db
from poolhub.redis import redis_client
from uploads.models import Event, Upload
from uploads.staging import LEDGER_KEY, PREFIX, staging_used_bytes

# A recent past time (whole seconds), so its window is open whatever day the tests run.
WHEN_DT = (datetime.now(UTC) - timedelta(minutes=5)).replace(microsecond=0)
WHEN = WHEN_DT.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(autouse=True)
def _clean_filestore() -> Iterator[None]:
    yield
    db = mongo_db()
    db[f"{Bucket.UPLOADS}.files"].delete_many({})
    db[f"{Bucket.UPLOADS}.chunks"].delete_many({})


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic bytes no type detector mistakes for a script or an executable."""
    block = hashlib.sha256(f"poolhub-{seed}".encode()).digest() * 4096
    data = (block * (size // len(block) + 1))[:size]
    return b"\x00" + data[1:] if size else b""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def named(data: bytes, name: str = "update.bin") -> io.BytesIO:
    handle = io.BytesIO(data)
    handle.name = name
    return handle


def post_upload(client: Any, pool: Any, data: bytes, *, timestamp: str | None = WHEN, sha256: str | None = None,
                name: str = "update.bin", headers: dict[str, str] | None = None) -> Any:
    form: dict[str, Any] = {"file": named(data, name)}
    if timestamp is not None:
        form["timestamp"] = timestamp
    if sha256 is not None:
        form["sha256"] = sha256
    return client.post(f"/api/v1/pools/{pool.id}/uploads", form, format="multipart", headers=headers or {})


def staged_keys() -> list[bytes]:
    return list(redis_client().scan_iter(match=f"{PREFIX}*:data"))


def gridfs_counts() -> tuple[int, int]:
    db = mongo_db()
    return (db[f"{Bucket.UPLOADS}.files"].count_documents({}), db[f"{Bucket.UPLOADS}.chunks"].count_documents({}))


def assert_nothing_left() -> None:
    """No row, no event, no staged bytes, no GridFS file."""
    assert Upload.objects.count() == 0
    assert Event.objects.filter(stream_type="upload").count() == 0
    assert staged_keys() == []
    assert staging_used_bytes() == 0
    assert redis_client().hlen(LEDGER_KEY) == 0
    assert gridfs_counts() == (0, 0)
