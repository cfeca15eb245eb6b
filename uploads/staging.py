"""Staging: upload bytes in Redis between acceptance and permanent storage.

Layout, per staged file (`key` is a random hex id):

- `poolhub:staging:{key}:data`  a list of chunks of at most POOLHUB_STAGING_CHUNK_BYTES each,
- `poolhub:staging:{key}:meta`  a hash: `reserved` (bytes counted against the budget), and once
  finished `size`, `sha256`, `content_type`, `filename`;
- `poolhub:staging:bytes`       the bytes staged in all, checked against POOLHUB_STAGING_BUDGET_BYTES;
- `poolhub:staging:ledger`      a hash key -> bytes reserved, without TTL, so that the budget held by
  files whose keys expired can be released (`staging_reconcile`, run by beat).

Appending a chunk reserves its bytes against the budget and pushes it in one Lua script, so the
budget cannot be overrun by concurrent writers and a crash cannot leave bytes uncounted. Both keys
carry POOLHUB_STAGING_TTL_SECONDS (longer than the whole store retry schedule); an upload that
failed for good is made persistent (`staging_keep`) so an admin can re-drive it.

Redis must run with `maxmemory-policy noeviction`: an evicted chunk would be an accepted upload
lost. `staging_policy_check` verifies it once per process before the first write and refuses to
stage (503 `unavailable`) otherwise, unless POOLHUB_STAGING_ALLOW_EVICTION is set.

Writers (REST multipart handler, websocket chunked transfer) all go through `StagingWriter`::

    writer = StagingWriter(max_bytes=max_bytes_for(pool=pool), allowed_types=pool.allowed_types,
                           filename="data.bin")
    writer.write(chunk)          # any number of times; raises FileTooLarge, ForbiddenType, StagingFull
    staged = writer.finish()     # -> StagedFile(key, size, sha256, content_type, filename); EmptyFile
    writer.discard()             # on any failure: drops the bytes and releases the budget

`StagingWriter.resume(key=...)` reopens an unfinished staged file (a websocket transfer resumed
on another connection): it re-reads what is staged to restore the hash and the offset.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

import redis
from django.conf import settings

from poolhub.errors import Unavailable
from poolhub.redis import redis_client
from uploads.checks import (
    HEAD_BYTES,
    EmptyFile,
    StagingFull,
    content_type_check,
    content_type_detect,
    size_check,
)

logger = logging.getLogger(__name__)

PREFIX = "poolhub:staging:"
TOTAL_KEY = PREFIX + "bytes"

# KEYS: total, data, meta, ledger. ARGV: chunk, budget, ttl, key. Returns the new total, or -1 over budget.
_APPEND = """
local n = string.len(ARGV[1])
local total = tonumber(redis.call('GET', KEYS[1]) or '0')
if total + n > tonumber(ARGV[2]) then return -1 end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'reserved', n)
redis.call('HINCRBY', KEYS[4], ARGV[4], n)
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return redis.call('INCRBY', KEYS[1], n)
"""
# KEYS: total, data, meta, ledger. ARGV: key. Releases what the file reserved; idempotent (a second
# drop finds nothing). The ledger (no TTL) remembers reservations whose keys expired, so
# `staging_reconcile` can release them too.
_DROP = """
local reserved = tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '0')
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HDEL', KEYS[4], ARGV[1])
if reserved > 0 then
  local left = redis.call('DECRBY', KEYS[1], reserved)
  if left < 0 then redis.call('SET', KEYS[1], 0) end
end
return reserved
"""
LEDGER_KEY = PREFIX + "ledger"


def _data_key(key: str) -> str:
    return f"{PREFIX}{key}:data"


def _meta_key(key: str) -> str:
    return f"{PREFIX}{key}:meta"


def _retry_after() -> int:
    return int(settings.POOLHUB_STAGING_RETRY_AFTER_SECONDS)


@dataclass(frozen=True)
class StagedFile:
    """A complete file in staging: what acceptance needs to record an upload."""

    key: str
    size: int
    sha256: str
    content_type: str
    filename: str


@lru_cache(maxsize=1)
def _policy_verdict() -> str:
    try:
        policy = str(cast(dict[str, Any], redis_client().config_get("maxmemory-policy")).get("maxmemory-policy", ""))
    except redis.ResponseError:  # managed Redis often disables CONFIG: we cannot tell, so say so
        logger.warning("staging: cannot read Redis maxmemory-policy (CONFIG disabled); it MUST be noeviction")
        return "unknown"
    if policy != "noeviction":
        logger.critical("staging: Redis maxmemory-policy is %r, not 'noeviction': staged uploads could be "
                        "evicted and lost. Uploads are refused until it is fixed "
                        "(or POOLHUB_STAGING_ALLOW_EVICTION=1 accepts the risk).", policy)
    return policy


def staging_policy_check() -> None:
    """Refuse to stage into a Redis that may evict. A good verdict is kept for the process's life;
    a bad one is checked again on the next upload, so fixing Redis needs no restart."""
    try:
        verdict = _policy_verdict()
    except redis.RedisError as exc:
        raise Unavailable("staging is unavailable", retry_after=5) from exc
    if verdict in ("noeviction", "unknown") or settings.POOLHUB_STAGING_ALLOW_EVICTION:
        return
    _policy_verdict.cache_clear()
    raise Unavailable("staging is misconfigured (Redis may evict); uploads are refused", retry_after=300)


def staging_used_bytes() -> int:
    return int(redis_client().get(TOTAL_KEY) or 0)


def _append(*, key: str, chunk: bytes) -> None:
    result = redis_client().eval(_APPEND, 4, TOTAL_KEY, _data_key(key), _meta_key(key), LEDGER_KEY, chunk,
                                 int(settings.POOLHUB_STAGING_BUDGET_BYTES),
                                 int(settings.POOLHUB_STAGING_TTL_SECONDS), key)
    if int(result) < 0:
        raise StagingFull(retry_after=_retry_after())


class StagingWriter:
    """Writes one file to staging incrementally, hashing and checking it on the way.

    Memory: at most one staging chunk (POOLHUB_STAGING_CHUNK_BYTES) plus HEAD_BYTES per writer.
    `max_bytes` None means no size check; `allowed_types` as in `Pool.allowed_types`;
    `check_type` False leaves the type check to the caller (`StagedFile.content_type`);
    `stage` False only hashes and checks (an idempotent repeat is compared, never kept).
    """

    def __init__(self, *, max_bytes: int | None, allowed_types: Sequence[str] = (), filename: str = "",
                 check_type: bool = True, key: str | None = None, stage: bool = True) -> None:
        self.key = key or secrets.token_hex(16)
        self.stage = stage
        self.max_bytes = max_bytes
        self.allowed_types = list(allowed_types)
        self.filename = filename
        self.check_type = check_type
        self.size = 0
        self._hash = hashlib.sha256()
        self._head = bytearray()
        self._buffer = bytearray()
        self._type_checked = False
        self._started = False
        self.finished: StagedFile | None = None

    @classmethod
    def resume(cls, *, key: str, max_bytes: int | None, allowed_types: Sequence[str] = (),
               filename: str = "", check_type: bool = True) -> StagingWriter:
        """Reopen an unfinished staged file; `size` is where writing continues."""
        writer = cls(max_bytes=max_bytes, allowed_types=allowed_types, filename=filename,
                     check_type=check_type, key=key)
        writer._started = True
        for chunk in staging_read(key=key):
            writer._absorb(chunk)
        return writer

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def _absorb(self, data: bytes) -> None:
        self.size += len(data)
        self._hash.update(data)
        if len(self._head) < HEAD_BYTES:
            self._head += data[: HEAD_BYTES - len(self._head)]

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._started and self.stage:
            staging_policy_check()
            self._started = True
        if self.max_bytes is not None:
            size_check(size=self.size + len(data), max_bytes=self.max_bytes)
        self._absorb(data)
        self._buffer += data
        if self.check_type and not self._type_checked and len(self._head) >= HEAD_BYTES:
            self._check_type()
        chunk_bytes = int(settings.POOLHUB_STAGING_CHUNK_BYTES)
        if len(self._buffer) < chunk_bytes:
            return
        pushed = 0
        try:
            with memoryview(self._buffer) as view:  # one copy per staged chunk, not two (make bench's profile)
                while len(self._buffer) - pushed >= chunk_bytes:
                    self._push(view[pushed:pushed + chunk_bytes].tobytes())
                    pushed += chunk_bytes
        finally:  # what reached staging leaves the buffer, also when a later push fails
            del self._buffer[:pushed]

    def flush(self) -> None:
        """Push buffered bytes now (a chunked transfer acknowledges only what is staged)."""
        if self._buffer:
            self._push(bytes(self._buffer))
            self._buffer.clear()

    def _push(self, chunk: bytes) -> None:
        if not self.stage:
            return
        try:
            _append(key=self.key, chunk=chunk)
        except redis.exceptions.OutOfMemoryError as exc:  # maxmemory reached (noeviction): back-pressure
            raise StagingFull(retry_after=_retry_after()) from exc
        except redis.RedisError as exc:
            raise Unavailable("staging is unavailable", retry_after=5) from exc

    def _check_type(self) -> None:
        self._type_checked = True
        content_type_check(content_type=content_type_detect(bytes(self._head), filename=self.filename),
                           allowed_types=self.allowed_types)

    def finish(self) -> StagedFile:
        """Flush, check emptiness and type, and record the file's facts beside its bytes."""
        if self.finished is not None:
            return self.finished
        if self.size == 0:
            raise EmptyFile()
        if self.check_type and not self._type_checked:
            self._check_type()
        self.flush()
        staged = StagedFile(key=self.key, size=self.size, sha256=self.sha256,
                            content_type=content_type_detect(bytes(self._head), filename=self.filename),
                            filename=self.filename)
        if self.stage:
            redis_client().hset(_meta_key(self.key), mapping={
                "size": staged.size, "sha256": staged.sha256, "content_type": staged.content_type,
                "filename": staged.filename,
            })
        self.finished = staged
        return staged

    def discard(self) -> None:
        """Drop whatever was staged (safe to call more than once, or after nothing was written)."""
        self._buffer.clear()
        if self.stage:
            staging_drop(key=self.key)


def staging_read(*, key: str) -> Iterator[bytes]:
    """The staged bytes, one chunk at a time (never the whole file in memory)."""
    client = redis_client()
    count = int(client.llen(_data_key(key)))
    for index in range(count):
        chunk = client.lindex(_data_key(key), index)
        if chunk is None:
            raise StagingMissing(key)
        yield bytes(cast(bytes, chunk))


class StagingMissing(LookupError):
    """The staged bytes are gone (dropped after storing, or expired)."""


def staging_exists(*, key: str) -> bool:
    return bool(redis_client().exists(_data_key(key)))


def staging_size(*, key: str) -> int:
    """Bytes staged under `key` so far (finished or not)."""
    return int(redis_client().hget(_meta_key(key), "reserved") or 0)


def staging_drop(*, key: str) -> None:
    """Remove a staged file and release its bytes from the budget. Idempotent."""
    redis_client().eval(_DROP, 4, TOTAL_KEY, _data_key(key), _meta_key(key), LEDGER_KEY, key)


def staging_drop_many(*, keys: Sequence[str]) -> None:
    """`staging_drop` for several staged files in one round trip (a stored batch)."""
    pipeline = redis_client().pipeline(transaction=False)
    for key in keys:
        pipeline.eval(_DROP, 4, TOTAL_KEY, _data_key(key), _meta_key(key), LEDGER_KEY, key)
    pipeline.execute()


def staging_reconcile() -> int:
    """Release the budget held by staged files whose keys expired (abandoned writes). Returns bytes freed."""
    client = redis_client()
    freed = 0
    for raw_key, _ in client.hscan_iter(LEDGER_KEY):
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        if not client.exists(_data_key(key)) and not client.exists(_meta_key(key)):
            freed += int(client.eval(_DROP, 4, TOTAL_KEY, _data_key(key), _meta_key(key), LEDGER_KEY, key))
    if freed:
        logger.warning("staging: released %d bytes held by expired staged files", freed)
    return freed


def staging_keep(*, key: str) -> None:
    """Keep a staged file until it is dropped explicitly (an upload that failed, awaiting re-drive)."""
    client = redis_client()
    client.persist(_data_key(key))
    client.persist(_meta_key(key))


def staging_touch(*, key: str) -> None:
    """Restart the TTL of a staged file (a re-driven upload gets the whole retry schedule again)."""
    ttl = int(settings.POOLHUB_STAGING_TTL_SECONDS)
    client = redis_client()
    client.expire(_data_key(key), ttl)
    client.expire(_meta_key(key), ttl)
