"""The permanent file store: GridFS on MongoDB (SecantusDB when embedded)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import gridfs
import pymongo
from bson.binary import Binary
from django.conf import settings
from pymongo.database import Database

GRIDFS_CHUNK_BYTES = 255 * 1024  # GridFS's default chunk size, so any GridFS reader works
CHUNKS_PER_INSERT = 4  # about 1 MB per round trip


@lru_cache(maxsize=1)
def mongo_client() -> pymongo.MongoClient[dict[str, object]]:
    return pymongo.MongoClient(settings.MONGO_URL, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000,
                               socketTimeoutMS=60000, retryWrites=True)


def mongo_db() -> Database[dict[str, object]]:
    return mongo_client()[settings.MONGO_DB]


def bucket(name: str = "fs") -> gridfs.GridFSBucket:
    """A GridFS bucket; uploads and results use their own bucket names."""
    return gridfs.GridFSBucket(mongo_db(), bucket_name=name)


_INDEXED: set[str] = set()


def gridfs_indexes_ensure(*, bucket_name: str) -> None:
    """GridFS's two indexes, created once per process and bucket (create_index is idempotent).

    pymongo's GridIn checks for them before every new file with an unfiltered `find_one` on the
    chunks collection; SecantusDB answers that by decoding every stored chunk, so each write
    cost time in proportion to all the bytes already stored (BENCHMARKS.md).
    """
    if bucket_name in _INDEXED:
        return
    db = mongo_db()
    db[f"{bucket_name}.files"].create_index([("filename", 1), ("uploadDate", 1)])
    db[f"{bucket_name}.chunks"].create_index([("files_id", 1), ("n", 1)], unique=True)
    _INDEXED.add(bucket_name)


def gridfs_write(*, bucket_name: str, file_id: str, filename: str, chunks: Iterable[bytes],
                 metadata: dict[str, Any] | None = None) -> int:
    """Write a file in GridFS's layout, a few chunks per insert; returns its length.

    Not through GridIn: it buffers up to 48 MB of chunk documents before inserting them. The
    files document is written last, so a crash leaves only chunks; on any error here the chunks
    written so far are removed before the error goes on.
    """
    gridfs_indexes_ensure(bucket_name=bucket_name)
    db = mongo_db()
    pending: list[dict[str, Any]] = []
    buffer = bytearray()
    n = length = 0

    def add(data: bytes) -> None:
        nonlocal n
        pending.append({"files_id": file_id, "n": n, "data": Binary(data)})
        n += 1
        if len(pending) >= CHUNKS_PER_INSERT:
            db[f"{bucket_name}.chunks"].insert_many(pending, ordered=True)
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
            db[f"{bucket_name}.chunks"].insert_many(pending, ordered=True)
        db[f"{bucket_name}.files"].insert_one({
            "_id": file_id, "length": length, "chunkSize": GRIDFS_CHUNK_BYTES,
            "uploadDate": datetime.now(UTC), "filename": filename, "metadata": metadata or {}})
    except BaseException:
        db[f"{bucket_name}.chunks"].delete_many({"files_id": file_id})
        raise
    return length
