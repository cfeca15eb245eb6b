"""End to end: a real uvicorn server, real sockets through the `websockets` client library, a real
Celery worker where bytes must reach the file store."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from accounts.models import Membership, Role, User
from tests.notifications.conftest import access_for, group_closed, log_settled, run
from uploads.models import Upload
from uploads.staging import staging_used_bytes
from uploads.transfers import transfers_expire

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PUSH_TYPES = {"upload.status", "group.closed", "result.available"}


class Client:
    """One real websocket, JSON frames; pushes that arrive while waiting for a reply are kept."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.pushes: list[dict[str, Any]] = []

    async def recv(self, timeout: float = 20) -> dict[str, Any]:
        return dict(json.loads(await asyncio.wait_for(self.ws.recv(), timeout)))

    async def ask(self, frame: dict[str, Any]) -> dict[str, Any]:
        await self.ws.send(json.dumps(frame))
        while True:
            reply = await self.recv()
            if reply.get("type") not in PUSH_TYPES:
                return reply
            self.pushes.append(reply)

    async def push(self, predicate: Any = None) -> dict[str, Any]:
        """The next push (matching `predicate`), skipping the ones that do not match."""
        while True:
            frame = self.pushes.pop(0) if self.pushes else await self.recv()
            if frame.get("type") in PUSH_TYPES and (predicate is None or predicate(frame)):
                return frame

    async def pushes_until(self, seq: int) -> list[dict[str, Any]]:
        frames = []
        while True:
            frame = self.pushes.pop(0) if self.pushes else await self.recv()
            frames.append(frame)
            if frame.get("seq") == seq:
                return frames

    async def closed(self) -> tuple[list[dict[str, Any]], int | None]:
        """Frames until the server closes the socket, and the close code."""
        frames = []
        try:
            while True:
                frames.append(await self.recv())
        except ConnectionClosed as exc:
            return frames, exc.rcvd.code if exc.rcvd else None


def ws_url(live_server_url: str) -> str:
    return live_server_url.replace("http://", "ws://") + "/ws/"


@asynccontextmanager
async def socket(live_server_url: str, user: User | None = None, *, token: str | None = None,
                 in_header: bool = False) -> AsyncIterator[Client]:
    token = token or (await run(access_for, user=user) if user is not None else None)
    subprotocols = ["poolhub", f"bearer.{token}"] if in_header and token else None
    async with connect(ws_url(live_server_url), origin=live_server_url, subprotocols=subprotocols,  # type: ignore[arg-type]
                       max_size=2**22) as ws:
        client = Client(ws)
        if in_header:
            assert (await client.recv())["type"] == "connected"
        elif token is not None:
            assert (await client.ask({"type": "connect", "access_token": token}))["type"] == "connected"
        yield client


def an_hour_ago() -> str:
    return (datetime.now(UTC) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")


async def upload_over_socket(client: Client, pool_id: Any, data: bytes) -> dict[str, Any]:
    started = await client.ask({"type": "start-transfer", "pool": str(pool_id), "filename": "model.bin",
                                "size": len(data), "timestamp": an_hour_ago(),
                                "sha256": hashlib.sha256(data).hexdigest()})
    assert started["type"] == "transfer-started", started
    transfer_id, step, offset = started["transfer_id"], started["chunk_size"], 0
    while offset < len(data):
        ack = await client.ask({"type": "write-chunk", "transfer_id": transfer_id, "offset": offset,
                                "data": base64.b64encode(data[offset:offset + step]).decode()})
        assert ack["type"] == "chunk-ack", ack
        offset = ack["offset"]
    accepted = await client.ask({"type": "complete-upload", "transfer_id": transfer_id})
    assert accepted["type"] == "upload-accepted", accepted
    return dict(accepted["upload"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_5mb_chunked_upload_is_stored_byte_exact(live_server_url, celery_worker, pool, contributor):
    data = b"POOLHUB-E2E\n" + os.urandom(5 * 1024 * 1024)
    token = await run(access_for, user=contributor)
    async with socket(live_server_url, token=token, in_header=True) as client:
        upload = await upload_over_socket(client, pool.id, data)
        assert (upload["size"], upload["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
        stored = await client.push(lambda p: p["upload_id"] == upload["id"] and p["status"] != "cached")
        assert (stored["type"], stored["status"]) == ("upload.status", "stored")
    async with httpx.AsyncClient(base_url=live_server_url, timeout=60) as http:
        response = await http.get(f"/api/v1/uploads/{upload['id']}/content", headers=bearer(token))
    assert response.status_code == 200 and response.content == data
    assert await run(staging_used_bytes) == 0  # stored, so no longer staged


async def test_refused_transfers_store_nothing(live_server_url, pool, contributor, manager):
    data = b"POOLHUB-E2E\n" + os.urandom(300_000)
    async with socket(live_server_url, contributor) as client, socket(live_server_url, manager) as other:
        started = await client.ask({"type": "start-transfer", "pool": str(pool.id), "filename": "x.bin",
                                    "size": len(data), "timestamp": an_hour_ago()})
        tid, step = started["transfer_id"], started["chunk_size"]
        chunk = base64.b64encode(data[:step]).decode()
        refusals = {
            "wrong offset": {"transfer_id": tid, "offset": 7, "data": chunk},
            "bad base64": {"transfer_id": tid, "offset": 0, "data": "%%%"},
            "unknown id": {"transfer_id": "f" * 32, "offset": 0, "data": chunk},
            "oversize": {"transfer_id": tid, "offset": 0, "data": base64.b64encode(data + data).decode()},
        }
        codes = {name: (await client.ask({"type": "write-chunk", **frame}))["code"] for name, frame in refusals.items()}
        codes["foreign id"] = (await other.ask({"type": "write-chunk", "transfer_id": tid, "offset": 0,
                                                "data": chunk}))["code"]
        assert codes == {"wrong offset": "conflict", "bad base64": "invalid", "unknown id": "not_found",
                         "oversize": "invalid", "foreign id": "not_found"}
        assert (await client.ask({"type": "write-chunk", "transfer_id": tid, "offset": 0, "data": chunk}))[
            "type"] == "chunk-ack"
        await run(transfers_expire, now=datetime.now(UTC).timestamp() + 10 * 86400)  # idle far too long
        expired = await client.ask({"type": "write-chunk", "transfer_id": tid, "offset": step,
                                    "data": base64.b64encode(data[step:2 * step]).decode()})
        assert expired["code"] == "not_found"
        assert (await client.ask({"type": "complete-upload", "transfer_id": tid}))["code"] == "not_found"
    assert not await run(Upload.objects.exists)
    assert await run(staging_used_bytes) == 0


async def test_unauthenticated_frames_are_refused_and_the_socket_closed(live_server_url, pool):
    async with connect(ws_url(live_server_url), origin=live_server_url) as ws:
        client = Client(ws)
        await ws.send(json.dumps({"type": "start-transfer", "pool": str(pool.id), "filename": "a", "size": 1,
                                  "timestamp": an_hour_ago()}))
        frames, code = await client.closed()
    assert [f["code"] for f in frames] == ["not_authenticated"] and code == 4401
    assert not await run(Upload.objects.exists)


async def test_a_bad_token_in_the_header_is_refused(live_server_url, db):
    async with connect(ws_url(live_server_url), origin=live_server_url,
                       subprotocols=["poolhub", "bearer.not-a-token"]) as ws:  # type: ignore[list-item]
        frames, code = await Client(ws).closed()
    assert [f["code"] for f in frames] == ["invalid_token"] and code == 4401


async def test_pushes_reach_the_right_sockets_only(live_server_url, pool, other_pool, admin_user, manager,
                                                   contributor, listener, outsider):
    async with (socket(live_server_url, manager) as boss, socket(live_server_url, contributor) as writer,
                socket(live_server_url, listener) as reader, socket(live_server_url, admin_user) as admin,
                socket(live_server_url, outsider) as stranger):
        upload = await upload_over_socket(writer, pool.id, b"POOLHUB-E2E\n" + os.urandom(1000))
        cached = await writer.push()
        assert (cached["upload_id"], cached["status"]) == (upload["id"], "cached")
        assert await admin.push() == cached
        token = await run(access_for, user=manager)
        async with httpx.AsyncClient(base_url=live_server_url, timeout=30) as http:
            response = await http.post(f"/api/v1/groups/{upload['group']}/close", headers=bearer(token))
        assert response.status_code == 200, response.text
        closed = await boss.push()
        assert (closed["type"], closed["pool"], closed["group"]) == ("group.closed", str(pool.id), upload["group"])
        assert await writer.push(lambda p: p["type"] == "group.closed") == closed
        assert await reader.pushes_until(closed["seq"]) == [closed]  # nothing of the contributor's upload
        sentinel = await run(group_closed, pool_id=other_pool.id)  # the outsider's own pool
        assert [f["seq"] for f in await stranger.pushes_until(sentinel.seq)] == [sentinel.seq]


async def test_resume_after_a_disconnect_delivers_the_missed_notifications_once(live_server_url, pool, other_pool,
                                                                                  contributor):
    token = await run(access_for, user=contributor)
    async with socket(live_server_url, token=token) as client:
        first = await run(group_closed, pool_id=pool.id)
        assert (await client.push())["seq"] == first.seq
    missed = [await run(group_closed, pool_id=pool.id) for _ in range(3)]
    await run(group_closed, pool_id=other_pool.id)  # not the contributor's pool
    await log_settled()
    async with socket(live_server_url, token=token, in_header=True) as client:
        await client.ws.send(json.dumps({"type": "resume", "after": first.seq, "request_id": "r"}))
        frames: list[dict[str, Any]] = []
        while not frames or frames[-1]["type"] != "resumed":
            frames.append(await client.recv())
        assert [f["seq"] for f in frames[:-1]] == [e.seq for e in missed]
        assert frames[-1]["count"] == 3 and frames[-1]["request_id"] == "r"
        later = await run(group_closed, pool_id=pool.id)
        assert [f["seq"] for f in await client.pushes_until(later.seq)] == [later.seq]


async def test_logout_cuts_the_socket_off(live_server_url, contributor):
    token = await run(access_for, user=contributor)
    async with socket(live_server_url, token=token) as client:
        async with httpx.AsyncClient(base_url=live_server_url, timeout=30) as http:
            response = await http.post("/api/v1/auth/logout", headers=bearer(token), json={})
        assert response.status_code == 204
        frames, code = await client.closed()
    assert [f["code"] for f in frames] == ["token_revoked"] and code == 4401


async def test_removal_from_the_pool_cuts_its_pushes_off(live_server_url, pool, other_pool, manager, listener):
    await run(Membership.objects.create, pool=other_pool, user=listener, role=Role.LISTENER)
    token = await run(access_for, user=manager)
    async with socket(live_server_url, listener) as client:
        async with httpx.AsyncClient(base_url=live_server_url, timeout=30) as http:
            response = await http.delete(f"/api/v1/pools/{pool.id}/members/listener", headers=bearer(token))
        assert response.status_code == 204
        await run(group_closed, pool_id=pool.id)
        sentinel = await run(group_closed, pool_id=other_pool.id)
        assert [f["seq"] for f in await client.pushes_until(sentinel.seq)] == [sentinel.seq]


async def test_an_idle_socket_still_gets_pushes(live_server_url, pool, listener):
    async with socket(live_server_url, listener) as client:
        await asyncio.sleep(12)  # longer than the channel layer's 5 s waits, two times over
        event = await run(group_closed, pool_id=pool.id)
        assert [f["seq"] for f in await client.pushes_until(event.seq)] == [event.seq]
        assert (await client.ask({"type": "alive"}))["type"] == "alive"
