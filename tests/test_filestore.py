"""The one file-store API: both buckets round-trip, reads are checked, any byte range reads alone."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from uuid import uuid4

import pytest

from poolhub.filestore import (
    GRIDFS_CHUNK_BYTES,
    Bucket,
    FileCorrupt,
    FileMissing,
    file_chunks,
    file_delete,
    file_intact,
    file_open,
    file_read,
    file_write,
    files_open,
    files_stored_bytes,
    mongo_db,
)

SIZE = 3 * GRIDFS_CHUNK_BYTES + 1234  # four chunks, the last one short


@pytest.fixture(autouse=True)
def _clean_buckets() -> Iterator[None]:
    """Empty buckets before (other tests may leave files) and after."""
    def clean() -> None:
        for bucket in Bucket:
            mongo_db()[f"{bucket}.files"].delete_many({})
            mongo_db()[f"{bucket}.chunks"].delete_many({})

    clean()
    yield
    clean()


def pieces(data: bytes, size: int = 100_000) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


@pytest.mark.parametrize("bucket", list(Bucket))
def test_both_buckets_round_trip_byte_exact_with_length_and_sha256_recorded(bucket: Bucket) -> None:
    data = os.urandom(SIZE)
    file_id = uuid4()
    written = file_write(bucket=bucket, file_id=file_id, filename="a.bin", chunks=pieces(data), metadata={"k": "v"})
    stored = file_open(bucket=bucket, file_id=file_id)
    assert stored == written
    assert (stored.length, stored.sha256, stored.filename, stored.metadata) == (
        SIZE, hashlib.sha256(data).hexdigest(), "a.bin", {"k": "v"})
    assert b"".join(file_read(stored=stored)) == data
    assert b"".join(file_chunks(bucket=bucket, file_id=str(file_id))) == data
    assert file_intact(bucket=bucket, file_id=file_id, sha256=hashlib.sha256(data).hexdigest())
    assert files_stored_bytes(bucket=bucket) == SIZE
    other = Bucket.RESULTS if bucket is Bucket.UPLOADS else Bucket.UPLOADS
    with pytest.raises(FileMissing):
        file_open(bucket=other, file_id=file_id)  # the buckets are separate

    file_delete(bucket=bucket, file_id=file_id)
    with pytest.raises(FileMissing):
        file_chunks(bucket=bucket, file_id=file_id)
    assert mongo_db()[f"{bucket}.chunks"].count_documents({}) == 0
    assert files_stored_bytes(bucket=bucket) == 0
    file_delete(bucket=bucket, file_id=file_id)  # deleting what is gone is no error


@pytest.mark.parametrize(("start", "end"), [
    (0, 1), (0, GRIDFS_CHUNK_BYTES), (GRIDFS_CHUNK_BYTES - 1, GRIDFS_CHUNK_BYTES + 1),
    (GRIDFS_CHUNK_BYTES, 2 * GRIDFS_CHUNK_BYTES), (12345, SIZE - 12345), (SIZE - 1, SIZE), (SIZE, SIZE), (0, SIZE),
])
def test_any_range_reads_exactly_its_bytes(start: int, end: int) -> None:
    data = os.urandom(SIZE)
    stored = file_write(bucket=Bucket.UPLOADS, file_id=uuid4(), filename="a", chunks=[data])
    assert b"".join(file_read(stored=stored, start=start, end=end)) == data[start:end]


def test_a_range_never_reads_the_chunks_before_it() -> None:
    data = os.urandom(SIZE)
    stored = file_write(bucket=Bucket.UPLOADS, file_id=uuid4(), filename="a", chunks=[data])
    mongo_db()[f"{Bucket.UPLOADS}.chunks"].delete_many({"files_id": stored.file_id, "n": {"$lt": 2}})
    assert b"".join(file_read(stored=stored, start=2 * GRIDFS_CHUNK_BYTES + 7)) == data[2 * GRIDFS_CHUNK_BYTES + 7:]


@pytest.mark.parametrize("bucket", list(Bucket))
def test_the_checked_reader_refuses_a_file_with_a_missing_chunk(bucket: Bucket) -> None:
    data = os.urandom(SIZE)
    file_id = uuid4()
    file_write(bucket=bucket, file_id=file_id, filename="a", chunks=[data])
    mongo_db()[f"{bucket}.chunks"].delete_one({"files_id": str(file_id), "n": 1})
    with pytest.raises(FileCorrupt, match="missing chunk 1"):
        b"".join(file_chunks(bucket=bucket, file_id=file_id))
    assert not file_intact(bucket=bucket, file_id=file_id, sha256=hashlib.sha256(data).hexdigest())


def test_the_checked_reader_refuses_a_missing_last_chunk() -> None:
    data = os.urandom(SIZE)
    stored = file_write(bucket=Bucket.UPLOADS, file_id=uuid4(), filename="a", chunks=[data])
    mongo_db()[f"{Bucket.UPLOADS}.chunks"].delete_one({"files_id": stored.file_id, "n": 3})
    with pytest.raises(FileCorrupt, match="missing chunk 3"):
        b"".join(file_read(stored=stored, start=SIZE - 10))


def test_the_checked_reader_refuses_a_chunk_of_the_wrong_size_and_other_bytes() -> None:
    data = os.urandom(SIZE)
    stored = file_write(bucket=Bucket.RESULTS, file_id=uuid4(), filename="a", chunks=[data])
    chunks = mongo_db()[f"{Bucket.RESULTS}.chunks"]
    chunks.update_one({"files_id": stored.file_id, "n": 2}, {"$set": {"data": b"short"}})
    with pytest.raises(FileCorrupt, match="chunk 2 holds 5 bytes"):
        b"".join(file_read(stored=stored))
    chunks.update_one({"files_id": stored.file_id, "n": 2}, {"$set": {"data": b"x" * GRIDFS_CHUNK_BYTES}})
    with pytest.raises(FileCorrupt, match="sha256"):
        b"".join(file_read(stored=stored))  # same sizes, other bytes: the recorded digest catches it


def test_a_write_that_fails_midway_leaves_no_file_and_no_chunks() -> None:
    def failing() -> Iterator[bytes]:
        yield os.urandom(2 * GRIDFS_CHUNK_BYTES * 4)
        raise OSError("the source broke")

    file_id = uuid4()
    with pytest.raises(OSError, match="the source broke"):
        file_write(bucket=Bucket.UPLOADS, file_id=file_id, filename="a", chunks=failing())
    with pytest.raises(FileMissing):
        file_open(bucket=Bucket.UPLOADS, file_id=file_id)
    assert mongo_db()[f"{Bucket.UPLOADS}.chunks"].count_documents({}) == 0


def test_files_open_and_stored_bytes_cover_only_complete_files() -> None:
    ids = [uuid4() for _ in range(3)]
    for n, file_id in enumerate(ids[:2]):
        file_write(bucket=Bucket.UPLOADS, file_id=file_id, filename="a", chunks=[b"x" * (n + 10)])
    mongo_db()[f"{Bucket.UPLOADS}.chunks"].insert_one({"files_id": str(ids[2]), "n": 0, "data": b"orphan"})
    assert set(files_open(bucket=Bucket.UPLOADS, file_ids=ids)) == {str(ids[0]), str(ids[1])}
    assert files_stored_bytes(bucket=Bucket.UPLOADS) == 21
    assert files_stored_bytes(bucket=Bucket.UPLOADS, file_ids=[ids[1], ids[2]]) == 11


@pytest.mark.parametrize("fail_source", [False, True])
def test_writing_an_id_that_is_already_stored_leaves_the_stored_file_whole(fail_source: bool) -> None:
    data = os.urandom(SIZE)
    file_id = uuid4()
    file_write(bucket=Bucket.UPLOADS, file_id=file_id, filename="a.bin", chunks=pieces(data))

    def again() -> Iterator[bytes]:
        yield os.urandom(GRIDFS_CHUNK_BYTES)
        if fail_source:
            raise OSError("the source broke")

    with pytest.raises(OSError):
        file_write(bucket=Bucket.UPLOADS, file_id=file_id, filename="b.bin", chunks=again())
    assert file_intact(bucket=Bucket.UPLOADS, file_id=file_id, sha256=hashlib.sha256(data).hexdigest())
