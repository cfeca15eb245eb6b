"""Pools of many sockets: one fan-out per web process, reconnect storms, nothing left behind.

The sockets run in process on the real ASGI application and the real channel layer (Redis
pub/sub), so this process plays one web process. The bench (`make bench`) measures the same at
10,000 sockets across processes; here a few hundred show the behaviour.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from channels.layers import get_channel_layer
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import Membership, Pool, Role, User
from notifications import gateway
from notifications.selectors import pool_group, user_group
from poolhub.redis import redis_client
from tests.notifications.conftest import Socket, group_closed, run

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True)]

STORM = 300


def members(pool: Pool, count: int) -> list[tuple[str, str]]:
    """`count` new listeners of the pool: (user id, access token) each."""
    users = User.objects.bulk_create([User(username=f"device-{i:04d}") for i in range(count)])
    Membership.objects.bulk_create([Membership(pool=pool, user=u, role=Role.LISTENER) for u in users])
    return [(str(u.pk), str(AccessToken.for_user(u))) for u in users]


async def open_all(tokens: list[str]) -> tuple[list[Socket], list[dict[str, Any]]]:
    """Open every socket at once and authenticate each with a `connect` frame: (sockets, replies)."""

    async def one(token: str) -> tuple[Socket, dict[str, Any]]:
        socket = Socket()
        accepted, _ = await socket.open()
        assert accepted
        await socket.send({"type": "connect", "access_token": token})
        return socket, await socket.recv(timeout=120)

    opened = await asyncio.gather(*(one(t) for t in tokens))
    return [s for s, _ in opened], [r for _, r in opened]


def subscribers(group: str) -> int:
    """Redis pub/sub subscriptions to a group (one per web process that has sockets in it)."""
    channel = get_channel_layer().group_channel(group)
    return int(dict(redis_client().pubsub_numsub(channel))[channel.encode()])


async def unsubscribed(group: str) -> bool:
    """Whether this process's subscription to the group ends (Redis handles the UNSUBSCRIBE that
    the last socket's departure sent in its own time, so ask until it has, for a few seconds)."""
    for _ in range(50):
        if subscribers(group) == 0:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_a_storm_of_sockets_all_authenticate_and_one_subscription_serves_them(pool, caplog):
    caplog.set_level(logging.WARNING)
    accounts = await run(members, pool=pool, count=STORM)
    sockets, replies = await open_all([token for _, token in accounts])
    assert [r.get("type") for r in replies] == ["connected"] * STORM, [r for r in replies if r["type"] != "connected"]
    layer = get_channel_layer()
    assert len(layer.group_members(pool_group(pool.id))) == STORM
    assert subscribers(pool_group(pool.id)) == 1  # this process, once, for all its sockets

    event = await run(group_closed, pool_id=pool.id)
    for socket in sockets:
        assert [p["seq"] for p in await socket.pushes_until(event.seq)] == [event.seq]
    # Every socket's next frame at once: each is checked against the logout denylist, more at a
    # time than the process has Redis connections; they wait their turn, none fails.
    assert await asyncio.gather(*(s.ask({"type": "alive"}) for s in sockets)) == [{"type": "alive"}] * STORM
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_closed_sockets_leave_no_channel_in_any_group(pool, caplog):
    caplog.set_level(logging.WARNING)
    accounts = await run(members, pool=pool, count=STORM)
    sockets, replies = await open_all([token for _, token in accounts])
    assert all(r["type"] == "connected" for r in replies)
    await asyncio.gather(*(socket.close() for socket in sockets))

    layer = get_channel_layer()
    groups = [pool_group(pool.id), *(user_group(user_id) for user_id, _ in accounts)]
    assert all(layer.group_members(group) == set() for group in groups)
    assert await unsubscribed(pool_group(pool.id))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_slow_server_does_not_refuse_credentials_that_arrived_in_time(pool, contributor, settings,
                                                                             monkeypatch):
    """The auth deadline is the client's: a `connect` frame sent in time is answered, however long
    checking it takes (the server busy with a reconnect storm)."""
    settings.POOLHUB_WS_AUTH_SECONDS = 1
    slow_open = gateway.socket_open

    def busy_server(**kwargs: Any) -> Any:
        import time

        time.sleep(2)  # longer than the deadline
        return slow_open(**kwargs)

    monkeypatch.setattr(gateway, "socket_open", busy_server)
    token = str(AccessToken.for_user(contributor))
    socket = Socket()
    assert (await socket.open())[0]
    reply = await socket.ask({"type": "connect", "access_token": token, "request_id": "late"})
    assert reply["type"] == "connected" and reply["request_id"] == "late"
    assert await socket.ask({"type": "alive"}) == {"type": "alive"}
    await socket.close()

