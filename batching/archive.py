"""A group's export archive: a tar stream, `manifest.json` first, then every stored upload.

Headers and the manifest are built up front (they are small); the files are read from GridFS a
chunk at a time while the response is sent, so memory does not grow with the group's size.
Each file sits at `files/<upload id>/<filename>`; the manifest names that `path`.
"""

from __future__ import annotations

import json
import logging
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from uuid import UUID

from batching.filestore import upload_chunks, uploads_missing
from batching.models import Group, Lease
from batching.selectors import group_failed_uploads, group_manifest
from poolhub.errors import Unavailable

logger = logging.getLogger(__name__)

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    mtime: float
    upload_id: UUID | None = None  # read from GridFS
    data: bytes = b""  # or inline (the manifest)

    def header(self) -> bytes:
        """Built when sent (and once to measure the archive), not kept: a group may hold many files."""
        return _header(self.name, self.size, self.mtime)


@dataclass(frozen=True)
class Archive:
    members: list[Member]
    length: int
    filename: str


def _header(name: str, size: int, mtime: float) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.type = size, mtime, 0o644, tarfile.REGTYPE
    info.uname = info.gname = "poolhub"
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def _padding(size: int) -> int:
    return -size % BLOCK


def _safe_name(filename: str) -> str:
    name = PurePosixPath(filename.replace("\\", "/")).name
    return name if name not in ("", ".", "..") else "file"


def group_archive(*, group: Group, lease: Lease) -> Archive:
    entries = group_manifest(group=group)
    for entry in entries:
        entry["path"] = f"files/{entry['id']}/{_safe_name(entry['filename'])}"
    manifest: dict[str, Any] = {
        "group": str(group.id), "pool": str(group.pool_id), "lease_id": str(lease.id),
        "window_start": group.window_start.isoformat(), "window_end": group.window_end.isoformat(),
        "uploads": entries, "failed": group_failed_uploads(group=group),
    }
    data = json.dumps(manifest, indent=1).encode()
    mtime = lease.created_at.timestamp()
    members = [Member(name="manifest.json", size=len(data), mtime=mtime, data=data)]
    members += [
        Member(name=entry["path"], size=entry["size"], mtime=mtime, upload_id=UUID(entry["id"])) for entry in entries
    ]
    missing = uploads_missing(upload_ids=[m.upload_id for m in members if m.upload_id is not None])
    if missing:
        raise Unavailable("some stored uploads are not readable in the file store right now",
                          details={"uploads": [str(upload_id) for upload_id in missing]})
    length = sum(len(m.header()) + m.size + _padding(m.size) for m in members) + len(END_OF_ARCHIVE)
    return Archive(members=members, length=length, filename=f"group-{group.id}.tar")


def _file_chunks(member: Member) -> Iterator[bytes]:
    assert member.upload_id is not None
    sent = 0
    for chunk in upload_chunks(upload_id=member.upload_id):
        sent += len(chunk)
        if sent > member.size:
            break
        yield chunk
    if sent != member.size:  # the promised length cannot be kept: abort rather than send a corrupt tar
        logger.error("upload %s holds %s bytes in GridFS, %s expected", member.upload_id, sent, member.size)
        raise OSError(f"upload {member.upload_id} is not intact in the file store")


def archive_chunks(archive: Archive) -> Iterator[bytes]:
    for member in archive.members:
        yield member.header()
        if member.upload_id is None:
            yield member.data
        else:
            yield from _file_chunks(member)
        yield b"\0" * _padding(member.size)
    yield END_OF_ARCHIVE
