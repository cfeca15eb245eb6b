"""An offline outbox: updates queued in SQLite while the server is unreachable, flushed as batches.

Every queued update is a copy of its bytes beside the database, with its own timestamp and
sha256. `flush()` assigns queued updates to batches and records each batch's Idempotency-Key
*before* sending it; a flush interrupted at any point (killed, network cut, server down) and run
again re-sends the same batch under the same key, so the server returns its first answer and
creates nothing twice. Nothing is deleted until the server has accepted it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from poolhub_client import _core
from poolhub_client._core import BatchItem
from poolhub_client.client import PoolhubClient
from poolhub_client.errors import RETRYABLE_STATUS, PoolhubError, TransportError
from poolhub_client.flows import TusState

log = logging.getLogger("poolhub_client.outbox")
# A refused batch created nothing: 400 bad item, 409 late window refused, 413 too large, 415 type.
REFUSED_STATUS = frozenset({400, 409, 413, 415})

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pool TEXT NOT NULL,
    path TEXT NOT NULL,
    filename TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    queued_at REAL NOT NULL,
    batch_key TEXT,
    state TEXT NOT NULL DEFAULT 'queued',   -- queued, sent, rejected
    upload_id TEXT,
    error TEXT,
    tus_url TEXT                            -- a large item's resumable upload, kept across restarts
);
CREATE TABLE IF NOT EXISTS batches (
    key TEXT PRIMARY KEY,                   -- the Idempotency-Key, chosen before the first send
    pool TEXT NOT NULL,
    created_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',  -- pending, sent, refused
    attempts INTEGER NOT NULL DEFAULT 0,
    batch_id TEXT
);
CREATE INDEX IF NOT EXISTS items_state ON items (state, batch_key);
"""


@dataclass
class OutboxItem:
    id: int
    pool: str
    path: str
    filename: str
    size: int
    sha256: str
    timestamp: str
    state: str
    batch_key: str | None
    upload_id: str | None
    error: str | None
    tus_url: str | None = None


@dataclass
class FlushReport:
    sent: int = 0
    batches: int = 0
    rejected: int = 0
    pending: int = 0
    upload_ids: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.pending == 0


class Outbox:
    """A durable local queue of updates for one or more pools.

    `max_attempts`: tries per batch within one flush (network errors, 429, 503), with exponential
    backoff and jitter, never shorter than the server's Retry-After.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_batch_items: int = 50,
                 max_batch_bytes: int = 64 * 1024 * 1024, max_attempts: int = 6, backoff_base: float = 0.5,
                 backoff_cap: float = 30.0, max_retry_wait: float = 300.0) -> None:
        self.path = Path(path)
        self.files = self.path.with_name(self.path.name + ".files")
        self.files.mkdir(parents=True, exist_ok=True)
        self.max_batch_items = max_batch_items
        self.max_batch_bytes = max_batch_bytes
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_retry_wait = max_retry_wait
        self.sleep: Callable[[float], None] = time.sleep
        # Test hook: called after the server answered a batch and before the answer is recorded.
        self.after_send: Callable[[str, dict[str, Any]], None] | None = None
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(items)")}
        if "tus_url" not in columns:  # an outbox written by an older version
            self._db.execute("ALTER TABLE items ADD COLUMN tus_url TEXT")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- queueing ----------------------------------------------------------------------------

    def add(self, pool: str, file: str | os.PathLike[str] | IO[bytes] | bytes, *,
            timestamp: datetime | str | None = None, filename: str | None = None) -> OutboxItem:
        """Queue one update: its bytes are copied (and hashed) now, so the original may change."""
        stamp = _core.iso(timestamp)
        source = _core.FileSource(file, filename)
        try:
            final = self.files / f"{uuid.uuid4().hex}.bin"
            partial = final.with_suffix(".part")
            digest = hashlib.sha256()
            with partial.open("wb") as handle:
                for chunk in source.chunks():
                    digest.update(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, final)
        finally:
            source.close()
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO items (pool, path, filename, size, sha256, timestamp, queued_at) VALUES (?,?,?,?,?,?,?)",
                (pool, final.name, source.filename, source.size, digest.hexdigest(), stamp, time.time()))
        item = self.get(int(cursor.lastrowid or 0))
        assert item is not None
        return item

    def get(self, item_id: int) -> OutboxItem | None:
        row = self._db.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
        return _item(row) if row else None

    def items(self, state: str | None = None) -> list[OutboxItem]:
        if state is None:
            rows = self._db.execute("SELECT * FROM items ORDER BY id").fetchall()
        else:
            rows = self._db.execute("SELECT * FROM items WHERE state = ? ORDER BY id", (state,)).fetchall()
        return [_item(row) for row in rows]

    def pending(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM items WHERE state = 'queued'").fetchone()[0])

    # -- flushing ----------------------------------------------------------------------------

    def _assign_batches(self, large: int) -> None:
        """Give every unassigned queued item up to `large` bytes a batch and a key, committed before
        anything is sent. Larger items go one by one over the resumable endpoint."""
        with self._transaction() as db:
            rows = db.execute("SELECT id, pool, size FROM items WHERE state = 'queued' AND batch_key IS NULL "
                              "AND size <= ? ORDER BY pool, id", (large,)).fetchall()
            key: str | None = None
            pool: str | None = None
            count = size = 0
            for row in rows:
                if (key is None or row["pool"] != pool or count >= self.max_batch_items
                        or (count and size + row["size"] > self.max_batch_bytes)):
                    key, pool, count, size = str(uuid.uuid4()), row["pool"], 0, 0
                    db.execute("INSERT INTO batches (key, pool, created_at) VALUES (?,?,?)", (key, pool, time.time()))
                db.execute("UPDATE items SET batch_key = ? WHERE id = ?", (key, row["id"]))
                count += 1
                size += row["size"]

    def _pending_batches(self) -> list[sqlite3.Row]:
        return self._db.execute("SELECT * FROM batches WHERE state = 'pending' ORDER BY created_at, key").fetchall()

    def _batch_items(self, key: str) -> list[OutboxItem]:
        rows = self._db.execute("SELECT * FROM items WHERE batch_key = ? AND state = 'queued' ORDER BY id",
                                (key,)).fetchall()
        return [_item(row) for row in rows]

    def flush(self, client: PoolhubClient) -> FlushReport:
        """Send everything queued. Returns when all is sent, or when retries ran out (what is left
        stays queued for the next flush); raises only on errors a retry cannot fix (authentication,
        a pool that is gone). Items above the client's `tus_threshold` are sent one by one over the
        resumable endpoint, and their upload URL is kept, so a flush killed halfway through a large
        file goes on from the server's offset next time."""
        report = FlushReport()
        for item in self._large_items(client.tus_threshold):
            if not self._send_large(client, item, report):
                report.pending = self.pending()
                return report
        tried: set[str] = set()
        while True:
            self._assign_batches(client.tus_threshold)
            batch = next((row for row in self._pending_batches() if row["key"] not in tried), None)
            if batch is None:
                break
            tried.add(batch["key"])
            items = self._batch_items(batch["key"])
            if not items:
                self._db.execute("UPDATE batches SET state = 'sent' WHERE key = ?", (batch["key"],))
                continue
            if not self._send_batch(client, batch, items, report):
                break  # the server is unreachable or busy: the rest waits for the next flush
        report.pending = self.pending()
        return report

    def _large_items(self, threshold: int) -> list[OutboxItem]:
        rows = self._db.execute("SELECT * FROM items WHERE state = 'queued' AND batch_key IS NULL AND size > ? "
                                "ORDER BY id", (threshold,)).fetchall()
        return [_item(row) for row in rows]

    def _send_large(self, client: PoolhubClient, item: OutboxItem, report: FlushReport) -> bool:
        def keep(url: str) -> None:
            self._db.execute("UPDATE items SET tus_url = ? WHERE id = ?", (url, item.id))

        state = TusState(location=item.tus_url, on_location=keep)

        def send() -> dict[str, Any]:
            return dict(client.upload(item.pool, self.files / item.path, timestamp=item.timestamp,
                                      sha256=item.sha256, filename=item.filename, tus=state))

        def sent(upload: dict[str, Any]) -> None:
            self._record_sent(None, [item], {"uploads": [upload]}, report)

        return self._with_retries(f"item {item.id}", send, sent, lambda exc: self._refuse(None, [item], exc, report),
                                  lambda: None, report)

    def _send_batch(self, client: PoolhubClient, batch: sqlite3.Row, items: list[OutboxItem],
                    report: FlushReport) -> bool:
        key = batch["key"]
        batch_items = [BatchItem(file=self.files / item.path, timestamp=item.timestamp, sha256=item.sha256,
                                 filename=item.filename) for item in items]

        def send() -> dict[str, Any]:
            return dict(client.upload_batch(batch["pool"], batch_items, idempotency_key=key))

        def sent(response: dict[str, Any]) -> None:
            if self.after_send is not None:
                self.after_send(key, response)
            self._record_sent(key, items, response, report)

        def count_attempt() -> None:
            self._db.execute("UPDATE batches SET attempts = attempts + 1 WHERE key = ?", (key,))

        return self._with_retries(f"batch {key}", send, sent, lambda exc: self._refuse(key, items, exc, report),
                                  count_attempt, report)

    def _with_retries(self, label: str, send: Callable[[], dict[str, Any]], sent: Callable[[dict[str, Any]], None],
                      refused: Callable[[PoolhubError], None], count_attempt: Callable[[], None],
                      report: FlushReport) -> bool:
        """Send until the server answers; False when retries ran out (the items stay queued)."""
        attempt = 0
        while True:
            attempt += 1
            count_attempt()
            try:
                response = send()
            except (TransportError, PoolhubError) as exc:
                if isinstance(exc, TransportError) or exc.status in RETRYABLE_STATUS:
                    if attempt >= self.max_attempts or (exc.retry_after or 0) > self.max_retry_wait:
                        report.errors.append(f"{label}: {exc}")
                        return False
                    self.sleep(_core.backoff_delay(attempt, base=self.backoff_base, cap=self.backoff_cap,
                                                   retry_after=exc.retry_after))
                    continue
                if exc.status in REFUSED_STATUS and exc.code != "idempotency_conflict":
                    refused(exc)
                    return True
                raise
            sent(response)
            return True

    def _record_sent(self, key: str | None, items: list[OutboxItem], response: dict[str, Any],
                     report: FlushReport) -> None:
        uploads = list(response.get("uploads") or [])
        with self._transaction() as db:
            for index, item in enumerate(items):
                upload_id = str(uploads[index].get("id")) if index < len(uploads) else None
                db.execute("UPDATE items SET state = 'sent', upload_id = ? WHERE id = ?", (upload_id, item.id))
                if upload_id:
                    report.upload_ids.append(upload_id)
            if key is not None:
                db.execute("UPDATE batches SET state = 'sent', batch_id = ? WHERE key = ?",
                           (str(response.get("id") or ""), key))
        for item in items:
            (self.files / item.path).unlink(missing_ok=True)
        report.sent += len(items)
        report.batches += key is not None

    def _refuse(self, key: str | None, items: list[OutboxItem], exc: PoolhubError, report: FlushReport) -> None:
        """A refused batch created nothing. The items it names are set aside (kept on disk, with the
        reason); the others go back to the queue, to be sent under a new key."""
        bad = _bad_indexes(exc.details, len(items))
        with self._transaction() as db:
            if key is not None:
                db.execute("UPDATE batches SET state = 'refused' WHERE key = ?", (key,))
            for index, item in enumerate(items):
                if index in bad or not bad:
                    reason = json.dumps({"code": exc.code, "message": exc.message,
                                         "detail": bad.get(index) if bad else exc.details})
                    db.execute("UPDATE items SET state = 'rejected', error = ? WHERE id = ?", (reason, item.id))
                    report.rejected += 1
                else:
                    db.execute("UPDATE items SET batch_key = NULL WHERE id = ?", (item.id,))
        report.errors.append(f"batch {key} refused: {exc}" if key else f"item {items[0].id} refused: {exc}")

    def requeue_rejected(self) -> int:
        """Put rejected items back in the queue (after fixing whatever made the server refuse them)."""
        with self._transaction() as db:
            return db.execute("UPDATE items SET state = 'queued', batch_key = NULL, error = NULL "
                              "WHERE state = 'rejected'").rowcount


def _bad_indexes(details: dict[str, Any], count: int) -> dict[int, Any]:
    """`details.items` of a refused batch, as {index: reason}; a list or a dict keyed by index or field."""
    raw = details.get("items")
    found: dict[int, Any] = {}
    if isinstance(raw, list):
        for position, entry in enumerate(raw):
            if isinstance(entry, dict) and isinstance(entry.get("index"), int):
                found[entry["index"]] = entry
            elif isinstance(entry, dict) and _index_of(str(entry.get("file", ""))) is not None:
                found[_index_of(str(entry["file"])) or 0] = entry
            elif entry and len(raw) == count:
                found[position] = entry
    elif isinstance(raw, dict):
        for name, entry in raw.items():
            index = _index_of(str(name))
            if index is not None and index < count:
                found[index] = entry
    return found


def _index_of(name: str) -> int | None:
    digits = name.removeprefix("file")
    return int(digits) if digits.isdigit() else None


def _item(row: sqlite3.Row) -> OutboxItem:
    return OutboxItem(id=row["id"], pool=row["pool"], path=row["path"], filename=row["filename"], size=row["size"],
                      sha256=row["sha256"], timestamp=row["timestamp"], state=row["state"],
                      batch_key=row["batch_key"], upload_id=row["upload_id"], error=row["error"],
                      tus_url=row["tus_url"])
