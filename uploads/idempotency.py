"""`Idempotency-Key` for the upload endpoints, kept in Redis per user.

A key is first claimed (`SET NX`, state `pending`) before the body is read, so two concurrent
requests with one key cannot both create uploads: the second waits for the first to finish and
then behaves as a repeat. A finished request keeps `{fingerprint, status, body}` for
POOLHUB_IDEMPOTENCY_TTL_SECONDS (default 48 h; the contract promises at least 24 h). A repeat
whose fingerprint (endpoint, pool, form fields, and each file's name, size and sha256) matches
gets the first response again; a different request gets 409 `idempotency_conflict`. Only
successful (2xx) responses are kept: a refused request releases its key, so the client can retry
it, for instance after a 503 `staging_full`.

The pending claim is a lease, the way distributed locks (etcd, Consul sessions, Redlock) keep a
holder that may die: it lives POOLHUB_IDEMPOTENCY_PENDING_SECONDS (default 10) and a heartbeat
thread renews it while the request runs (only while it still holds the owner's token). A web
process killed mid-request stops renewing, so its key is free again within seconds and a retry
takes it over instead of getting 409 for an hour.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.conf import settings

from poolhub.errors import BadRequest, Conflict
from poolhub.redis import redis_client

PREFIX = "poolhub:idempotency:"
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Outcome:
    fingerprint: str
    status: int
    body: Any


def fingerprint_of(*, endpoint: str, pool_id: UUID, fields: dict[str, list[str]],
                   files: dict[str, tuple[str, int, str]]) -> str:
    """A digest of what the request asks for, independent of multipart field order."""
    document = {"endpoint": endpoint, "pool": str(pool_id),
                "fields": {name: sorted(values) for name, values in sorted(fields.items())},
                "files": {name: list(facts) for name, facts in sorted(files.items())}}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def _ttl() -> int:
    return max(86400, int(settings.POOLHUB_IDEMPOTENCY_TTL_SECONDS))


def _pending_ttl() -> int:
    return int(settings.POOLHUB_IDEMPOTENCY_PENDING_SECONDS)


def _redis_key(*, user_id: UUID, key: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{PREFIX}{user_id}:{digest}"


def idempotency_key_parse(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > MAX_KEY_LENGTH or not value.isprintable():
        raise BadRequest(f"Idempotency-Key must be at most {MAX_KEY_LENGTH} printable characters",
                         details={"field": "Idempotency-Key"})
    return value


def _read(redis_key: str) -> dict[str, Any] | None:
    raw = redis_client().get(redis_key)
    return None if raw is None else dict(json.loads(raw))


def _await_finished(redis_key: str, *, wait_seconds: float) -> dict[str, Any] | None:
    """The finished record; None when the key is free again (the first request failed)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        record = _read(redis_key)
        if record is None or record["state"] == "done":
            return record
        if time.monotonic() >= deadline:
            raise Conflict("a request with this Idempotency-Key is still in progress; retry shortly",
                           retry_after=2)
        time.sleep(0.1)


def idempotent(*, user_id: UUID, key: str, run: Callable[[], Outcome],
               fingerprint: Callable[[], str]) -> tuple[Outcome, bool]:
    """Run `run` once per (user, key); repeats get its outcome back after `fingerprint` matches.

    `run` performs the request (staging, accepting) and returns its fingerprint and response;
    `fingerprint` reads a repeat's body without keeping anything and returns its fingerprint.
    Returns the outcome and whether it is a replay.
    """
    redis_key = _redis_key(user_id=user_id, key=key)
    wait = float(settings.POOLHUB_IDEMPOTENCY_WAIT_SECONDS)
    for _ in range(3):
        claim = json.dumps({"state": "pending", "owner": secrets.token_hex(16)})
        if redis_client().set(redis_key, claim, nx=True, ex=_pending_ttl()):
            with _Lease(redis_key=redis_key, claim=claim):
                return _run_claimed(redis_key, run), False
        record = _await_finished(redis_key, wait_seconds=wait)
        if record is not None:
            if fingerprint() != record["fingerprint"]:
                raise Conflict("this Idempotency-Key was used for a different request", code="idempotency_conflict")
            return Outcome(record["fingerprint"], int(record["status"]), record["body"]), True
    raise Conflict("a request with this Idempotency-Key is still in progress; retry shortly", retry_after=2)


# Renew the pending claim only while it is still this request's (compare, then expire).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class _Lease:
    """Renews a pending claim every third of its lifetime until the request ends."""

    def __init__(self, *, redis_key: str, claim: str) -> None:
        self.redis_key, self.claim = redis_key, claim
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._renew, name="idempotency-lease", daemon=True)

    def __enter__(self) -> _Lease:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _renew(self) -> None:
        ttl = _pending_ttl()
        while not self.stop.wait(ttl / 3):
            try:
                if not redis_client().eval(_RENEW, 1, self.redis_key, self.claim, ttl):
                    return  # finished meanwhile, or no longer ours
            except Exception:  # Redis unavailable for a moment: try again at the next beat
                continue


def _run_claimed(redis_key: str, run: Callable[[], Outcome]) -> Outcome:
    try:
        outcome = run()
    except BaseException:
        redis_client().delete(redis_key)
        raise
    if 200 <= outcome.status < 300:
        record = {"state": "done", "fingerprint": outcome.fingerprint, "status": outcome.status, "body": outcome.body}
        redis_client().set(redis_key, json.dumps(record), ex=_ttl())
    else:
        redis_client().delete(redis_key)
    return outcome
