"""Uploads in the permanent file store: one GridFS bucket, each file under its upload's id.

Other apps (the rounds' archives) read uploads through `upload_file_open`; nothing else should
need the bucket name, but it is `UPLOADS_BUCKET` ("uploads") and the GridFS file `_id` is
`str(upload.id)`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

import gridfs
from bson.binary import Binary
from gridfs import GridOut

from poolhub.filestore import bucket, mongo_db

UPLOADS_BUCKET = "uploads"
GRIDFS_CHUNK_BYTES = 255 * 1024
READ_BYTES = 1024 * 1024
_CHUNKS_PER_INSERT = 4  # about 1 MB per round trip


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
                                                 batch_size=_CHUNKS_PER_INSERT)
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


_INDEXED: set[str] = set()


def _ensure_indexes() -> None:
    """GridFS's two indexes, created once per process (create_index is idempotent).

    pymongo's GridIn checks for them before every new file with an unfiltered `find_one` on the
    chunks collection; SecantusDB answers that by decoding every stored chunk, so each write
    cost time in proportion to all the bytes already stored.
    """
    if UPLOADS_BUCKET in _INDEXED:
        return
    db = mongo_db()
    db[f"{UPLOADS_BUCKET}.files"].create_index([("filename", 1), ("uploadDate", 1)])
    db[f"{UPLOADS_BUCKET}.chunks"].create_index([("files_id", 1), ("n", 1)], unique=True)
    _INDEXED.add(UPLOADS_BUCKET)


def upload_file_write(*, upload_id: UUID | str, filename: str, chunks: Iterable[bytes],
                      metadata: dict[str, Any]) -> None:
    """Write an upload's bytes under its id, in GridFS's layout, a few chunks per insert.

    Not through GridIn: it buffers up to 48 MB of chunk documents before inserting them. The
    files document is written last, so a crash leaves only chunks, which `upload_file_remove`
    clears before the next try.
    """
    _ensure_indexes()
    db = mongo_db()
    file_id = upload_file_id(upload_id)
    pending: list[dict[str, Any]] = []
    buffer = bytearray()
    n = length = 0

    def add(data: bytes) -> None:
        nonlocal n
        pending.append({"files_id": file_id, "n": n, "data": Binary(data)})
        n += 1
        if len(pending) >= _CHUNKS_PER_INSERT:
            db[f"{UPLOADS_BUCKET}.chunks"].insert_many(pending, ordered=True)
            pending.clear()

    try:
        for piece in chunks:
            length += len(piece)
            buffer += piece
            while len(buffer) >= GRIDFS_CHUNK_BYTES:
                add(bytes(buffer[:GRIDFS_CHUNK_BYTES]))
                del buffer[:GRIDFS_CHUNK_BYTES]
        if buffer:
            add(bytes(buffer))
        if pending:
            db[f"{UPLOADS_BUCKET}.chunks"].insert_many(pending, ordered=True)
        db[f"{UPLOADS_BUCKET}.files"].insert_one({
            "_id": file_id, "length": length, "chunkSize": GRIDFS_CHUNK_BYTES,
            "uploadDate": datetime.now(UTC), "filename": filename, "metadata": metadata})
    except BaseException:
        db[f"{UPLOADS_BUCKET}.chunks"].delete_many({"files_id": file_id})
        raise
