"""The outbox's logic against a scripted server (httpx.MockTransport): keys, retries, refusals, crashes."""

from __future__ import annotations

import json
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP

import httpx
import pytest

from poolhub_client import AuthError, Outbox, PoolhubClient, Tokens

POOL = "7f1f0a54-0000-4000-8000-000000000001"


class FakeServer:
    """Accepts batches like the contract says, remembering keys; `script` can answer first."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, list[dict[str, object]]]] = []
        self.created: dict[str, dict[str, object]] = {}  # Idempotency-Key -> first response
        self.uploads: list[dict[str, object]] = []
        self.script: list[Callable[[httpx.Request], httpx.Response | None]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        request.read()
        key = request.headers["Idempotency-Key"]
        manifest = _manifest(request)
        self.requests.append((key, manifest["items"]))
        if self.script:
            answer = self.script.pop(0)(request)
            if answer is not None:
                return answer
        if key in self.created:
            return httpx.Response(202, json=self.created[key])
        uploads = [{"id": f"u{len(self.uploads) + i}", "timestamp": item["timestamp"], "sha256": item["sha256"]}
                   for i, item in enumerate(manifest["items"])]
        self.uploads += uploads
        self.created[key] = {"id": f"b{len(self.created)}", "uploads": uploads}
        return httpx.Response(202, json=self.created[key])


def _manifest(request: httpx.Request) -> dict[str, list[dict[str, object]]]:
    head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + request.content)
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "manifest":
            return json.loads(part.get_content())
    raise AssertionError("no manifest in the batch")


def error(status: int, code: str, retry_after: str | None = None, **details: object) -> Callable[..., httpx.Response]:
    headers = {"Retry-After": retry_after} if retry_after else {}
    body = {"error": {"code": code, "message": code, "details": details}}
    return lambda request: httpx.Response(status, json=body, headers=headers)


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def client(server: FakeServer) -> PoolhubClient:
    return PoolhubClient("http://poolhub.test", tokens=Tokens(access="a.b.c", refresh="r"),
                         transport=httpx.MockTransport(server.handler), max_retries=0)


@pytest.fixture
def outbox(tmp_path) -> Outbox:
    box = Outbox(tmp_path / "outbox.sqlite3", max_batch_items=2)
    box.sleep = lambda seconds: None  # backoff without waiting
    return box


def queue(outbox: Outbox, count: int) -> list[str]:
    stamps = [f"2026-11-2{i % 8}T10:00:0{i % 10}Z" for i in range(count)]
    for i, stamp in enumerate(stamps):
        outbox.add(POOL, f"update {i}".encode(), timestamp=stamp, filename=f"u{i}.bin")
    return stamps


def test_everything_queued_is_sent_once_in_batches_with_its_own_timestamp(outbox, client, server):
    stamps = queue(outbox, 5)
    report = outbox.flush(client)
    assert (report.sent, report.batches, report.pending) == (5, 3, 0)
    assert sorted(u["timestamp"] for u in server.uploads) == sorted(stamps)
    assert outbox.flush(client).sent == 0  # nothing left, nothing sent twice
    assert len(server.uploads) == 5
    assert not list(outbox.files.iterdir())  # the copies are gone once the server has them


def test_retries_on_503_429_and_network_errors_keep_the_same_key(outbox, client, server):
    queue(outbox, 1)
    waits: list[float] = []
    outbox.sleep = waits.append

    def network_down(request: httpx.Request) -> None:
        raise httpx.ConnectError("connection refused", request=request)

    server.script = [error(503, "staging_full", retry_after="3"), error(429, "throttled", retry_after="1"),
                     network_down]
    report = outbox.flush(client)
    assert report.sent == 1 and len(server.uploads) == 1
    assert len({key for key, _ in server.requests}) == 1  # every attempt under the batch's one key
    assert waits[0] >= 3 and waits[1] >= 1  # Retry-After honoured


def test_a_server_down_for_longer_keeps_everything_queued(outbox, client, server):
    queue(outbox, 3)
    server.script = [error(503, "unavailable", retry_after="0")] * 100
    report = outbox.flush(client)
    assert report.sent == 0 and report.pending == 3 and report.errors
    server.script = []
    assert outbox.flush(client).sent == 3
    assert len(server.uploads) == 3


def test_a_flush_killed_after_the_server_accepted_resends_the_same_key_and_creates_nothing_twice(outbox, client,
                                                                                                   server):
    queue(outbox, 4)

    def crash(key: str, response: dict[str, object]) -> None:
        raise KeyboardInterrupt("killed between the server's answer and the local record")

    outbox.after_send = crash
    with pytest.raises(KeyboardInterrupt):
        outbox.flush(client)
    assert len(server.uploads) == 2  # the first batch reached the server
    outbox.after_send = None
    report = outbox.flush(client)
    assert report.sent == 4 and report.pending == 0
    assert len(server.uploads) == 4  # the first batch was replayed by its key, not created again
    first_key = server.requests[0][0]
    assert server.requests[1][0] == first_key


def test_a_refused_item_is_set_aside_and_the_rest_goes_under_a_new_key(outbox, client, server):
    queue(outbox, 2)
    server.script = [error(400, "empty_file", items=[{"index": 1, "file": "file1", "code": "empty_file"}])]
    report = outbox.flush(client)
    assert report.sent == 1 and report.rejected == 1
    rejected = outbox.items("rejected")
    assert len(rejected) == 1 and "empty_file" in (rejected[0].error or "")
    keys = [key for key, _ in server.requests]
    assert len(keys) == 2 and keys[0] != keys[1]  # a different request never reuses a key
    assert outbox.requeue_rejected() == 1
    assert outbox.flush(client).sent == 1


def test_an_authentication_failure_stops_the_flush_and_loses_nothing(outbox, client, server):
    queue(outbox, 2)
    server.script = [error(401, "token_revoked")]
    with pytest.raises(AuthError):
        outbox.flush(client)
    assert outbox.pending() == 2
    assert outbox.flush(client).sent == 2


def test_the_queue_survives_reopening(tmp_path, client, server):
    with Outbox(tmp_path / "box.sqlite3") as box:
        queue(box, 3)
    with Outbox(tmp_path / "box.sqlite3") as box:
        assert box.pending() == 3
        assert box.flush(client).sent == 3
