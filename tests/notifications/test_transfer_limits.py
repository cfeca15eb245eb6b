"""One account cannot starve the others: its open transfers and the bytes they reserve are capped
(503 `staging_full` for that user only), `abort-transfer` releases a transfer at once, and idle
transfers expire in minutes, not an hour."""

from __future__ import annotations

import time

import pytest

from tests.notifications.conftest import connected, run
from tests.notifications.test_transfers import payload, send_all, start
from uploads.staging import staging_used_bytes
from uploads.transfers import transfers_expire

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True)]


async def test_one_users_reserved_bytes_are_capped_and_others_still_upload(pool, contributor, manager, settings):
    settings.POOLHUB_USER_STAGING_BYTES = 1000
    hog, other = await connected(contributor), await connected(manager)
    content = payload(400)
    assert (await start(hog, pool, content))["type"] == "transfer-started"
    assert (await start(hog, pool, content))["type"] == "transfer-started"
    refused = await start(hog, pool, content)  # 1200 bytes would be reserved
    assert (refused["type"], refused["code"]) == ("error", "staging_full")
    started = await start(other, pool, payload(900))
    assert started["type"] == "transfer-started"  # another user is not affected
    await hog.close()
    await other.close()


async def test_abort_transfer_releases_the_bytes_and_the_place(pool, contributor, settings):
    settings.POOLHUB_WS_MAX_OPEN_TRANSFERS = 1
    socket = await connected(contributor)
    content = payload(50_000)
    transfer_id = (await start(socket, pool, content))["transfer_id"]
    await send_all(socket, transfer_id, content[:30_000])
    assert await run(staging_used_bytes) >= 30_000
    assert (await start(socket, pool, content))["code"] == "staging_full"
    aborted = await socket.ask({"type": "abort-transfer", "transfer_id": transfer_id, "request_id": "a"})
    assert aborted == {"type": "transfer-aborted", "transfer_id": transfer_id, "request_id": "a"}
    assert await run(staging_used_bytes) == 0
    assert (await socket.ask({"type": "get-transfer", "transfer_id": transfer_id}))["code"] == "not_found"
    assert (await start(socket, pool, content))["type"] == "transfer-started"
    await socket.close()


async def test_only_the_owner_can_abort_a_transfer(pool, contributor, manager):
    owner, other = await connected(contributor), await connected(manager)
    transfer_id = (await start(owner, pool, payload(100)))["transfer_id"]
    assert (await other.ask({"type": "abort-transfer", "transfer_id": transfer_id}))["code"] == "not_found"
    assert (await owner.ask({"type": "get-transfer", "transfer_id": transfer_id}))["type"] == "transfer"
    await owner.close()
    await other.close()


async def test_an_idle_transfer_expires_within_minutes_and_frees_its_reservation(pool, contributor, settings):
    assert settings.POOLHUB_WS_TRANSFER_TTL_SECONDS <= 600
    settings.POOLHUB_WS_MAX_OPEN_TRANSFERS = 1
    socket = await connected(contributor)
    content = payload(1000)
    await start(socket, pool, content)
    assert (await start(socket, pool, content))["code"] == "staging_full"
    await run(transfers_expire, now=time.time() + settings.POOLHUB_WS_TRANSFER_TTL_SECONDS + 1)
    assert (await start(socket, pool, content))["type"] == "transfer-started"
    await socket.close()
