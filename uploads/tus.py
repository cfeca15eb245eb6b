"""Resumable uploads over tus 1.0.0: state, bytes, expiry, and completion through the REST acceptance.

A tus upload is created with its length and metadata (`filename`, `timestamp`, optional `sha256`),
receives its bytes in any number of PATCH requests, and becomes an ordinary upload when its last
byte arrives. The views (uploads/api/tus.py) speak the protocol; this module holds the rules:

- **Bytes** go to the same Redis staging as every other way in (`uploads.staging.StagingWriter`),
  chunked and counted in the staging budget; the tus id is also the staging key, and the server's
  offset is what staging holds (`staging_size`), so an acknowledged byte is a staged byte.
- **Checks.** What can be checked before any byte (role, declared length against the pool's limit,
  timestamp, sha256 syntax, the user's cap, the pool's quota) is checked at creation; the request that completes the
  upload runs every check of a REST upload (role again, size, type from the content, declared
  sha256, then `upload_accept`: timestamp age and the pool's late policy) and answers with the
  REST status and code. A refusal below 500 drops the tus upload and its bytes; a 5xx keeps them,
  so the completion can be retried (a PATCH at the full offset with no body).
- **The user's cap** is the one websocket transfers have (uploads/transfer_limits.py): together,
  one user's unfinished tus uploads and transfers number at most POOLHUB_WS_MAX_OPEN_TRANSFERS and
  declare at most POOLHUB_USER_STAGING_BYTES (checked atomically at creation: 503 `staging_full`
  with `details.scope = "user"`).
- **Expiry**: an upload idle for POOLHUB_TUS_EXPIRY_SECONDS expires (`Upload-Expires`);
  `tus_uploads_expire` (beat, and before each creation) drops its bytes and releases them.
- **Ownership**: only the creator sees or touches one; for anyone else it does not exist (404).
- **One writer at a time**: a PATCH holds a per-upload Redis lock (renewed while bytes arrive); a
  concurrent PATCH gets 409, never interleaved bytes.
- **Checksum** (`Upload-Checksum: sha1|sha256 <base64>`): the request's bytes are staged under a
  scratch key and hashed; only when they match are they appended to the upload (460 otherwise,
  nothing appended). Without the header the bytes go straight to the upload.

No tus server library fits: the kept Django ones (drf-tus) keep their own model and write to
Django's file storage, where this needs Redis staging, the REST checks and `upload_accept`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, replace
from typing import Any

import redis
from django.conf import settings

from accounts.models import WRITER_ROLES, User
from accounts.selectors import pool_access
from lifecycle.selectors import upload_admission_check
from poolhub.errors import ApiError, BadRequest, Conflict, NotFound, Unavailable
from poolhub.redis import redis_client
from uploads.checks import (
    EmptyFile,
    FileTooLarge,
    checksum_check,
    content_type_check,
    max_bytes_for,
    sha256_parse,
    size_check,
    timestamp_parse,
)
from uploads.models import Upload
from uploads.resumable import deadline_push, deadlines_due, writer_lock
from uploads.services import upload_accept
from uploads.staging import StagingWriter, staging_drop, staging_read, staging_size
from uploads.transfer_limits import transfer_release, transfer_reserve

PREFIX = "poolhub:tus:"
DEADLINES = PREFIX + "deadlines"  # sorted set: tus id -> unix time it expires at
READ_BYTES = 256 * 1024  # what one read of a request body asks for
LOCK_SECONDS = 60  # renewed as bytes arrive; lapses soon after a web process dies mid-PATCH
CHECKSUMS: dict[str, Callable[[], Any]] = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}
# Writers that saw an upload from its first byte, by tus id, in this process: the next PATCH (or
# the completion) goes on with their hash and head instead of re-reading what is staged. Another
# process (or an evicted entry) re-reads it once, at completion (`StagingWriter.resume`).
_WRITERS: OrderedDict[str, StagingWriter] = OrderedDict()
WRITERS_KEPT = 64

class ChecksumFailed(ApiError):
    """tus's checksum extension: the request's bytes do not hash to its Upload-Checksum."""

    status_code = 460
    default_code = "checksum_mismatch"
    default_detail = "the request's bytes do not match its Upload-Checksum; nothing of it was kept"


@dataclass(frozen=True)
class TusUpload:
    id: str
    user_id: str
    pool_id: str
    length: int
    offset: int
    filename: str
    timestamp: str
    sha256: str
    metadata: str  # Upload-Metadata as the client sent it (returned on HEAD)
    expires_at: float
    upload_id: str  # the upload it became, once complete ("" before)

    @property
    def complete(self) -> bool:
        return bool(self.upload_id)


def expiry_seconds() -> int:
    return int(settings.POOLHUB_TUS_EXPIRY_SECONDS)


def _state_key(tus_id: str) -> str:
    return f"{PREFIX}{tus_id}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _not_found() -> NotFound:
    return NotFound("no such upload: unknown, expired, terminated or not yours")


# --- metadata -----------------------------------------------------------------------------------

def metadata_parse(header: str | None) -> dict[str, str]:
    """Upload-Metadata: `key base64,key base64,...` (a key may come without a value)."""
    values: dict[str, str] = {}
    for pair in (header or "").split(","):
        if not pair.strip():
            continue
        parts = pair.strip().split(" ")
        key = parts[0]
        if len(parts) > 2 or not key or key in values:
            raise BadRequest("Upload-Metadata is malformed", details={"field": "Upload-Metadata"})
        try:
            values[key] = base64.b64decode(parts[1], validate=True).decode("utf-8") if len(parts) == 2 else ""
        except (binascii.Error, ValueError) as exc:
            raise BadRequest(f"Upload-Metadata: {key} is not base64 UTF-8",
                             details={"field": "Upload-Metadata", "key": key}) from exc
    return values


def checksum_parse(header: str | None) -> tuple[str, bytes] | None:
    """Upload-Checksum: `<algorithm> <base64 digest>`; 400 for an algorithm this server lacks."""
    if header is None:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    if algorithm not in CHECKSUMS:
        raise BadRequest(f"Upload-Checksum: algorithm {algorithm!r} is not supported",
                         code="unsupported_checksum", details={"field": "Upload-Checksum",
                                                               "supported": sorted(CHECKSUMS)})
    try:
        return algorithm, base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest("Upload-Checksum: the digest is not base64", details={"field": "Upload-Checksum"}) from exc


# --- create -------------------------------------------------------------------------------------

def tus_create(*, user: User, pool_id: Any, length: int, metadata_header: str | None) -> TusUpload:
    """Check what can be checked before any byte, reserve the user's cap, open the upload."""
    pool = pool_access(user=user, pool_id=pool_id, roles=WRITER_ROLES)
    if length == 0:
        raise EmptyFile(details={"field": "Upload-Length"})
    size_check(size=length, max_bytes=max_bytes_for(pool=pool))
    metadata = metadata_parse(metadata_header)
    filename = metadata.get("filename", "").strip()
    if not filename:
        raise BadRequest("Upload-Metadata: filename is required", details={"field": "filename"})
    timestamp = timestamp_parse(metadata.get("timestamp"))
    sha256 = sha256_parse(metadata.get("sha256")) or ""
    upload_admission_check(pool=pool, uploader=user, timestamp=timestamp, size=length)  # cap and quota, 409/413
    tus_uploads_expire()
    tus_id = secrets.token_hex(16)
    client = redis_client()
    try:
        # The user's cap, shared with websocket transfers: 503 staging_full for that user.
        transfer_reserve(user_id=user.pk, transfer_id=tus_id, size=length, idle_seconds=expiry_seconds())
        client.hset(_state_key(tus_id), mapping={
            "user": str(user.pk), "pool": str(pool.pk), "length": length, "filename": filename[:255],
            "timestamp": timestamp.isoformat(), "sha256": sha256, "metadata": metadata_header or "",
            "upload": "",
        })
        _touch(client, tus_id)
    except redis.RedisError as exc:
        raise Unavailable("staging is unavailable") from exc
    return _read(tus_id)


def _touch(client: redis.Redis, tus_id: str) -> None:
    """Push the deadline out: an upload expires after a quiet period, not at a fixed time."""
    ttl = expiry_seconds()
    deadline_push(client=client, key=DEADLINES, member=tus_id, seconds=ttl)
    client.expire(_state_key(tus_id), ttl * 2)  # a backstop; the sweep removes it first


# --- read ---------------------------------------------------------------------------------------

def _read(tus_id: str) -> TusUpload:
    client = redis_client()
    state = {_text(k): _text(v) for k, v in client.hgetall(_state_key(tus_id)).items()}
    if not state:
        raise _not_found()
    length = int(state["length"])
    deadline: float | None
    if state.get("upload"):  # complete: its record (what HEAD answers from) lives until its TTL
        offset, deadline = length, time.time() + max(0, int(client.ttl(_state_key(tus_id))))
    else:
        offset, deadline = staging_size(key=tus_id), client.zscore(DEADLINES, tus_id)
    return TusUpload(id=tus_id, user_id=state["user"], pool_id=state["pool"], length=length, offset=offset,
                     filename=state["filename"], timestamp=state["timestamp"], sha256=state["sha256"],
                     metadata=state["metadata"], expires_at=float(deadline or 0),
                     upload_id=state.get("upload", ""))


def tus_get(*, user: User, tus_id: str) -> TusUpload:
    """The caller's tus upload; 404 when unknown, expired, terminated or someone else's."""
    if not tus_id or len(tus_id) > 64:
        raise _not_found()
    try:
        upload = _read(tus_id)
    except redis.RedisError as exc:
        raise Unavailable("staging is unavailable") from exc
    if upload.user_id != str(user.pk):
        raise _not_found()  # someone else's upload looks exactly like one that does not exist
    if not upload.complete and upload.expires_at < time.time():
        tus_drop(tus_id=tus_id)
        raise _not_found()
    return upload


# --- write --------------------------------------------------------------------------------------

def _locked(tus_id: str) -> AbstractContextManager[Callable[[], None]]:
    """One writer per upload at a time, across requests and web processes; yields a renew()."""
    return writer_lock(name=f"{PREFIX}{tus_id}:lock", seconds=LOCK_SECONDS, busy=lambda: Conflict(
        "another request is writing to this upload", code="upload_locked", details={"upload": tus_id}))


Reader = Callable[[int], bytes]


def tus_write(*, user: User, tus_id: str, offset: int, read: Reader, content_length: int | None,
              checksum: tuple[str, bytes] | None) -> TusUpload:
    """Append a request's bytes at `offset` (409 unless it is the upload's offset); the request
    that brings the last byte (or a bodiless one at the full offset) completes the upload."""
    tus_get(user=user, tus_id=tus_id)
    with _locked(tus_id) as renew:
        upload = _read(tus_id)
        if offset != upload.offset:
            raise Conflict(f"Upload-Offset {offset} is not the upload's offset {upload.offset}",
                           details={"offset": upload.offset})
        if upload.complete:
            if content_length:
                raise FileTooLarge("the upload is complete", details={"length": upload.length})
            return upload
        left = upload.length - upload.offset
        if content_length is not None and content_length > left:
            raise FileTooLarge(f"the request carries {content_length} bytes; the upload has {left} left",
                               details={"offset": upload.offset, "length": upload.length})
        writer = _writer(upload)
        try:
            received = _append(writer=writer, read=read, left=left, checksum=checksum, renew=renew)
        except BaseException:
            _WRITERS.pop(tus_id, None)  # its memory may differ from staging now: re-read when needed
            raise
        finally:
            with suppress(redis.RedisError):
                _touch(redis_client(), tus_id)
        upload = replace(upload, offset=upload.offset + received)
        if upload.offset == upload.length:
            return _complete(user=user, upload=upload)
    return upload


def _writer(upload: TusUpload) -> StagingWriter:
    """The writer that appends to this upload's staged bytes: this process's, if it has followed
    the upload from its first byte; otherwise a fresh one that only appends."""
    kept = _WRITERS.get(upload.id)
    if kept is not None and kept.size == upload.offset:
        _WRITERS.move_to_end(upload.id)
        return kept
    writer = StagingWriter(max_bytes=None, check_type=False, key=upload.id, filename=upload.filename)
    if upload.offset == 0:
        _WRITERS[upload.id] = writer
        while len(_WRITERS) > WRITERS_KEPT:
            _WRITERS.popitem(last=False)
    else:
        _WRITERS.pop(upload.id, None)
    return writer


def _append(*, writer: StagingWriter, read: Reader, left: int, checksum: tuple[str, bytes] | None,
            renew: Callable[[], None]) -> int:
    """Stage a request's bytes through `writer`; returns how many."""
    if checksum is None:
        return _stage(writer=writer, read=read, left=left, renew=renew)[0]
    # Verified before a byte reaches the upload: staged under a scratch key (counted in the budget
    # like any staged byte), hashed, then appended whole or dropped whole.
    scratch = StagingWriter(max_bytes=None, check_type=False)
    try:
        received, digest = _stage(writer=scratch, read=read, left=left, renew=renew,
                                  hasher=CHECKSUMS[checksum[0]]())
        if digest != checksum[1]:
            raise ChecksumFailed(details={"algorithm": checksum[0]})
        for chunk in staging_read(key=scratch.key):
            writer.write(chunk)
            renew()
        writer.flush()
    finally:
        scratch.discard()
    return received


def _stage(*, writer: StagingWriter, read: Reader, left: int, renew: Callable[[], None],
           hasher: Any = None) -> tuple[int, bytes]:
    """Stream the request body into `writer`; what arrived before an error stays staged (tus: the
    offset is what the server holds). More bytes than the upload has left is 413."""
    received = 0
    try:
        while chunk := read(READ_BYTES):
            received += len(chunk)
            if received > left:
                raise FileTooLarge(f"the request carries more than the {left} bytes the upload has left",
                                   details={"left": left})
            if hasher is not None:
                hasher.update(chunk)
            writer.write(chunk)
            renew()
    finally:
        with suppress(ApiError, redis.RedisError):  # the budget or Redis refused: keep what is staged
            writer.flush()
    writer.flush()  # raises if the last bytes could not be staged
    return received, bytes(hasher.digest()) if hasher is not None else b""


def _complete(*, user: User, upload: TusUpload) -> TusUpload:
    """Every check of a REST upload, then `upload_accept`. A refusal below 500 ends the tus upload."""
    try:
        pool = pool_access(user=user, pool_id=upload.pool_id, roles=WRITER_ROLES)
        writer = _WRITERS.pop(upload.id, None)
        if writer is None or writer.size != upload.length:
            writer = StagingWriter.resume(key=upload.id, max_bytes=None, check_type=False,
                                          filename=upload.filename)
        size_check(size=writer.size, max_bytes=max_bytes_for(pool=pool))
        staged = writer.finish()
        content_type_check(content_type=staged.content_type, allowed_types=pool.allowed_types)  # 415
        checksum_check(declared=upload.sha256 or None, actual=staged.sha256)
        accepted: Upload = upload_accept(pool=pool, uploader=user, staged=staged,
                                         timestamp=timestamp_parse(upload.timestamp), filename=upload.filename)
    except ApiError as exc:
        if exc.status_code < 500:
            tus_drop(tus_id=upload.id)
        raise
    client = redis_client()
    client.hset(_state_key(upload.id), "upload", str(accepted.pk))
    client.zrem(DEADLINES, upload.id)  # the staged bytes belong to the upload now: never swept
    transfer_release(user_id=user.pk, transfer_id=upload.id)
    client.expire(_state_key(upload.id), expiry_seconds())  # HEAD still answers for a while
    return replace(upload, upload_id=str(accepted.pk), expires_at=time.time() + expiry_seconds())


# --- terminate and expire -----------------------------------------------------------------------

def tus_terminate(*, user: User, tus_id: str) -> None:
    """DELETE: drop the upload and its staged bytes. A completed one is only forgotten (its bytes
    belong to the upload it became)."""
    upload = tus_get(user=user, tus_id=tus_id)
    with _locked(tus_id):
        if upload.complete:
            redis_client().delete(_state_key(tus_id))
        else:
            tus_drop(tus_id=tus_id)


def tus_drop(*, tus_id: str) -> None:
    """Forget an unfinished upload and release its staged bytes (idempotent)."""
    _WRITERS.pop(tus_id, None)
    staging_drop(key=tus_id)
    client = redis_client()
    owner = client.hget(_state_key(tus_id), "user")
    if owner is not None:
        transfer_release(user_id=_text(owner), transfer_id=tus_id)
    client.delete(_state_key(tus_id))
    client.zrem(DEADLINES, tus_id)


def tus_uploads_expire(*, now: float | None = None, limit: int = 1000) -> int:
    """Drop unfinished uploads idle past their deadline, with their staged bytes. Returns how many."""
    expired = deadlines_due(key=DEADLINES, now=now, limit=limit)
    for tus_id in expired:
        tus_drop(tus_id=tus_id)
    return len(expired)
