"""The permanent file store: GridFS on MongoDB (SecantusDB when embedded), and the only module that
touches it. Every write, checked read, delete and stream of a stored file goes through here.

Two buckets: `Bucket.UPLOADS` (each file under its upload's id) and `Bucket.RESULTS` (under the
result's id); a file id is the id as a string. Files are in GridFS's layout (so any GridFS reader
works), with one extra field on the files document: `sha256`, the digest of the bytes as written.

Reads are checked: every chunk present, in order and of the size the layout implies, the total the
recorded length, and (when the whole file is read) the bytes hash to the recorded sha256. A read that
finds anything else raises `FileCorrupt` instead of handing back wrong bytes. Any byte offset is read
without touching earlier chunks (the chunk number is computed from the offset).

Errors are `FileStoreError` (an `OSError`): `FileMissing` (no such file), `FileCorrupt`, and
`FileStoreUnavailable` (the store itself failed; the driver's error is its cause).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import IO, Any, cast
from uuid import UUID

import pymongo
from bson.binary import Binary
from django.conf import settings
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import PyMongoError

GRIDFS_CHUNK_BYTES = 255 * 1024  # GridFS's default chunk size, so any GridFS reader works
CHUNKS_PER_INSERT = 4  # GridFS chunks per read batch (about 1 MB per round trip)
READ_BYTES = 1024 * 1024  # what the chunk helpers read from a file-like source at a time
IDS_PER_QUERY = 1000


class Bucket(StrEnum):
    UPLOADS = "uploads"
    RESULTS = "results"


class FileStoreError(OSError):
    """Anything that keeps a stored file from being written or read back whole."""


class FileMissing(FileStoreError):
    """No such file in the bucket (never written, deleted, or a write that never finished)."""


class FileCorrupt(FileStoreError):
    """The stored file is not what was written: a chunk is missing, out of order or of the wrong
    size, the total differs from the recorded length, or the bytes' sha256 from the recorded one."""


class FileStoreUnavailable(FileStoreError):
    """The file store did not answer (or refused); try again later."""


@dataclass(frozen=True)
class StoredFile:
    """A stored file's files document: what a checked read holds the chunks to."""

    bucket: Bucket
    file_id: str
    length: int
    chunk_size: int
    sha256: str  # "" for a file written before the digest was recorded
    filename: str
    uploaded_at: datetime
    metadata: dict[str, Any]


@lru_cache(maxsize=1)
def mongo_client() -> pymongo.MongoClient[dict[str, object]]:
    return pymongo.MongoClient(settings.MONGO_URL, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000,
                               socketTimeoutMS=60000, retryWrites=True)


def mongo_db() -> Database[dict[str, object]]:
    return mongo_client()[settings.MONGO_DB]


def _files(bucket: Bucket) -> Collection[dict[str, object]]:
    return mongo_db()[f"{bucket}.files"]


def _chunks(bucket: Bucket) -> Collection[dict[str, object]]:
    return mongo_db()[f"{bucket}.chunks"]


def _id(file_id: UUID | str) -> str:
    return str(file_id)


_INDEXED: set[Bucket] = set()


def _indexes_ensure(bucket: Bucket) -> None:
    """GridFS's two indexes, created once per process and bucket (create_index is idempotent).

    pymongo's GridIn checks for them before every new file with an unfiltered `find_one` on the
    chunks collection; SecantusDB answers that by decoding every stored chunk, so each write
    cost time in proportion to all the bytes already stored (BENCHMARKS.md).
    """
    if bucket in _INDEXED:
        return
    _files(bucket).create_index([("filename", 1), ("uploadDate", 1)])
    _chunks(bucket).create_index([("files_id", 1), ("n", 1)], unique=True)
    _INDEXED.add(bucket)


def _stored(bucket: Bucket, document: dict[str, Any]) -> StoredFile:
    uploaded = document.get("uploadDate")
    return StoredFile(
        bucket=bucket, file_id=str(document["_id"]), length=int(document["length"]),
        chunk_size=int(document.get("chunkSize") or GRIDFS_CHUNK_BYTES),
        sha256=str(document.get("sha256") or ""), filename=str(document.get("filename") or ""),
        uploaded_at=(uploaded.replace(tzinfo=uploaded.tzinfo or UTC) if isinstance(uploaded, datetime)
                     else datetime.fromtimestamp(0, UTC)),
        metadata=dict(document.get("metadata") or {}),
    )


def _now_ms() -> datetime:
    """Now, to the millisecond BSON keeps."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


# --- write ------------------------------------------------------------------------------------

def io_chunks(source: IO[bytes], *, chunk_bytes: int = READ_BYTES) -> Iterator[bytes]:
    """A file-like source as chunks for `file_write`."""
    while chunk := source.read(chunk_bytes):
        yield chunk


def file_write(*, bucket: Bucket, file_id: UUID | str, filename: str, chunks: Iterable[bytes],
               metadata: dict[str, Any] | None = None) -> StoredFile:
    """Write one file in GridFS's layout, recording its length and sha256 (`files_write` of one file).

    Not through GridIn: it buffers up to 48 MB of chunk documents before inserting them. The
    files document is written last, so a crash leaves only chunks (no file: `file_delete` clears
    them); on any error here the chunks written so far are removed before the error goes on.
    Raises FileStoreUnavailable when the store fails (errors of `chunks` itself go on unchanged).
    """
    outcome = files_write(bucket=bucket, files=[FileToWrite(file_id=file_id, filename=filename, chunks=chunks,
                                                            metadata=metadata or {})])[_id(file_id)]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


@dataclass(frozen=True)
class FileToWrite:
    """One file for `files_write`."""

    file_id: UUID | str
    filename: str
    chunks: Iterable[bytes]
    metadata: dict[str, Any]


BATCH_INSERT_BYTES = 4 * 1024 * 1024  # chunk documents per insert_many in `files_write`, in bytes


def files_write(*, bucket: Bucket, files: Iterable[FileToWrite]) -> dict[str, StoredFile | Exception]:
    """Write several files as `file_write` does, their chunk documents sharing `insert_many` calls
    (about BATCH_INSERT_BYTES each, never a whole file in memory) and their files documents one
    `insert_many` at the end. Per file id: its StoredFile, or the error its own `chunks` raised
    (that file's chunks are removed; the others go on). A store failure removes the chunks of
    every file in the call and raises FileStoreUnavailable."""
    outcome: dict[str, StoredFile | Exception] = {}
    documents: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []
    pending_bytes = 0
    keys: list[str] = []

    def flush() -> None:
        nonlocal pending_bytes
        if pending:
            _chunks(bucket).insert_many(pending, ordered=False)
            pending.clear()
            pending_bytes = 0

    try:
        _indexes_ensure(bucket)
        for file in files:
            key = _id(file.file_id)
            keys.append(key)
            digest, buffer, n, length = hashlib.sha256(), bytearray(), 0, 0
            mark = len(pending)  # this file's chunk documents start here in `pending`
            try:
                for piece in file.chunks:
                    length += len(piece)
                    digest.update(piece)
                    buffer += piece
                    while len(buffer) >= GRIDFS_CHUNK_BYTES:
                        pending.append({"files_id": key, "n": n, "data": Binary(bytes(buffer[:GRIDFS_CHUNK_BYTES]))})
                        del buffer[:GRIDFS_CHUNK_BYTES]
                        n, pending_bytes = n + 1, pending_bytes + GRIDFS_CHUNK_BYTES
                        if pending_bytes >= BATCH_INSERT_BYTES:
                            flush()
                            mark = 0
            except PyMongoError:
                raise
            except Exception as exc:  # this file's source failed: drop its chunks, go on with the others
                del pending[mark:]
                pending_bytes = sum(len(document["data"]) for document in pending)
                _unfinished_chunks_drop(bucket, [key])
                outcome[key] = exc
                continue
            if buffer:
                pending.append({"files_id": key, "n": n, "data": Binary(bytes(buffer))})
                pending_bytes += len(buffer)
            documents.append({
                "_id": key, "length": length, "chunkSize": GRIDFS_CHUNK_BYTES, "uploadDate": _now_ms(),
                "filename": file.filename, "metadata": file.metadata, "sha256": digest.hexdigest()})
            if pending_bytes >= BATCH_INSERT_BYTES:
                flush()
        flush()
        if documents:
            _files(bucket).insert_many(documents, ordered=False)
    except BaseException as exc:
        with contextlib.suppress(PyMongoError):
            _unfinished_chunks_drop(bucket, keys)
        if isinstance(exc, PyMongoError):
            raise FileStoreUnavailable(f"the file store refused a batch of {len(keys)} file(s): {exc}") from exc
        raise
    for document in documents:
        outcome[str(document["_id"])] = _stored(bucket, document)
    return outcome


def _unfinished_chunks_drop(bucket: Bucket, keys: list[str]) -> None:
    """Remove the chunks of those of `keys` that have no files document: a failed write of an id
    that is already stored (a retry, a duplicate) must not take the stored file's chunks with it."""
    stored = {document["_id"] for document in _files(bucket).find({"_id": {"$in": keys}}, {"_id": 1})}
    unfinished = [key for key in keys if key not in stored]
    if unfinished:
        _chunks(bucket).delete_many({"files_id": {"$in": unfinished}})


# --- read -------------------------------------------------------------------------------------

def file_open(*, bucket: Bucket, file_id: UUID | str) -> StoredFile:
    """The stored file's record (length, sha256, ...). Raises FileMissing when there is none."""
    try:
        document = _files(bucket).find_one({"_id": _id(file_id)})
    except PyMongoError as exc:
        raise FileStoreUnavailable("the file store is unavailable") from exc
    if document is None:
        raise FileMissing(f"no file {file_id} in {bucket}")
    return _stored(bucket, document)


def files_open(*, bucket: Bucket, file_ids: Iterable[UUID | str]) -> dict[str, StoredFile]:
    """The records of those of these files that are stored, by file id (absent ones are left out)."""
    wanted = list(dict.fromkeys(_id(file_id) for file_id in file_ids))
    found: dict[str, StoredFile] = {}
    try:
        for start in range(0, len(wanted), IDS_PER_QUERY):
            for document in _files(bucket).find({"_id": {"$in": wanted[start:start + IDS_PER_QUERY]}}):
                stored = _stored(bucket, document)
                found[stored.file_id] = stored
    except PyMongoError as exc:
        raise FileStoreUnavailable("the file store is unavailable") from exc
    return found


def file_read(*, stored: StoredFile, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Bytes `start` up to (not including) `end` of a stored file, checked, GridFS chunk by chunk.

    Only the chunks that hold the range are read (from the one holding `start`), a few per round
    trip, so memory stays small and an offset costs no reading of what comes before it. Raises
    FileCorrupt while reading if a chunk is missing, out of order or of the wrong size, and at
    the end of a whole-file read if the bytes' sha256 is not the recorded one.
    """
    end = stored.length if end is None else end
    if not 0 <= start <= end <= stored.length:
        raise ValueError(f"range {start}-{end} is outside {stored.length} bytes")
    return _checked(stored=stored, start=start, end=end)


def _checked(*, stored: StoredFile, start: int, end: int) -> Iterator[bytes]:
    size = stored.chunk_size
    whole = start == 0 and end == stored.length
    digest = hashlib.sha256() if whole and stored.sha256 else None
    last_n = (stored.length - 1) // size if stored.length else -1
    first, final = start // size, (end - 1) // size
    expected = first
    if start == end:
        return
    try:
        cursor = _chunks(stored.bucket).find(
            {"files_id": stored.file_id, "n": {"$gte": first, "$lte": final}}, {"data": 1, "n": 1},
            sort=[("n", 1)], batch_size=CHUNKS_PER_INSERT)
        for document in cursor:
            n = int(cast(int, document["n"]))
            if n != expected:
                raise FileCorrupt(f"{stored.bucket}/{stored.file_id} is missing chunk {expected}")
            data = bytes(cast(bytes, document["data"]))
            want = size if n < last_n else stored.length - last_n * size
            if len(data) != want:
                raise FileCorrupt(f"{stored.bucket}/{stored.file_id} chunk {n} holds {len(data)} bytes, not {want}")
            expected += 1
            if digest is not None:
                digest.update(data)
            offset = n * size
            yield data[max(0, start - offset):end - offset]
    except PyMongoError as exc:
        raise FileStoreUnavailable("the file store is unavailable") from exc
    if expected != final + 1:
        raise FileCorrupt(f"{stored.bucket}/{stored.file_id} is missing chunk {expected}")
    if digest is not None and digest.hexdigest() != stored.sha256:
        raise FileCorrupt(f"{stored.bucket}/{stored.file_id}'s bytes do not hash to the recorded sha256")


def file_chunks(*, bucket: Bucket, file_id: UUID | str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """`file_read` of the file with this id; raises FileMissing now (before any byte) if there is none."""
    return file_read(stored=file_open(bucket=bucket, file_id=file_id), start=start, end=end)


def file_intact(*, bucket: Bucket, file_id: UUID | str, sha256: str,
                on_chunk: Callable[[], object] | None = None) -> bool:
    """Whether the store holds this file whole with exactly these bytes (read back in full and
    checked). False when it is absent, corrupt, or holds other bytes; store failures raise.
    `on_chunk` runs after each chunk (a long read-back can renew a lock with it)."""
    try:
        stored = file_open(bucket=bucket, file_id=file_id)
        if stored.sha256 and stored.sha256 != sha256:
            return False  # recorded as other bytes: no need to read them back
        digest = hashlib.sha256()
        for chunk in file_read(stored=stored):
            digest.update(chunk)
            if on_chunk is not None:
                on_chunk()
    except (FileMissing, FileCorrupt):
        return False
    return digest.hexdigest() == sha256


# --- delete and usage -------------------------------------------------------------------------

def file_delete(*, bucket: Bucket, file_id: UUID | str) -> None:
    """Remove a file's record and every chunk, including orphans of an interrupted write.
    Deleting what is not there is no error. Raises FileStoreUnavailable when the store fails."""
    key = _id(file_id)
    try:
        _files(bucket).delete_one({"_id": key})
        _chunks(bucket).delete_many({"files_id": key})
    except PyMongoError as exc:
        raise FileStoreUnavailable(f"could not delete {bucket}/{key}") from exc


def files_stored_bytes(*, bucket: Bucket, file_ids: Iterable[UUID | str] | None = None) -> int:
    """Bytes the bucket holds in complete files: all of them, or only those of `file_ids`."""
    if file_ids is not None:
        return sum(stored.length for stored in files_open(bucket=bucket, file_ids=file_ids).values())
    try:
        return sum(int(cast(int, document.get("length") or 0))
                   for document in _files(bucket).find({}, {"length": 1}))
    except PyMongoError as exc:
        raise FileStoreUnavailable("the file store is unavailable") from exc
