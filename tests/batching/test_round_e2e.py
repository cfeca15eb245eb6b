"""A whole round with real processes: the ASGI server, a Celery worker, websockets and a webhook
receiver. 20 clients upload (some in batches spanning two windows); one window closes by time
(the beat task, run by the worker), the other by the trigger; the exporter claims, downloads the
archive, posts the result; every member's socket, listeners included, receives it, and a member
who was offline finds it with `results/latest` and with `resume`."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import websockets
from django.utils import timezone

from accounts.models import Membership, Pool, Role, User
from accounts.tokens import token_pair_issue
from batching.models import Group, GroupStatus, WebhookDelivery
from batching.tasks import groups_close_due
from batching.webhooks import webhook_verify
from batching.windows import window_bounds
from tests.conftest import make_user
from tests.live import wait_for
from uploads.models import Upload, UploadStatus

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SECRET = "round-test-secret"
CLIENTS = 20


@dataclass(frozen=True)
class Sent:
    username: str
    filename: str
    timestamp: datetime
    data: bytes


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _bearer(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_pair_issue(user=user)['access']}"}


class Sockets:
    """One websocket per member, in a thread of its own: every frame each socket receives."""

    def __init__(self, base_url: str, users: list[User]) -> None:
        self.url = base_url.replace("http://", "ws://") + "/ws/"
        self.origin = base_url
        self.tokens = {user.username: token_pair_issue(user=user)["access"] for user in users}
        self.users = users
        self.frames: dict[str, list[dict[str, Any]]] = {user.username: [] for user in users}
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sockets:
        self.thread.start()
        assert self.ready.wait(60), "sockets did not connect"
        assert self.error is None, f"a socket failed: {self.error!r}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    async def _one(self, user: User, connected: asyncio.Event) -> None:
        try:
            await self._listen(user, connected)
        except BaseException as exc:
            self.error = exc
            self.ready.set()
            raise

    async def _listen(self, user: User, connected: asyncio.Event) -> None:
        async with websockets.connect(self.url, origin=self.origin, open_timeout=30) as socket:  # type: ignore[arg-type]
            await socket.send(json.dumps({"type": "connect", "access_token": self.tokens[user.username]}))
            reply = json.loads(await socket.recv())
            assert reply["type"] == "connected", reply
            connected.set()
            while not self.stop.is_set():
                try:
                    frame = json.loads(await asyncio.wait_for(socket.recv(), 0.5))
                except TimeoutError:
                    continue
                self.frames[user.username].append(frame)

    async def _main(self) -> None:
        events = [asyncio.Event() for _ in self.users]
        tasks = [asyncio.create_task(self._one(user, event)) for user, event in zip(self.users, events, strict=True)]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in events)), 60)
        self.ready.set()
        await asyncio.gather(*tasks)

    def of_type(self, username: str, type: str) -> list[dict[str, Any]]:
        return [frame for frame in self.frames[username] if frame.get("type") == type]


async def _resume(url: str, token: str) -> list[dict[str, Any]]:
    """An offline member comes back: connect, `resume` from 0, collect until `resumed`."""
    async with websockets.connect(url.replace("http://", "ws://") + "/ws/", origin=url,  # type: ignore[arg-type]
                                  open_timeout=30) as socket:
        await socket.send(json.dumps({"type": "connect", "access_token": token}))
        assert json.loads(await socket.recv())["type"] == "connected"
        await socket.send(json.dumps({"type": "resume", "after": 0}))
        frames: list[dict[str, Any]] = []
        while True:
            frame = json.loads(await asyncio.wait_for(socket.recv(), 30))
            if frame["type"] == "resumed":
                return frames
            frames.append(frame)


def _payload(client: int, item: int) -> bytes:
    # A fixed prefix keeps the content sniffing on "binary data"; sizes vary per client.
    return b"PHUB-UPDATE\x00" + os.urandom(20_000 + 3_000 * client + item)


def _upload(base: str, user: User, pool: Pool, items: list[Sent]) -> httpx.Response:
    with httpx.Client(base_url=base, headers=_bearer(user), timeout=60) as http:
        if len(items) == 1:
            [sent] = items
            return http.post(f"/api/v1/pools/{pool.id}/uploads",
                             data={"timestamp": _iso(sent.timestamp), "sha256": hashlib.sha256(sent.data).hexdigest()},
                             files={"file": (sent.filename, sent.data, "application/octet-stream")})
        manifest = {"items": [{"file": f"f{i}", "timestamp": _iso(s.timestamp),
                               "sha256": hashlib.sha256(s.data).hexdigest()} for i, s in enumerate(items)]}
        files = {f"f{i}": (s.filename, s.data, "application/octet-stream") for i, s in enumerate(items)}
        return http.post(f"/api/v1/pools/{pool.id}/batches", data={"manifest": json.dumps(manifest)}, files=files)


def _archive(base: str, exporter: User, group: Group, lease_id: str) -> tuple[list[str], dict[str, bytes]]:
    with httpx.Client(base_url=base, headers=_bearer(exporter), timeout=120) as http, http.stream(
            "GET", f"/api/v1/groups/{group.id}/archive", params={"lease": lease_id}) as response:
        assert response.status_code == 200
        raw = b"".join(response.iter_bytes())
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        return tar.getnames(), {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def _assert_manifest_matches(names: list[str], files: dict[str, bytes], sent: list[Sent]) -> list[str]:
    assert names[0] == "manifest.json"
    manifest = json.loads(files["manifest.json"])
    got = sorted((e["uploader"], e["filename"], e["timestamp"], e["size"], e["sha256"]) for e in manifest["uploads"])
    want = sorted((s.username, s.filename, _iso(s.timestamp), len(s.data), hashlib.sha256(s.data).hexdigest())
                  for s in sent)
    assert got == want
    by_name = {(s.username, s.filename): s.data for s in sent}
    for entry in manifest["uploads"]:
        assert files[entry["path"]] == by_name[(entry["uploader"], entry["filename"])]
    assert names[1:] == [entry["path"] for entry in manifest["uploads"]]
    return [entry["id"] for entry in manifest["uploads"]]


def test_a_whole_round(live_server_url, celery_worker, webhook_receiver):
    base = live_server_url
    now = timezone.now()
    pool = Pool.objects.create(name="round", window_seconds=3600, grace_seconds=0, webhook_url=webhook_receiver.url,
                               webhook_secret=SECRET)
    current_start, _ = window_bounds(origin=pool.origin, window_seconds=3600, at=now)
    previous_start = current_start - timedelta(hours=1)
    contributors = [make_user(f"client-{i:02d}") for i in range(CLIENTS)]
    listeners = [make_user("listener-a"), make_user("listener-b")]
    offline = make_user("listener-offline")
    exporter, manager = make_user("aggregator"), make_user("pool-manager")
    for user, role in [*((u, Role.CONTRIBUTOR) for u in contributors), *((u, Role.LISTENER) for u in listeners),
                       (offline, Role.LISTENER), (exporter, Role.EXPORTER), (manager, Role.MANAGER)]:
        Membership.objects.create(pool=pool, user=user, role=role)
    online = [*contributors, *listeners, exporter, manager]

    # What each client sends: clients 0-7 a batch with one item in each window, the others one upload.
    span = max(now - current_start, timedelta(seconds=1))
    plans: list[tuple[User, list[Sent]]] = []
    for i, user in enumerate(contributors):
        in_previous = Sent(user.username, f"{user.username}-a.bin", previous_start + timedelta(minutes=2 * i + 1),
                           _payload(i, 0))
        in_current = Sent(user.username, f"{user.username}-b.bin", current_start + span * (i / CLIENTS),
                          _payload(i, 1))
        plans.append((user, [in_previous, in_current] if i < 8 else [in_previous if i % 2 else in_current]))

    with Sockets(base, online) as sockets:
        with ThreadPoolExecutor(max_workers=6) as pool_executor:
            responses = list(pool_executor.map(lambda plan: _upload(base, plan[0], pool, plan[1]), plans))
        refused = [r.text for r in responses if r.status_code != 202]
        assert [r.status_code for r in responses] == [202] * CLIENTS, refused
        sent = [item for _, items in plans for item in items]
        wait_for(lambda: Upload.objects.filter(pool=pool, status=UploadStatus.STORED).count() == len(sent),
                 timeout=120, what="every upload stored by the worker")
        previous = Group.objects.get(pool=pool, window_start=previous_start)
        current = Group.objects.get(pool=pool, window_start=current_start)
        sent_previous = [s for s in sent if s.timestamp < current_start]
        sent_current = [s for s in sent if s.timestamp >= current_start]

        # Closed by time: the beat task, run by the worker.
        groups_close_due.delay()
        wait_for(lambda: Group.objects.get(id=previous.id).status == GroupStatus.CLOSED, what="closed by beat")
        assert Group.objects.get(id=current.id).status == GroupStatus.OPEN
        # Closed by the trigger.
        http = httpx.Client(base_url=base, timeout=60)
        response = http.post(f"/api/v1/groups/{current.id}/close", headers=_bearer(manager))
        assert (response.status_code, response.json()["status"]) == (200, "closed")

        # The webhook receiver got a correctly signed call for each.
        wait_for(lambda: WebhookDelivery.objects.filter(pool=pool, status="delivered").count() == 2,
                 what="two webhook deliveries")
        for call in webhook_receiver.calls:
            assert webhook_verify(secret=SECRET, body=call["body"], signature=call["headers"]["x-poolhub-signature"])
        assert sorted((b["group"], b["reason"]) for b in webhook_receiver.bodies()) == sorted(
            [(str(previous.id), "time"), (str(current.id), "trigger")])

        # The exporter claims the window closed by time, and the archive holds exactly what was sent.
        claim = http.post(f"/api/v1/groups/{previous.id}/claim", headers=_bearer(exporter))
        assert claim.status_code == 200, claim.text
        lease_id = claim.json()["lease_id"]
        names, files = _archive(base, exporter, previous, lease_id)
        lineage = _assert_manifest_matches(names, files, sent_previous)

        result_bytes = hashlib.sha512(b"".join(files[name] for name in names[1:])).digest() * 1000
        posted = http.post(f"/api/v1/groups/{previous.id}/result", headers=_bearer(exporter),
                           data={"lease_id": lease_id}, files={"file": ("aggregate.bin", result_bytes)})
        assert posted.status_code == 201, posted.text
        result = posted.json()
        assert sorted(result["upload_ids"]) == sorted(lineage)

        expected = {"pool": str(pool.id), "group": str(previous.id), "result_id": result["id"],
                    "size": len(result_bytes), "sha256": hashlib.sha256(result_bytes).hexdigest(),
                    "url": f"/api/v1/results/{result['id']}/content"}
        wait_for(lambda: all(sockets.of_type(u.username, "result.available") for u in online),
                 timeout=60, what="result.available on every member's socket")
        for user in online:
            [frame] = sockets.of_type(user.username, "result.available")
            assert {k: frame[k] for k in expected} == expected
            closed = {frame["group"] for frame in sockets.of_type(user.username, "group.closed")}
            assert closed == {str(previous.id), str(current.id)}

    # The member who was offline: results/latest, the bytes, and `resume`.
    latest = http.get(f"/api/v1/pools/{pool.id}/results/latest", headers=_bearer(offline))
    assert (latest.status_code, latest.json()["id"]) == (200, result["id"])
    content = http.get(result["url"], headers=_bearer(offline))
    assert content.content == result_bytes
    assert content.headers["x-content-type-options"] == "nosniff"
    replayed = asyncio.run(_resume(base, token_pair_issue(user=offline)["access"]))
    [frame] = [f for f in replayed if f["type"] == "result.available"]
    assert {k: frame[k] for k in expected} == expected

    # The next round runs the same way: the window closed by trigger is exported too.
    claim = http.post(f"/api/v1/groups/{current.id}/claim", headers=_bearer(exporter))
    assert claim.status_code == 200, claim.text
    names, files = _archive(base, exporter, current, claim.json()["lease_id"])
    _assert_manifest_matches(names, files, sent_current)
    second = http.post(f"/api/v1/groups/{current.id}/result", headers=_bearer(exporter),
                       data={"lease_id": claim.json()["lease_id"]}, files={"file": ("r2.bin", b"second round")})
    assert second.status_code == 201
    latest = http.get(f"/api/v1/pools/{pool.id}/results/latest", headers=_bearer(offline)).json()
    assert latest["id"] == second.json()["id"]
    http.close()
