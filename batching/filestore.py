"""Result bytes in GridFS, and reading stored uploads back for the archive.

Results live in their own bucket under the result's id (as a string). Writes go chunk by chunk
(GridFS buffers one chunk), so memory stays bounded whatever the size.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO
from uuid import UUID

import gridfs
from gridfs import GridOut
from pymongo.errors import PyMongoError

from poolhub.errors import Unavailable
from poolhub.filestore import bucket

RESULTS_BUCKET = "results"
CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class StoredBytes:
    file_id: str
    size: int
    sha256: str


def result_write(*, result_id: UUID, source: IO[bytes], filename: str) -> StoredBytes:
    digest, size = hashlib.sha256(), 0
    try:
        with bucket(RESULTS_BUCKET).open_upload_stream_with_id(str(result_id), filename or "result.bin") as stream:
            while chunk := source.read(CHUNK_BYTES):
                digest.update(chunk)
                stream.write(chunk)
                size += len(chunk)
    except PyMongoError as exc:
        result_delete(result_id=result_id)
        raise Unavailable("the file store is unavailable; post the result again") from exc
    return StoredBytes(file_id=str(result_id), size=size, sha256=digest.hexdigest())


def result_delete(*, result_id: UUID) -> None:
    # Nothing was written, or the store is down: an orphan chunk set is harmless.
    with contextlib.suppress(gridfs.errors.NoFile, PyMongoError):
        bucket(RESULTS_BUCKET).delete(str(result_id))


def result_open(*, result_id: UUID) -> GridOut:
    try:
        return bucket(RESULTS_BUCKET).open_download_stream(str(result_id))
    except gridfs.errors.NoFile as exc:
        raise Unavailable("the result's bytes are not readable right now") from exc
    except PyMongoError as exc:
        raise Unavailable("the file store is unavailable") from exc


def upload_open(*, upload_id: UUID) -> GridOut:
    """A stored upload's bytes, as the uploads app wrote them."""
    from uploads.storage import upload_file_open  # the uploads app owns its bucket and id convention

    try:
        return upload_file_open(upload_id=upload_id)
    except gridfs.errors.NoFile as exc:
        raise Unavailable("a stored upload's bytes are missing from the file store") from exc
    except PyMongoError as exc:
        raise Unavailable("the file store is unavailable") from exc


def read_chunks(grid_out: GridOut) -> Iterator[bytes]:
    """One GridFS chunk at a time: memory holds a chunk, never the file."""
    try:
        while chunk := grid_out.readchunk():
            yield chunk
    finally:
        grid_out.close()
