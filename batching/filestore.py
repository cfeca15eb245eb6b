"""Result bytes in GridFS, and reading stored uploads back for the archive.

Results live in their own bucket under the result's id (as a string). Writes go a few GridFS
chunks at a time (poolhub.filestore.gridfs_write), so memory stays bounded whatever the size.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, cast
from uuid import UUID

import gridfs
from pymongo.errors import PyMongoError

from poolhub.errors import Unavailable
from poolhub.filestore import bucket, gridfs_write, mongo_db

RESULTS_BUCKET = "results"
CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class StoredBytes:
    file_id: str
    size: int
    sha256: str


def result_write(*, result_id: UUID, source: IO[bytes], filename: str) -> StoredBytes:
    digest = hashlib.sha256()

    def pieces() -> Iterator[bytes]:
        while chunk := source.read(CHUNK_BYTES):
            digest.update(chunk)
            yield chunk

    try:
        size = gridfs_write(bucket_name=RESULTS_BUCKET, file_id=str(result_id), filename=filename or "result.bin",
                            chunks=pieces())
    except PyMongoError as exc:
        result_delete(result_id=result_id)
        raise Unavailable("the file store is unavailable; post the result again") from exc
    return StoredBytes(file_id=str(result_id), size=size, sha256=digest.hexdigest())


def result_delete(*, result_id: UUID) -> None:
    # Nothing was written, or the store is down: an orphan chunk set is harmless.
    with contextlib.suppress(gridfs.errors.NoFile, PyMongoError):
        bucket(RESULTS_BUCKET).delete(str(result_id))


def _chunks(*, bucket_name: str, file_id: str, what: str) -> Iterator[bytes]:
    """A GridFS file's bytes, chunk by chunk, read straight from the bucket's chunks collection.

    GridOut reads through a cursor whose batches reach 16 MB; here a batch is a few GridFS chunks
    (about 1 MB), so a file or an archive of any size streams through a small, fixed buffer.
    """
    expected = 0
    try:
        cursor = mongo_db()[f"{bucket_name}.chunks"].find(
            {"files_id": file_id}, {"data": 1, "n": 1}, sort=[("n", 1)], batch_size=4)
        for document in cursor:
            if document["n"] != expected:
                raise Unavailable(f"{what} is missing chunk {expected} in the file store")
            expected += 1
            yield bytes(cast(bytes, document["data"]))
    except PyMongoError as exc:
        raise Unavailable("the file store is unavailable") from exc
    if expected == 0:
        raise Unavailable(f"{what} has no bytes in the file store")


def upload_chunks(*, upload_id: UUID) -> Iterator[bytes]:
    from uploads.storage import UPLOADS_BUCKET, upload_file_id  # the uploads app owns the convention

    return _chunks(bucket_name=UPLOADS_BUCKET, file_id=upload_file_id(upload_id), what=f"upload {upload_id}")


def uploads_missing(*, upload_ids: list[UUID]) -> list[UUID]:
    """Which of these stored uploads have no file in the bucket (checked before an archive starts,
    so the exporter gets a 503 rather than a truncated archive)."""
    from uploads.storage import UPLOADS_BUCKET, upload_file_id

    wanted = {upload_file_id(upload_id): upload_id for upload_id in upload_ids}
    present: set[str] = set()
    try:
        files = mongo_db()[f"{UPLOADS_BUCKET}.files"]
        for start in range(0, len(upload_ids), 1000):
            batch = list(wanted)[start:start + 1000]
            present.update(str(doc["_id"]) for doc in files.find({"_id": {"$in": batch}}, {"_id": 1}))
    except PyMongoError as exc:
        raise Unavailable("the file store is unavailable") from exc
    return [upload_id for file_id, upload_id in wanted.items() if file_id not in present]


def result_chunks(*, result_id: UUID) -> Iterator[bytes]:
    """Checked before the response starts, so a missing file is a 503, not a truncated body."""
    try:
        present = mongo_db()[f"{RESULTS_BUCKET}.files"].find_one({"_id": str(result_id)}, {"_id": 1})
    except PyMongoError as exc:
        raise Unavailable("the file store is unavailable") from exc
    if present is None:
        raise Unavailable("the result's bytes are not readable right now")
    return _chunks(bucket_name=RESULTS_BUCKET, file_id=str(result_id), what=f"result {result_id}")
