"""Notifications over /ws/: authentication by the first frame, reconnect, resume, no duplicates."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from poolhub.embedded import free_port
from poolhub_client import AsyncPoolhubClient, AuthError, PoolhubClient, Tokens
from tests import live
from tests.client.conftest import start_web_on
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

STAMP = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)


async def wait_until(predicate: Any, timeout: float = 30, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_listen_reconnects_after_the_server_restarts_and_resumes_what_it_missed(sdk, pool, contributor, manager,
                                                                                live_server_url, celery_worker):
    port = free_port()
    server = start_web_on(port)
    url = f"http://127.0.0.1:{port}"
    other = sdk(contributor)  # on the second server, which stays up
    notes: list[dict[str, Any]] = []

    async def scenario() -> int:
        nonlocal server
        client = AsyncPoolhubClient(url)
        await client.login("contributor", PASSWORD)
        listener = client.listen()

        async def collect() -> None:
            async for note in listener:
                notes.append(note)

        task = asyncio.create_task(collect())
        await asyncio.wait_for(listener.connected.wait(), 15)
        first = await client.upload(str(pool.id), b"before the restart", timestamp=STAMP)
        await wait_until(lambda: any(n.get("upload_id") == first["id"] for n in notes), what="the first push")

        live.stop(server)  # the socket drops; what happens now must not be lost
        await wait_until(lambda: not listener.connected.is_set(), what="the disconnect")
        second = await asyncio.to_thread(other.upload, str(pool.id), b"while the listener was away",
                                         timestamp=STAMP)
        await asyncio.to_thread(live.wait_for, lambda: other.get_upload(second["id"])["status"] == "stored")
        await asyncio.to_thread(sdk(manager).close_group, second["group"])

        server = start_web_on(port)
        await wait_until(lambda: any(n.get("upload_id") == second["id"] for n in notes)
                         and any(n["type"] == "group.closed" for n in notes), what="the missed notifications")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()
        return listener.connections

    try:
        connections = asyncio.run(scenario())
    finally:
        live.stop(server)
    assert connections >= 2
    seqs = [n["seq"] for n in notes]
    assert len(seqs) == len(set(seqs))  # a push and its replay are delivered once
    statuses = [n["status"] for n in notes if n["type"] == "upload.status"]
    assert "stored" in statuses
    closed = [n for n in notes if n["type"] == "group.closed"]
    assert closed[0]["pool"] == str(pool.id)


def test_sync_listen_replays_from_a_seq_and_a_revoked_token_is_an_auth_error(sdk, pool, contributor,
                                                                             live_server_url):
    client = sdk(contributor)
    upload = client.upload(str(pool.id), b"one reading", timestamp=STAMP)
    stream = client.listen(after=0)
    note = next(stream)
    stream.close()
    assert note["type"] == "upload.status" and note["upload_id"] == upload["id"] and note["seq"] > 0

    tokens = client.tokens
    assert tokens is not None
    client.logout()
    revoked = PoolhubClient(live_server_url, tokens=Tokens(access=tokens.access))
    with pytest.raises(AuthError) as refused:
        next(revoked.listen(after=0))
    assert refused.value.code in {"token_revoked", "invalid_token"}
    revoked.close()


def test_listen_outlives_its_access_token(pool, contributor, transactional_db, celery_worker):
    """The server closes a socket when its token expires; the listener refreshes, reconnects, resumes."""
    process, url = live.start_web(live.child_env(JWT_ACCESS_SECONDS="2"))
    notes: list[dict[str, Any]] = []

    async def scenario() -> tuple[list[str], int]:
        client = AsyncPoolhubClient(url)
        await client.login("contributor", PASSWORD)
        listener = client.listen()

        async def collect() -> None:
            async for note in listener:
                notes.append(note)

        task = asyncio.create_task(collect())
        await asyncio.wait_for(listener.connected.wait(), 15)
        ids = []
        for i in range(3):  # spread over several token lifetimes
            upload = await client.upload(str(pool.id), f"reading {i}".encode(), timestamp=STAMP)
            ids.append(upload["id"])
            await asyncio.sleep(2.5)
        await wait_until(lambda: {n.get("upload_id") for n in notes if n.get("status") == "stored"} >= set(ids),
                         what="every upload's stored notification")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()
        return ids, listener.connections

    try:
        ids, connections = asyncio.run(scenario())
    finally:
        live.stop(process)
    assert connections >= 2  # the socket was cut at expiry at least once, and came back
    assert {n.get("upload_id") for n in notes if n.get("status") == "stored"} >= set(ids)
    seqs = [n["seq"] for n in notes]
    assert len(seqs) == len(set(seqs))
