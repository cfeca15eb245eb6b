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

from batching.models import Group, Lease
from batching.selectors import group_failed_uploads, group_manifest
from poolhub.errors import Unavailable
from poolhub.filestore import Bucket, FileStoreError, StoredFile, file_read, files_open

logger = logging.getLogger(__name__)

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    mtime: float
    stored: StoredFile | None = None  # read from the file store
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
    try:
        stored = files_open(bucket=Bucket.UPLOADS, file_ids=[entry["id"] for entry in entries])
    except FileStoreError as exc:
        raise Unavailable("the file store is unavailable") from exc
    # Checked before the response starts, so the exporter gets a 503 rather than a truncated archive.
    missing = [entry["id"] for entry in entries
               if entry["id"] not in stored or stored[entry["id"]].length != entry["size"]]
    if missing:
        raise Unavailable("some stored uploads are not readable in the file store right now",
                          details={"uploads": missing})
    members += [
        Member(name=entry["path"], size=entry["size"], mtime=mtime, stored=stored[entry["id"]]) for entry in entries
    ]
    length = sum(len(m.header()) + m.size + _padding(m.size) for m in members) + len(END_OF_ARCHIVE)
    return Archive(members=members, length=length, filename=f"group-{group.id}.tar")


def archive_chunks(archive: Archive) -> Iterator[bytes]:
    for member in archive.members:
        yield member.header()
        if member.stored is None:
            yield member.data
        else:
            yield from file_read(stored=member.stored)  # checked: a damaged file aborts the response
        yield b"\0" * _padding(member.size)
    yield END_OF_ARCHIVE
