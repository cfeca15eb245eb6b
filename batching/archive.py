"""A group's export archive: a tar stream, `manifest.json` first, then every stored upload.

The archive's bytes are the same on every request for the same group (while its stored uploads
stay the same): its layout (the tar headers, `manifest.json`) is built only from the group and
its stored files, with fixed modes, owner names and times (the window's end). So a byte range of
it means the same thing on every request, and its strong ETag is a digest of the manifest (which
names every file with its size and sha256) and the layout's version.

Headers and the manifest are measured up front (they are small; headers are rebuilt when sent,
not kept: a group may hold many files); the files are read from the file store a chunk at a time
while the response is sent, so memory does not grow with the group's size. Any offset is found
by arithmetic over the members' sizes and read from the file store from the chunk that holds it,
without reading what comes before it. Each file sits at `files/<upload id>/<filename>`; the
manifest names that `path`.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from batching.models import Group
from batching.selectors import group_failed_uploads, group_manifest
from poolhub.errors import Unavailable
from poolhub.filestore import Bucket, FileStoreError, StoredFile, file_read, files_open

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
LAYOUT_VERSION = "poolhub-archive-1"  # change it whenever the bytes for the same group change


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    mtime: int
    header_length: int
    stored: StoredFile | None = None  # read from the file store
    data: bytes = b""  # or inline (the manifest)

    def header(self) -> bytes:
        return _header(self.name, self.size, self.mtime)

    @property
    def span(self) -> int:
        return self.header_length + self.size + _padding(self.size)


@dataclass(frozen=True)
class Archive:
    members: list[Member]
    offsets: list[int]  # where each member's header starts
    length: int
    filename: str
    etag: str


def _header(name: str, size: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.type = size, mtime, 0o644, tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = "poolhub"
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def _member(*, name: str, size: int, mtime: int, stored: StoredFile | None = None, data: bytes = b"") -> Member:
    return Member(name=name, size=size, mtime=mtime, header_length=len(_header(name, size, mtime)), stored=stored,
                  data=data)


def _padding(size: int) -> int:
    return -size % BLOCK


def _safe_name(filename: str) -> str:
    name = PurePosixPath(filename.replace("\\", "/")).name
    return name if name not in ("", ".", "..") else "file"


def group_archive(*, group: Group) -> Archive:
    """The group's archive as it stands: its layout, length and ETag. 503 (before anything is sent)
    when a stored upload is not readable in the file store right now."""
    entries = group_manifest(group=group)
    for entry in entries:
        entry["path"] = f"files/{entry['id']}/{_safe_name(entry['filename'])}"
    manifest: dict[str, Any] = {
        "group": str(group.id), "pool": str(group.pool_id),
        "window_start": group.window_start.isoformat(), "window_end": group.window_end.isoformat(),
        "uploads": entries, "failed": group_failed_uploads(group=group),
    }
    data = json.dumps(manifest, indent=1).encode()
    mtime = int(group.window_end.timestamp())
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
    members = [_member(name="manifest.json", size=len(data), mtime=mtime, data=data)]
    members += [_member(name=entry["path"], size=entry["size"], mtime=mtime, stored=stored[entry["id"]])
                for entry in entries]
    offsets, position = [], 0
    for member in members:
        offsets.append(position)
        position += member.span
    etag = hashlib.sha256(LAYOUT_VERSION.encode() + b"\0" + data).hexdigest()
    return Archive(members=members, offsets=offsets, length=position + len(END_OF_ARCHIVE),
                   filename=f"group-{group.id}.tar", etag=etag)


def _member_read(member: Member, start: int, stop: int) -> Iterator[bytes]:
    """Bytes [start, stop) of one member's span (header, data, padding), offsets within the span."""
    if start >= stop:
        return
    header_end = member.header_length
    data_end = header_end + member.size
    if start < header_end:
        yield member.header()[start:min(stop, header_end)]
    if start < data_end and stop > header_end:
        first, last = max(start, header_end) - header_end, min(stop, data_end) - header_end
        if member.stored is None:
            yield member.data[first:last]
        else:  # checked: a damaged file aborts the response
            yield from file_read(stored=member.stored, start=first, end=last)
    if stop > data_end:
        yield b"\0" * (min(stop, member.span) - max(start, data_end))


def archive_read(archive: Archive, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
    """Bytes [start, stop) of the archive (default: all of it), reading only the members they cover."""
    stop = archive.length if stop is None else stop
    index = max(0, bisect.bisect_right(archive.offsets, start) - 1)
    for member, offset in zip(archive.members[index:], archive.offsets[index:], strict=True):
        if offset >= stop:
            return
        yield from _member_read(member, max(0, start - offset), min(stop - offset, member.span))
    end_offset = archive.length - len(END_OF_ARCHIVE)
    if stop > end_offset:
        yield END_OF_ARCHIVE[max(0, start - end_offset):stop - end_offset]
