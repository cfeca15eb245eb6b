"""Rounds fixtures: stored uploads put straight into the uploads bucket (as the store task does),
a second exporter, and a small HTTP receiver for webhooks."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.db import transaction

from accounts.models import Membership, Pool, Role, User
from batching.models import Group
from batching.services import group_for_upload
from poolhub.filestore import Bucket, file_write
from tests.conftest import make_user
from uploads.models import Upload, UploadStatus

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def stored_upload(*, pool: Pool, uploader: User, timestamp: datetime, data: bytes, filename: str = "update.bin",
                  status: str = UploadStatus.STORED) -> Upload:
    """An accepted upload in its group; `stored` ones have their bytes in GridFS under their id."""
    with transaction.atomic():
        group = group_for_upload(pool=pool, timestamp=timestamp)
        upload = Upload.objects.create(
            pool=pool, uploader=uploader, filename=filename, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
            content_type="application/octet-stream", timestamp=timestamp, group=group, status=status,
        )
    if status == UploadStatus.STORED:
        file_write(bucket=Bucket.UPLOADS, file_id=upload.id, filename=filename, chunks=[data], metadata={})
    return upload


@pytest.fixture
def second_exporter(pool: Pool) -> User:
    user = make_user("exporter-two")
    Membership.objects.create(pool=pool, user=user, role=Role.EXPORTER)
    return user


@pytest.fixture
def closed_group(pool: Pool, contributor: User) -> Group:
    """A closed group of three stored uploads from one contributor."""
    for i in range(3):
        stored_upload(pool=pool, uploader=contributor, timestamp=T0.replace(minute=i),
                      data=f"update {i}".encode() * 100, filename=f"u{i}.bin")
    group = Group.objects.get(pool=pool, window_start=T0)
    Group.objects.filter(id=group.id).update(status="closed")
    group.refresh_from_db()
    return group


@dataclass
class Receiver:
    url: str
    calls: list[dict[str, Any]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)  # status codes to answer, in order; then 200
    received: threading.Event = field(default_factory=threading.Event)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(call["body"]) for call in self.calls]


@pytest.fixture
def webhook_receiver() -> Iterator[Receiver]:
    """An HTTP server on 127.0.0.1 that records every POST (raw body and headers)."""
    receiver = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            receiver.calls.append({"body": body, "headers": {k.lower(): v for k, v in self.headers.items()},
                                   "path": self.path})
            status = receiver.answers.pop(0) if receiver.answers else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            receiver.received.set()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/poolhub"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def run_on_commit(django_capture_on_commit_callbacks: Any) -> Callable[..., Any]:
    """Run a callable and then its on-commit side effects (tasks run eagerly in unit tests)."""

    def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return fn(*args, **kwargs)

    return run
