"""Uploads in the permanent file store: one GridFS bucket, each file under its upload's id.

Other apps (the rounds' archives) read uploads through `upload_file_open`; nothing else should
need the bucket name, but it is `UPLOADS_BUCKET` ("uploads") and the GridFS file `_id` is
`str(upload.id)`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any, cast
from uuid import UUID

import gridfs
from gridfs import GridOut

from poolhub.filestore import CHUNKS_PER_INSERT, bucket, gridfs_write, mongo_db

UPLOADS_BUCKET = "uploads"
READ_BYTES = 1024 * 1024


def upload_file_id(upload_id: UUID | str) -> str:
    return str(upload_id)


def uploads_bucket() -> gridfs.GridFSBucket:
    return bucket(UPLOADS_BUCKET)


def upload_file_open(*, upload_id: UUID | str) -> GridOut:
    """A download stream of a stored upload (read it in chunks). Raises gridfs.NoFile if absent."""
    return uploads_bucket().open_download_stream(upload_file_id(upload_id))


def upload_file_iter(*, upload_id: UUID | str, chunk_bytes: int = READ_BYTES) -> Iterator[bytes]:
    """The stored bytes, chunk by chunk, straight from the chunks collection in small batches
    (GridOut's cursor batches reach 16 MB). Raises gridfs.NoFile now when there is no file."""
    db = mongo_db()
    file_id = upload_file_id(upload_id)
    if db[f"{UPLOADS_BUCKET}.files"].find_one({"_id": file_id}, {"_id": 1}) is None:
        raise gridfs.NoFile(f"no file {file_id} in {UPLOADS_BUCKET}")
    cursor = db[f"{UPLOADS_BUCKET}.chunks"].find({"files_id": file_id}, {"data": 1}, sort=[("n", 1)],
                                                 batch_size=CHUNKS_PER_INSERT)
    return (bytes(cast(bytes, document["data"])) for document in cursor)


def upload_file_info(*, upload_id: UUID | str) -> dict[str, Any] | None:
    """The GridFS files document of an upload, or None while it is not (completely) stored."""
    return mongo_db()[f"{UPLOADS_BUCKET}.files"].find_one({"_id": upload_file_id(upload_id)})


def upload_file_sha256(*, upload_id: UUID | str) -> str | None:
    """sha256 of what GridFS holds for this upload, read back in chunks; None if there is no file."""
    try:
        digest = hashlib.sha256()
        for chunk in upload_file_iter(upload_id=upload_id):
            digest.update(chunk)
        return digest.hexdigest()
    except gridfs.NoFile:
        return None


def upload_file_remove(*, upload_id: UUID | str) -> None:
    """Remove an upload's files document and every chunk, including orphans of an interrupted write."""
    db = mongo_db()
    file_id = upload_file_id(upload_id)
    db[f"{UPLOADS_BUCKET}.files"].delete_one({"_id": file_id})
    db[f"{UPLOADS_BUCKET}.chunks"].delete_many({"files_id": file_id})


def upload_file_write(*, upload_id: UUID | str, filename: str, chunks: Iterable[bytes],
                      metadata: dict[str, Any]) -> None:
    """Write an upload's bytes under its id (poolhub.filestore.gridfs_write: bounded memory; a
    crash leaves only chunks, which `upload_file_remove` clears before the next try)."""
    gridfs_write(bucket_name=UPLOADS_BUCKET, file_id=upload_file_id(upload_id), filename=filename,
                 chunks=chunks, metadata=metadata)
