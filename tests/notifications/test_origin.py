"""docs/api.md "Websocket": a handshake with no Origin (devices, SDKs: authentication is by token) is
accepted; a present Origin must be the server's own or allowed, else the handshake is refused."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from tests.notifications.conftest import access_for

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("memory_layer")]


async def handshake(headers: list[tuple[bytes, bytes]]) -> tuple[bool, WebsocketCommunicator]:
    from poolhub.asgi import application

    communicator = WebsocketCommunicator(application, "/ws/", headers=headers)
    accepted, _ = await communicator.connect(timeout=10)
    return accepted, communicator


async def test_a_client_without_origin_connects_and_authenticates(contributor):
    accepted, socket = await handshake([])
    assert accepted
    token = await database_sync_to_async(access_for)(contributor)
    await socket.send_json_to({"type": "connect", "access_token": token})
    assert (await socket.receive_json_from(timeout=10))["type"] == "connected"
    await socket.disconnect()


@pytest.mark.parametrize("origin", [b"http://testserver", b"http://localhost:8000"])
async def test_the_servers_own_origin_is_accepted(db, origin):
    accepted, socket = await handshake([(b"origin", origin)])
    assert accepted
    await socket.disconnect()


@pytest.mark.parametrize("origin", [b"http://evil.example", b"null", b"https://testserver.evil.example", b"\xff\xfe"])
async def test_a_foreign_or_garbled_origin_is_refused(db, origin):
    accepted, _ = await handshake([(b"origin", origin)])
    assert not accepted
