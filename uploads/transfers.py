"""Chunked uploads over the websocket: `start-transfer`, `write-chunk`, `complete-upload`, `abort-transfer`.

The bytes go through the same `StagingWriter` (size, type, hash, staging budget) and the same
`upload_accept` as a REST upload, after the same checks (`uploads.checks`), so every refusal has
the same code. A transfer's state is a Redis hash, not socket memory: it survives a reconnect of
the same user and works across web replicas. Its id is also its staging key. The server's offset
is what staging holds (`staging_size`), so an acknowledged chunk is a staged chunk.

A transfer idle for POOLHUB_WS_TRANSFER_TTL_SECONDS expires: `transfers_expire` (run by beat,
and before each start) drops its staged bytes and releases them from the staging budget.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Callable, MutableMapping
from contextlib import AbstractContextManager
from typing import Any

import redis
from django.conf import settings

from accounts.models import WRITER_ROLES, Pool, User
from accounts.selectors import pool_access
from poolhub.errors import ApiError, BadRequest, Conflict, NotFound, Unavailable
from poolhub.redis import redis_client
from uploads.api.serializers import UploadOutput
from uploads.checks import (
    FileTooLarge,
    checksum_check,
    max_bytes_for,
    sha256_parse,
    size_check,
    timestamp_parse,
)
from uploads.resumable import deadlines_due, writer_lock
from uploads.services import upload_accept
from uploads.staging import StagingWriter, staging_drop, staging_size
from uploads.transfer_limits import transfer_release, transfer_reserve

PREFIX = "poolhub:ws:transfer:"
DEADLINES = PREFIX + "deadlines"  # sorted set: transfer id -> unix time it expires at

Writers = MutableMapping[str, StagingWriter]


def chunk_bytes() -> int:
    """The largest decoded chunk a `write-chunk` may carry (base64 adds a third on the wire)."""
    return int(settings.POOLHUB_WS_CHUNK_BYTES)


def transfer_ttl() -> int:
    return int(settings.POOLHUB_WS_TRANSFER_TTL_SECONDS)


def _state_key(transfer_id: str) -> str:
    return f"{PREFIX}{transfer_id}"


def _done_key(transfer_id: str) -> str:
    return f"{PREFIX}{transfer_id}:done"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _not_found() -> NotFound:
    return NotFound("no such transfer: unknown, expired, completed or not yours", details={"field": "transfer_id"})


def _field(frame: dict[str, Any], name: str) -> Any:
    if frame.get(name) is None:
        raise BadRequest(f"{name}: required", details={"field": name})
    return frame[name]


def _int_field(frame: dict[str, Any], name: str) -> int:
    value = _field(frame, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"{name}: a whole number >= 0", details={"field": name})
    return value


def _user_key(user_id: Any) -> str:
    """The user's open transfers (id -> deadline): a cap on how many one user may hold."""
    return f"{PREFIX}user:{user_id}"


def _touch(client: redis.Redis, transfer_id: str, user_id: Any) -> None:
    """Push the transfer's deadline out: it expires after a quiet period, not a fixed time."""
    ttl = transfer_ttl()
    deadline = time.time() + ttl
    client.zadd(DEADLINES, {transfer_id: deadline})
    client.zadd(_user_key(user_id), {transfer_id: deadline})
    client.expire(_user_key(user_id), ttl * 2)
    client.expire(_state_key(transfer_id), ttl * 2)  # a backstop; the sweep removes it first


# --- start ------------------------------------------------------------------------------------

def transfer_start(*, user: User, frame: dict[str, Any]) -> dict[str, Any]:
    """Check what can be checked before any byte arrives, then open the transfer."""
    pool = pool_access(user=user, pool_id=str(_field(frame, "pool")), roles=WRITER_ROLES)
    size = _int_field(frame, "size")
    if size == 0:
        raise BadRequest("the file has no bytes", code="empty_file", details={"field": "size"})
    size_check(size=size, max_bytes=max_bytes_for(pool=pool))
    timestamp = timestamp_parse(frame.get("timestamp"))
    sha256 = sha256_parse(frame.get("sha256"))
    filename = frame.get("filename")
    if filename is not None and not isinstance(filename, str):
        raise BadRequest("filename: a string", details={"field": "filename"})
    transfers_expire()
    transfer_id = secrets.token_hex(16)
    client = redis_client()
    transfer_reserve(user_id=user.pk, transfer_id=transfer_id, size=size)  # per-user caps: 503 staging_full
    try:
        client.hset(_state_key(transfer_id), mapping={
            "user": str(user.pk), "pool": str(pool.pk), "size": size, "timestamp": timestamp.isoformat(),
            "sha256": sha256 or "", "filename": filename or "upload.bin",
        })
        _touch(client, transfer_id, user.pk)
    except redis.RedisError as exc:
        raise Unavailable("staging is unavailable") from exc
    return {"transfer_id": transfer_id, "chunk_size": chunk_bytes(), "offset": 0, "size": size}


# --- state, ownership and the per-transfer lock ------------------------------------------------

def _state(*, user: User, transfer_id: Any) -> dict[str, str]:
    if not isinstance(transfer_id, str) or not transfer_id:
        raise BadRequest("transfer_id: required", details={"field": "transfer_id"})
    raw = redis_client().hgetall(_state_key(transfer_id))
    state = {_text(k): _text(v) for k, v in raw.items()}
    if not state or state.get("user") != str(user.pk):
        raise _not_found()  # someone else's transfer looks exactly like one that does not exist
    deadline = redis_client().zscore(DEADLINES, transfer_id)
    if deadline is None or deadline < time.time():
        transfer_drop(transfer_id=transfer_id)
        raise _not_found()
    return state


def _locked(transfer_id: str) -> AbstractContextManager[Callable[[], None]]:
    """One writer per transfer at a time, even across sockets and replicas."""
    return writer_lock(name=f"{PREFIX}{transfer_id}:lock", busy=lambda: Conflict(
        "another write to this transfer is in progress", details={"transfer_id": transfer_id}))


def _writer(*, transfer_id: str, state: dict[str, str], writers: Writers) -> StagingWriter:
    """This socket's writer for the transfer, or one reopened from staging (after a reconnect, or
    when another socket of the same user wrote to it meanwhile)."""
    offset = staging_size(key=transfer_id)
    writer = writers.get(transfer_id)
    if writer is None or writer.size != offset:
        pool = Pool.objects.get(pk=state["pool"])
        writer = StagingWriter.resume(key=transfer_id, max_bytes=max_bytes_for(pool=pool),
                                      allowed_types=pool.allowed_types, filename=state["filename"])
        writers[transfer_id] = writer
    return writer


def transfer_drop(*, transfer_id: str) -> None:
    """Forget a transfer and drop whatever it staged (idempotent)."""
    staging_drop(key=transfer_id)
    client = redis_client()
    owner = client.hget(_state_key(transfer_id), "user")
    if owner is not None:
        client.zrem(_user_key(_text(owner)), transfer_id)
        transfer_release(user_id=_text(owner), transfer_id=transfer_id)
    client.delete(_state_key(transfer_id))
    client.zrem(DEADLINES, transfer_id)


def _refuse(transfer_id: str, writers: Writers, exc: ApiError) -> ApiError:
    """A permanent refusal (size, type, checksum, policy) ends the transfer: nothing is kept."""
    writers.pop(transfer_id, None)
    if exc.status_code < 500:
        transfer_drop(transfer_id=transfer_id)
    return exc


# --- write ------------------------------------------------------------------------------------

def _decode(data: Any) -> bytes:
    if not isinstance(data, str) or not data:
        raise BadRequest("data: base64 bytes, required", details={"field": "data"})
    try:
        chunk = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest("data: not valid base64", details={"field": "data"}) from exc
    if base64.b64encode(chunk).decode("ascii") != data:  # stray padding or bits: say so, guess nothing
        raise BadRequest("data: not canonical base64", details={"field": "data"})
    if len(chunk) > chunk_bytes():
        raise BadRequest(f"data: a chunk carries at most {chunk_bytes()} bytes", details={"field": "data"})
    return chunk


def transfer_write(*, user: User, frame: dict[str, Any], writers: Writers) -> dict[str, Any]:
    transfer_id = frame.get("transfer_id")
    state = _state(user=user, transfer_id=transfer_id)
    assert isinstance(transfer_id, str)
    offset = _int_field(frame, "offset")
    chunk = _decode(frame.get("data"))
    with _locked(transfer_id):
        server_offset = staging_size(key=transfer_id)
        if offset != server_offset:
            raise Conflict(f"offset {offset} is not the transfer's offset {server_offset}",
                           details={"transfer_id": transfer_id, "offset": server_offset})
        size = int(state["size"])
        if offset + len(chunk) > size:
            raise FileTooLarge(f"the chunk goes past the declared size ({size} bytes)",
                               details={"transfer_id": transfer_id, "offset": server_offset, "size": size})
        writer = _writer(transfer_id=transfer_id, state=state, writers=writers)
        try:
            writer.write(chunk)
            writer.flush()
        except ApiError as exc:
            raise _refuse(transfer_id, writers, exc) from None
        except Exception:
            writers.pop(transfer_id, None)  # its memory may be ahead of staging: reopen next time
            raise
        _touch(redis_client(), transfer_id, user.pk)
    return {"transfer_id": transfer_id, "offset": writer.size}


def transfer_status(*, user: User, frame: dict[str, Any]) -> dict[str, Any]:
    """Where a transfer stands (after a reconnect: continue writing at `offset`)."""
    transfer_id = frame.get("transfer_id")
    state = _state(user=user, transfer_id=transfer_id)
    assert isinstance(transfer_id, str)
    return {"transfer_id": transfer_id, "offset": staging_size(key=transfer_id), "size": int(state["size"]),
            "chunk_size": chunk_bytes()}


# --- complete ---------------------------------------------------------------------------------

def transfer_complete(*, user: User, frame: dict[str, Any], writers: Writers) -> dict[str, Any]:
    """Check size, type and sha256, then accept it exactly as the REST upload does."""
    transfer_id = frame.get("transfer_id")
    done = _already_completed(user=user, transfer_id=transfer_id)
    if done is not None:
        return done
    state = _state(user=user, transfer_id=transfer_id)
    assert isinstance(transfer_id, str)
    with _locked(transfer_id):
        writer = _writer(transfer_id=transfer_id, state=state, writers=writers)
        size = int(state["size"])
        if writer.size != size:
            raise BadRequest(f"the transfer is incomplete: {writer.size} of {size} bytes",
                             details={"transfer_id": transfer_id, "offset": writer.size, "size": size})
        try:
            # Membership may have changed since the start: check again, as the REST upload would.
            pool = pool_access(user=user, pool_id=state["pool"], roles=WRITER_ROLES)
            staged = writer.finish()
            checksum_check(declared=state["sha256"] or None, actual=staged.sha256)
            upload = upload_accept(pool=pool, uploader=user, staged=staged,
                                   timestamp=timestamp_parse(state["timestamp"]), filename=state["filename"])
        except ApiError as exc:
            raise _refuse(transfer_id, writers, exc) from None
        body = dict(UploadOutput(upload).data)
        client = redis_client()
        client.set(_done_key(transfer_id), f"{user.pk} {upload.pk}", ex=transfer_ttl())
        client.delete(_state_key(transfer_id))  # the staged bytes now belong to the upload
        client.zrem(DEADLINES, transfer_id)
        client.zrem(_user_key(user.pk), transfer_id)
        transfer_release(user_id=user.pk, transfer_id=transfer_id)
        writers.pop(transfer_id, None)
    return body


def transfer_abort(*, user: User, frame: dict[str, Any], writers: Writers) -> dict[str, Any]:
    """`abort-transfer`: the user gives up; its staged bytes and its reservation are released."""
    transfer_id = frame.get("transfer_id")
    _state(user=user, transfer_id=transfer_id)  # 404 unless it is this user's open transfer
    assert isinstance(transfer_id, str)
    with _locked(transfer_id):
        writers.pop(transfer_id, None)
        transfer_drop(transfer_id=transfer_id)
    return {"transfer_id": transfer_id}


def _already_completed(*, user: User, transfer_id: Any) -> dict[str, Any] | None:
    """A repeated `complete-upload` (its reply lost to a disconnect) gets the same upload again."""
    if not isinstance(transfer_id, str) or not transfer_id:
        return None
    raw = redis_client().get(_done_key(transfer_id))
    if raw is None:
        return None
    owner, upload_id = _text(raw).split(" ", 1)
    if owner != str(user.pk):
        raise _not_found()
    from uploads.models import Upload

    upload = Upload.objects.select_related("uploader").filter(pk=upload_id).first()
    return dict(UploadOutput(upload).data) if upload is not None else None


# --- expiry -----------------------------------------------------------------------------------

def transfers_expire(*, now: float | None = None, limit: int = 1000) -> int:
    """Drop transfers idle past their deadline, with their staged bytes. Returns how many."""
    expired = deadlines_due(key=DEADLINES, now=now, limit=limit)
    for transfer_id in expired:
        transfer_drop(transfer_id=transfer_id)
    return len(expired)
