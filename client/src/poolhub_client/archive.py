"""Reading a group's export archive: `manifest.json` first, then every stored file."""

from __future__ import annotations

import json
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def iter_members(path: str | Path) -> Iterator[tuple[str, IO[bytes]]]:
    """(name, readable stream) for each regular file of a tar (any compression) or zip archive."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.is_dir():
                    with archive.open(info) as handle:
                        yield info.filename, handle
        return
    with tarfile.open(path, mode="r:*") as archive:
        for member in archive:
            if member.isfile():
                extracted = archive.extractfile(member)
                if extracted is not None:
                    yield member.name, extracted


def read_manifest(path: str | Path) -> Any:
    for name, handle in iter_members(path):
        if Path(name).name == "manifest.json":
            return json.loads(handle.read())
    return None


def manifest_entries(manifest: Any) -> list[dict[str, Any]]:
    """The per-upload entries of a manifest, whichever key the server put them under."""
    if isinstance(manifest, list):
        return [entry for entry in manifest if isinstance(entry, dict)]
    if isinstance(manifest, dict):
        for key in ("uploads", "files", "items", "entries"):
            value = manifest.get(key)
            if isinstance(value, list):
                return [entry for entry in value if isinstance(entry, dict)]
    return []


def entry_upload_id(entry: dict[str, Any]) -> str | None:
    for key in ("upload_id", "id", "upload"):
        value = entry.get(key)
        if isinstance(value, str):
            return value
    return None


def entry_member_name(entry: dict[str, Any]) -> str | None:
    for key in ("path", "name", "arcname", "file", "filename"):
        value = entry.get(key)
        if isinstance(value, str):
            return value
    return None


def xor_files(archive: str | Path, output: str | Path, chunk: int = 256 * 1024) -> Path:
    """Byte-wise XOR of every file in the archive but the manifest (the demo's "aggregation").

    The result is as long as the longest input; shorter inputs count as zero-padded. Memory use
    is one output buffer of that length (fine for files of tens of MB).
    """
    result = bytearray()
    for name, handle in iter_members(archive):
        if Path(name).name == "manifest.json":
            continue
        offset = 0
        while block := handle.read(chunk):
            end = offset + len(block)
            if end > len(result):
                result.extend(bytes(end - len(result)))
            view = int.from_bytes(result[offset:end], "big") ^ int.from_bytes(block, "big")
            result[offset:end] = view.to_bytes(len(block), "big")
            offset = end
    out = Path(output)
    out.write_bytes(bytes(result))
    return out


def xor_bytes(blobs: list[bytes]) -> bytes:
    size = max((len(blob) for blob in blobs), default=0)
    total = 0
    for blob in blobs:
        total ^= int.from_bytes(blob.ljust(size, b"\0"), "big")
    return total.to_bytes(size, "big") if size else b""


def archive_upload_ids(path: str | Path) -> set[str]:
    """The ids of the uploads an archive really holds: listed in the manifest *and* present as a file."""
    members = {name for name, _ in iter_members(path)}
    basenames = {Path(name).name for name in members}
    found: set[str] = set()
    for entry in manifest_entries(read_manifest(path)):
        upload_id = entry_upload_id(entry)
        name = entry_member_name(entry)
        if upload_id and (name is None or name in members or Path(name).name in basenames):
            found.add(upload_id)
    return found
