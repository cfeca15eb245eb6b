"""The outbox sends large items over the resumable endpoint and resumes them in a later flush."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from poolhub_client import Outbox, PoolhubClient, Tokens
from tests.client.test_flows_unit import TusServer

POOL = "7f1f0a54-0000-4000-8000-000000000001"


def client_for(server: TusServer) -> PoolhubClient:
    client = PoolhubClient("http://poolhub.test", tokens=Tokens(access="not-a-jwt"), max_retries=0,
                           transport=httpx.MockTransport(server), tus_threshold=100_000)
    client._retry_delay = _no_more_retries  # type: ignore[method-assign]
    return client


def _no_more_retries(attempt: int, error: Exception) -> float:
    raise error


def test_a_large_item_cut_off_in_one_flush_resumes_in_the_next(tmp_path: Path) -> None:
    data = os.urandom(9 * 1024 * 1024)  # three tus chunks
    server = TusServer(cut_patches=(2, 3, 4, 5, 6, 7))  # the network fails from the second chunk on
    box = Outbox(tmp_path / "outbox.sqlite3", max_attempts=1)
    box.sleep = lambda seconds: None
    item = box.add(POOL, data, filename="weights.bin")

    first = box.flush(client_for(server))
    assert first.pending == 1 and first.sent == 0
    kept = box.get(item.id)
    assert kept is not None and kept.tus_url == "http://poolhub.test/api/v1/tus/t1"
    sent_before = len(server.uploads["t1"])
    assert 0 < sent_before < len(data)

    server.cut_patches = ()  # the network is back
    second = box.flush(client_for(server))
    assert second.sent == 1 and second.pending == 0
    assert server.posts == 1  # the same upload went on; nothing was sent twice from the start
    assert bytes(server.uploads["t1"]) == data
    assert box.get(item.id).upload_id == "up-t1"  # type: ignore[union-attr]
    assert not list((tmp_path / "outbox.sqlite3.files").iterdir())  # the local copy is gone once accepted


def test_small_items_still_go_in_batches(tmp_path: Path) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(202, json={"id": "b1", "uploads": [{"id": "u1"}, {"id": "u2"}]})

    box = Outbox(tmp_path / "outbox.sqlite3")
    box.add(POOL, b"a" * 1000)
    box.add(POOL, b"b" * 1000)
    client = PoolhubClient("http://poolhub.test", tokens=Tokens(access="x"), transport=httpx.MockTransport(handler),
                           tus_threshold=100_000)
    report = box.flush(client)
    assert report.sent == 2 and seen == [f"/api/v1/pools/{POOL}/batches"]
