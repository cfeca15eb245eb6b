"""The websocket gateway in process (channels' WebsocketCommunicator on the real ASGI app)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import Pool
from accounts.services import pool_member_add, pool_member_remove, user_logout
from accounts.tokens import access_token_deny
from tests.notifications.conftest import (
    Socket,
    access_for,
    connected,
    group_closed,
    result_available,
    run,
    upload_event,
)

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True)]


# --- authentication -------------------------------------------------------------------------

async def test_connect_frame_authenticates_and_echoes_request_id(contributor):
    socket = Socket()
    assert (await socket.open())[0]
    token = await run(access_for, user=contributor)
    reply = await socket.ask({"type": "connect", "access_token": token, "request_id": "r-1"})
    assert reply == {"type": "connected", "request_id": "r-1",
                     "user": {"id": str(contributor.id), "username": "contributor", "role": "user"}}
    assert await socket.ask({"type": "alive", "request_id": 7}) == {"type": "alive", "request_id": 7}
    await socket.close()


async def test_token_in_subprotocol_authenticates_without_a_frame(contributor):
    token = await run(access_for, user=contributor)
    socket = Socket(subprotocols=["poolhub", f"bearer.{token}"])
    accepted, subprotocol = await socket.open()
    assert accepted and subprotocol == "poolhub"
    assert (await socket.recv())["type"] == "connected"
    await socket.close()


@pytest.mark.usefixtures("memory_layer")
@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c"])
async def test_bad_token_gets_an_error_and_the_socket_closes(db, token):
    socket = Socket()
    await socket.open()
    reply = await socket.ask({"type": "connect", "access_token": token, "request_id": "x"})
    assert reply["type"] == "error" and reply["code"] == "invalid_token" and reply["request_id"] == "x"
    assert "closed" in await socket.recv()


@pytest.mark.usefixtures("memory_layer")
async def test_expired_token_is_refused(contributor):
    def expired() -> str:
        token = AccessToken.for_user(contributor)
        token.set_exp(lifetime=-timedelta(seconds=5))
        return str(token)

    socket = Socket()
    await socket.open()
    reply = await socket.ask({"type": "connect", "access_token": await run(expired)})
    assert reply["code"] == "invalid_token"
    assert "closed" in await socket.recv()


@pytest.mark.usefixtures("memory_layer")
async def test_logged_out_token_is_refused(contributor):
    token = await run(access_for, user=contributor)
    await run(access_token_deny, token=AccessToken(token))
    socket = Socket()
    await socket.open()
    reply = await socket.ask({"type": "connect", "access_token": token})
    assert reply["code"] == "token_revoked"
    assert "closed" in await socket.recv()


@pytest.mark.usefixtures("memory_layer")
async def test_revoked_token_in_subprotocol_is_refused(contributor):
    token = await run(access_for, user=contributor)
    await run(access_token_deny, token=AccessToken(token))
    socket = Socket(subprotocols=["poolhub", f"bearer.{token}"])
    await socket.open()
    assert (await socket.recv())["code"] == "token_revoked"
    assert "closed" in await socket.recv()


@pytest.mark.usefixtures("memory_layer")
async def test_frames_before_authentication_are_refused(contributor, pool):
    socket = Socket()
    await socket.open()
    reply = await socket.ask({"type": "start-transfer", "pool": str(pool.id), "filename": "a.bin", "size": 3,
                              "timestamp": "2026-11-28T10:00:00Z", "request_id": "early"})
    assert reply["type"] == "error" and reply["code"] == "not_authenticated" and reply["request_id"] == "early"
    assert "closed" in await socket.recv()


@pytest.mark.usefixtures("memory_layer")
async def test_no_authentication_in_time_closes_the_socket(db, settings):
    settings.POOLHUB_WS_AUTH_SECONDS = 0.2
    socket = Socket()
    await socket.open()
    assert (await socket.recv())["code"] == "not_authenticated"
    assert socket.closed_with is None and "closed" in await socket.recv()


@pytest.mark.usefixtures("memory_layer")
async def test_foreign_origin_is_refused(db):
    socket = Socket(origin=b"http://evil.example")
    accepted, _ = await socket.open()
    assert not accepted


async def test_malformed_frames_get_invalid_and_the_socket_stays_usable(contributor):
    socket = await connected(contributor)
    assert (await socket.ask("{not json"))["code"] == "invalid"
    assert (await socket.ask("[1, 2]"))["code"] == "invalid"
    unknown = await socket.ask({"type": "launch-rockets", "request_id": "u"})
    assert unknown == {"type": "error", "code": "invalid", "message": unknown["message"], "request_id": "u"}
    assert (await socket.ask({"type": "resume", "after": "yesterday"}))["code"] == "invalid"
    assert (await socket.ask({"type": "alive"}))["type"] == "alive"
    await socket.close()


# --- pushes ---------------------------------------------------------------------------------

async def test_upload_status_reaches_the_uploader_and_admins_only(pool, contributor, listener, admin_user):
    uploader, other, admin = [await connected(u) for u in (contributor, listener, admin_user)]
    event = await run(upload_event, uploader=contributor, pool_id=pool.id, status="stored", attempts=1)
    expected = {"type": "upload.status", "seq": event.seq, "upload_id": str(event.stream_id),
                "status": "stored", "attempts": 1}
    assert await uploader.pushes_until(event.seq) == [expected]
    assert await admin.pushes_until(event.seq) == [expected]
    own = await run(upload_event, uploader=listener, pool_id=pool.id)  # the listener's sentinel
    assert [p["seq"] for p in await other.pushes_until(own.seq)] == [own.seq]
    for socket in (uploader, other, admin):
        await socket.close()


async def test_pool_pushes_reach_every_member_and_no_outsider(pool, other_pool, manager, listener, exporter,
                                                              outsider):
    members = [await connected(u) for u in (manager, listener, exporter)]
    stranger = await connected(outsider)
    closed = await run(group_closed, pool_id=pool.id)
    result = await run(result_available, pool_id=pool.id)
    for socket in members:
        assert await socket.pushes_until(result.seq) == [
            {"type": "group.closed", "seq": closed.seq, "pool": str(pool.id), "group": closed.data["group"]},
            {"type": "result.available", "seq": result.seq, "pool": str(pool.id), "group": result.data["group"],
             "result_id": result.data["result_id"], "size": 3, "sha256": "ab" * 32, "url": result.data["url"]},
        ]
    own = await run(group_closed, pool_id=other_pool.id)  # the outsider's own pool: the sentinel
    assert [p["seq"] for p in await stranger.pushes_until(own.seq)] == [own.seq]
    for socket in [*members, stranger]:
        await socket.close()


async def test_one_push_per_socket_when_an_admin_uploads(admin_user, pool):
    socket = await connected(admin_user)
    event = await run(upload_event, uploader=admin_user, pool_id=pool.id)
    sentinel = await run(upload_event, uploader=admin_user, pool_id=pool.id)
    assert [p["seq"] for p in await socket.pushes_until(sentinel.seq)] == [event.seq, sentinel.seq]
    await socket.close()


# --- resume ---------------------------------------------------------------------------------

async def test_resume_replays_what_a_disconnected_socket_missed_in_order_once(pool, contributor, outsider):
    socket = await connected(contributor)
    first = await run(upload_event, uploader=contributor, pool_id=pool.id, status="cached", attempts=0)
    assert [p["seq"] for p in await socket.pushes_until(first.seq)] == [first.seq]
    await socket.close()

    missed = [
        await run(upload_event, uploader=contributor, pool_id=pool.id, status="stored", attempts=1),
        await run(group_closed, pool_id=pool.id),
        await run(result_available, pool_id=pool.id),
    ]
    await run(upload_event, uploader=outsider, pool_id=pool.id)  # someone else's upload: not for us

    socket = await connected(contributor)
    frames = await socket.resume(first.seq, request_id="again")
    assert [f["seq"] for f in frames[:-1]] == [e.seq for e in missed]
    assert [f["type"] for f in frames[:-1]] == ["upload.status", "group.closed", "result.available"]
    assert frames[-1] == {"type": "resumed", "after": first.seq, "last_seq": missed[-1].seq, "count": 3,
                          "request_id": "again"}
    sentinel = await run(upload_event, uploader=contributor, pool_id=pool.id)
    assert [p["seq"] for p in await socket.pushes_until(sentinel.seq)] == [sentinel.seq]  # nothing twice
    await socket.close()


async def test_resume_gives_an_outsider_nothing_of_the_pool(pool, contributor, outsider):
    await run(group_closed, pool_id=pool.id)
    await run(upload_event, uploader=contributor, pool_id=pool.id)
    socket = await connected(outsider)
    frames = await socket.resume(0)
    assert frames == [{"type": "resumed", "after": 0, "last_seq": 0, "count": 0}]
    await socket.close()


# --- cut off --------------------------------------------------------------------------------

async def test_logout_closes_the_socket_on_that_token(contributor):
    token = await run(access_for, user=contributor)
    other_device = await connected(contributor)
    socket = Socket()
    await socket.open()
    assert (await socket.ask({"type": "connect", "access_token": token}))["type"] == "connected"
    await run(user_logout, user=contributor, access=AccessToken(token), refresh=None)
    assert (await socket.recv())["code"] == "token_revoked"
    assert "closed" in await socket.recv()
    assert (await other_device.ask({"type": "alive"}))["type"] == "alive"  # another token, still in
    await other_device.close()


async def test_removed_member_stops_receiving_the_pool(pool, manager, listener):
    staying, leaving = await connected(manager), await connected(listener)
    await run(pool_member_remove, pool=await run(Pool.objects.get, id=pool.id), username="listener")
    closed = await run(group_closed, pool_id=pool.id)
    assert [p["seq"] for p in await staying.pushes_until(closed.seq)] == [closed.seq]
    own = await run(upload_event, uploader=listener, pool_id=pool.id)  # still their own uploads
    assert [p["seq"] for p in await leaving.pushes_until(own.seq)] == [own.seq]
    frames = await leaving.resume(0)
    assert [f["seq"] for f in frames[:-1]] == [own.seq]
    await staying.close()
    await leaving.close()


async def test_added_member_starts_receiving_the_pool_on_an_open_socket(pool, outsider):
    socket = await connected(outsider)  # connected before they belong to `pool`
    await run(pool_member_add, pool=await run(Pool.objects.get, id=pool.id), username="outsider", role="listener")
    # The socket subscribes when it handles the change; a push sent before that is only in the
    # log (for `resume`), so push until one arrives live, without reconnecting or resuming.
    received: list[dict[str, object]] = []
    for _ in range(20):
        closed = await run(group_closed, pool_id=pool.id)
        if not await socket.communicator.receive_nothing(timeout=1):
            received.append(await socket.recv())
            break
    assert received and received[0]["type"] == "group.closed" and received[0]["pool"] == str(pool.id)
    assert received[0]["seq"] <= closed.seq
    await socket.close()


async def test_an_expiring_token_closes_the_socket(contributor):
    def short_lived() -> str:
        token = AccessToken.for_user(contributor)
        token.set_exp(lifetime=timedelta(seconds=3))
        return str(token)

    socket = Socket()
    await socket.open()
    assert (await socket.ask({"type": "connect", "access_token": await run(short_lived)}))["type"] == "connected"
    assert (await socket.recv())["code"] == "invalid_token"
    assert "closed" in await socket.recv()


# --- history --------------------------------------------------------------------------------

async def test_history_of_a_pool_the_caller_is_not_in_is_not_found(pool, contributor, other_pool):
    socket = await connected(contributor)
    reply = await socket.ask({"type": "get-history", "pool": str(other_pool.id), "request_id": "h"})
    assert reply["type"] == "error" and reply["code"] == "not_found" and reply["request_id"] == "h"
    assert await socket.ask({"type": "get-history", "pool": str(pool.id)}) == {
        "type": "history", "uploads": []}
    await socket.close()


async def test_a_fresh_token_keeps_the_socket_open_past_the_first_ones_expiry(pool, contributor):
    def short_lived() -> AccessToken:
        token = AccessToken.for_user(contributor)
        token.set_exp(lifetime=timedelta(seconds=2))
        return token

    first = await run(short_lived)
    socket = Socket()
    await socket.open()
    assert (await socket.ask({"type": "connect", "access_token": str(first)}))["type"] == "connected"
    fresh = await run(access_for, user=contributor)
    assert (await socket.ask({"type": "connect", "access_token": fresh, "request_id": "again"}))["type"] == "connected"
    await asyncio.sleep(max(0.0, int(first["exp"]) - time.time()) + 1)  # the first token is dead now
    assert (await socket.ask({"type": "alive"}))["type"] == "alive"
    event = await run(group_closed, pool_id=pool.id)
    assert [p["seq"] for p in await socket.pushes_until(event.seq)] == [event.seq]
    await socket.close()


async def test_resume_pages_through_a_long_gap(pool, contributor, monkeypatch):
    from notifications import gateway
    from tests.notifications.conftest import FakeStream, _append

    monkeypatch.setattr(gateway, "RESUME_PAGE", 3)
    expected = []
    for index in range(4):
        expected.append((await run(group_closed, pool_id=pool.id)).seq)
        for _ in range(3):  # upload events that change no status notify nobody, even in a full page
            await run(_append, stream_type="upload", type_="upload.noted", data={"index": index},
                      pool_id=pool.id, user_id=contributor.pk, stream=FakeStream())
        expected.append((await run(upload_event, uploader=contributor, pool_id=pool.id)).seq)
    socket = await connected(contributor)
    frames = await socket.resume(0)
    assert [f["seq"] for f in frames[:-1]] == expected
    assert frames[-1]["count"] == len(expected)
    await socket.close()


async def test_a_pool_push_is_one_group_send_that_reaches_every_members_socket(pool, monkeypatch):
    from channels.layers import get_channel_layer

    from accounts.models import Membership, Role, User

    def many_members(count: int) -> list[User]:
        users = User.objects.bulk_create([User(username=f"member-{i:04d}") for i in range(count)])
        Membership.objects.bulk_create([Membership(pool=pool, user=u, role=Role.LISTENER) for u in users])
        return users

    members = await run(many_members, count=60)
    sockets = []
    for user in members:
        sockets.append(await connected(user))
    layer = get_channel_layer()
    sends: list[str] = []
    real_group_send = layer.group_send

    async def counting_group_send(group: str, message: dict) -> None:
        sends.append(group)
        await real_group_send(group, message)

    monkeypatch.setattr(layer, "group_send", counting_group_send)
    event = await run(group_closed, pool_id=pool.id)
    assert len(sends) == 1
    for socket in sockets:
        assert [p["seq"] for p in await socket.pushes_until(event.seq)] == [event.seq]
    await asyncio.gather(*(socket.close() for socket in sockets))
