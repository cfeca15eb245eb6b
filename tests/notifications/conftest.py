"""Websocket helpers: an in-process socket on the real ASGI application, and events to push."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction

from accounts.models import User
from accounts.tokens import token_pair_issue
from uploads.events import event_append
from uploads.models import Event

PUSH_TYPES = {"upload.status", "group.closed", "result.available"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def memory_layer(settings: Any) -> None:
    """For tests of a socket that never joins a group: no Redis receive loop to outlive the test."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture(autouse=True)
def _fresh_channel_layer() -> None:
    """Each test runs on its own event loop: give it its own channel layer object (channels-redis
    keeps loop-bound state, which a test that ends mid-receive would leave to the next one)."""
    from channels.layers import channel_layers

    channel_layers.backends = {}


def access_for(user: User) -> str:
    return token_pair_issue(user=user)["access"]


class Socket:
    """A client socket on poolhub.asgi.application, speaking JSON frames."""

    def __init__(self, *, subprotocols: list[str] | None = None, origin: bytes = b"http://testserver") -> None:
        from poolhub.asgi import application

        self.communicator = WebsocketCommunicator(application, "/ws/", headers=[(b"origin", origin)],
                                                  subprotocols=subprotocols)
        self.closed_with: int | None = None
        self.pushes: list[dict[str, Any]] = []

    async def open(self) -> tuple[bool, Any]:
        return await self.communicator.connect(timeout=10)

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.communicator.send_to(text_data=frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 10) -> dict[str, Any]:
        """The next frame; {"closed": code} when the server closed the socket instead."""
        output = await self.communicator.receive_output(timeout)
        if output["type"] == "websocket.close":
            self.closed_with = output.get("code")
            await self._gone()
            return {"closed": output.get("code")}
        return dict(json.loads(output["text"]))

    async def ask(self, frame: dict[str, Any] | str) -> dict[str, Any]:
        """Send a frame and return the reply; pushes that arrive meanwhile are kept in `pushes`."""
        await self.send(frame)
        while True:
            reply = await self.recv()
            if reply.get("type") not in PUSH_TYPES:
                return reply
            self.pushes.append(reply)

    async def drain_until(self, type_: str) -> list[dict[str, Any]]:
        """Every frame up to and including the first of `type_`."""
        frames = []
        while True:
            frame = await self.recv()
            frames.append(frame)
            if frame.get("type") == type_ or "closed" in frame:
                return frames

    async def resume(self, after: int, **extra: Any) -> list[dict[str, Any]]:
        """Replayed notifications, then the closing `resumed` frame (once the log has settled)."""
        await log_settled()
        await self.send({"type": "resume", "after": after, **extra})
        return await self.drain_until("resumed")

    async def pushes_until(self, seq: int) -> list[dict[str, Any]]:
        """Every push up to and including the one with this `seq`.

        A socket's pushes arrive in the order they were sent, so a later push that this socket
        must get (a sentinel) proves that nothing else was sent to it before.
        """
        frames: list[dict[str, Any]] = []
        while True:
            frame = self.pushes.pop(0) if self.pushes else await self.recv()
            assert "closed" not in frame, frames
            frames.append(frame)
            if frame.get("seq") == seq:
                return frames

    async def _gone(self) -> None:
        """The server closed the socket: tell the app the peer is gone, as a server does, and
        let it finish (it leaves its groups)."""
        await self.communicator.send_input({"type": "websocket.disconnect", "code": self.closed_with or 1000})
        await self.communicator.wait(1)

    async def close(self) -> None:
        if self.closed_with is None:
            await self.communicator.disconnect()


def _events_pending() -> int:
    from uploads.selectors import events_committed

    return Event.objects.count() - events_committed(Event.objects.all()).count()


async def log_settled() -> None:
    """Wait until every committed event is below the log's safe horizon. On PostgreSQL, `resume`
    reads only below it (uploads.selectors.events_committed), and a transaction still open anywhere
    on the server (another test run's) holds it back for a moment."""
    for _ in range(200):
        if not await database_sync_to_async(_events_pending)():
            return
        await asyncio.sleep(0.05)


async def connected(user: User, **kwargs: Any) -> Socket:
    socket = Socket(**kwargs)
    accepted, _ = await socket.open()
    assert accepted
    token = await database_sync_to_async(access_for)(user)
    reply = await socket.ask({"type": "connect", "access_token": token, "request_id": "c1"})
    assert reply["type"] == "connected", reply
    return socket


@dataclass
class FakeStream:
    id: UUID = field(default_factory=uuid.uuid4)
    version: int = 0


def _append(stream_type: str, type_: str, data: dict[str, Any], pool_id: Any = None, user_id: Any = None,
            stream: FakeStream | None = None) -> Event:
    with transaction.atomic():
        return event_append(stream=stream or FakeStream(), stream_type=stream_type, type=type_, data=data,
                            pool_id=pool_id, user_id=user_id)


def upload_event(*, uploader: User, pool_id: Any, status: str = "stored", attempts: int = 1,
                 stream: FakeStream | None = None) -> Event:
    return _append("upload", f"upload.{status}", {"status": status, "attempts": attempts}, pool_id, uploader.pk,
                   stream)


def group_closed(*, pool_id: Any) -> Event:
    group = uuid.uuid4()
    return _append("group", "group.closed", {"group": str(group)}, pool_id, None, FakeStream(id=group))


def result_available(*, pool_id: Any) -> Event:
    group, result = uuid.uuid4(), uuid.uuid4()
    data = {"group": str(group), "result_id": str(result), "size": 3, "sha256": "ab" * 32,
            "url": f"/api/v1/results/{result}/content"}
    return _append("result", "result.available", data, pool_id, None, FakeStream(id=result))


async def run(function: Any, **kwargs: Any) -> Any:
    """Call sync Django code (the ORM, services with on-commit pushes) from a test coroutine."""
    return await database_sync_to_async(function)(**kwargs)
