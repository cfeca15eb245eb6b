"""A deactivated user's open sockets close at once, and a frame that still reaches the server (the
close push lost, another web process) is refused: nothing is accepted after deactivation."""

from __future__ import annotations

import pytest

from accounts.models import User
from accounts.services import user_active_set
from accounts.tokens import user_tokens_deny
from tests.notifications.conftest import connected, run

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True)]


async def test_deactivation_closes_the_users_open_sockets(contributor, manager):
    socket, bystander = await connected(contributor), await connected(manager)
    await run(user_active_set, user=await run(User.objects.get, id=contributor.id), active=False)
    assert (await socket.recv())["code"] == "token_revoked"
    assert "closed" in await socket.recv()
    assert (await bystander.ask({"type": "alive"}))["type"] == "alive"
    await bystander.close()


async def test_every_frame_checks_the_account_is_still_active(contributor, pool):
    socket = await connected(contributor)
    # Deactivated without the close push reaching this socket (another process, a lost message).
    await run(User.objects.filter(id=contributor.id).update, is_active=False)
    await run(user_tokens_deny, user_id=contributor.id)
    reply = await socket.ask({"type": "start-transfer", "pool": str(pool.id), "filename": "a.bin", "size": 10,
                              "timestamp": "2026-11-30T10:00:00Z", "request_id": "late"})
    assert (reply["type"], reply["code"]) == ("error", "token_revoked")
