"""Chunked uploads over the websocket, in process: the same checks and errors as REST uploads."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from accounts.models import Pool
from poolhub.filestore import Bucket, file_chunks
from tests.notifications.conftest import Socket, connected, run
from uploads.models import Upload
from uploads.staging import staging_used_bytes
from uploads.transfers import transfers_expire

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True)]

CHUNK = 64 * 1024


@pytest.fixture(autouse=True)
def _small_chunks(settings):
    settings.POOLHUB_WS_CHUNK_BYTES = CHUNK


def payload(size: int) -> bytes:
    return (b"POOLHUB-TEST-DATA\n" + os.urandom(size))[:size]


def an_hour_ago() -> str:
    return (datetime.now(UTC) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def start(socket: Socket, pool: Pool, data: bytes, **extra: Any) -> dict[str, Any]:
    frame = {"type": "start-transfer", "pool": str(pool.id), "filename": "readings.bin", "size": len(data),
             "timestamp": an_hour_ago(), "sha256": hashlib.sha256(data).hexdigest(), **extra}
    return await socket.ask(frame)


async def send_all(socket: Socket, transfer_id: str, data: bytes, *, offset: int = 0) -> int:
    while offset < len(data):
        reply = await socket.ask({"type": "write-chunk", "transfer_id": transfer_id, "offset": offset,
                                  "data": b64(data[offset:offset + CHUNK])})
        assert reply == {"type": "chunk-ack", "transfer_id": transfer_id, "offset": reply["offset"]}, reply
        assert reply["offset"] == min(offset + CHUNK, len(data))
        offset = reply["offset"]
    return offset


def nothing_stored() -> bool:
    return not Upload.objects.exists() and staging_used_bytes() == 0


def stored_bytes(upload_id: str) -> bytes:
    return b"".join(file_chunks(bucket=Bucket.UPLOADS, file_id=upload_id))


async def test_a_chunked_upload_is_accepted_and_stored_byte_exact(pool, contributor):
    data = payload(5 * CHUNK + 123)
    socket = await connected(contributor)
    started = await start(socket, pool, data, request_id="s")
    assert started["type"] == "transfer-started" and started["chunk_size"] == CHUNK and started["request_id"] == "s"
    await send_all(socket, started["transfer_id"], data)
    reply = await socket.ask({"type": "complete-upload", "transfer_id": started["transfer_id"], "request_id": "done"})
    assert reply["type"] == "upload-accepted" and reply["request_id"] == "done"
    upload = reply["upload"]
    assert (upload["pool"], upload["size"], upload["sha256"], upload["filename"]) == (
        str(pool.id), len(data), hashlib.sha256(data).hexdigest(), "readings.bin")
    assert await run(stored_bytes, upload_id=upload["id"]) == data  # tasks run inline in these tests
    again = await socket.ask({"type": "complete-upload", "transfer_id": started["transfer_id"]})
    assert again["type"] == "upload-accepted" and again["upload"]["id"] == upload["id"]  # a lost reply, asked again
    await socket.close()


async def test_a_transfer_survives_a_reconnect_of_the_same_user(pool, contributor):
    data = payload(3 * CHUNK + 5)
    first = await connected(contributor)
    transfer_id = (await start(first, pool, data))["transfer_id"]
    await first.ask({"type": "write-chunk", "transfer_id": transfer_id, "offset": 0, "data": b64(data[:CHUNK])})
    await first.close()

    second = await connected(contributor)
    status = await second.ask({"type": "get-transfer", "transfer_id": transfer_id})
    assert (status["type"], status["offset"], status["size"]) == ("transfer", CHUNK, len(data))
    await send_all(second, transfer_id, data, offset=status["offset"])
    upload = (await second.ask({"type": "complete-upload", "transfer_id": transfer_id}))["upload"]
    assert await run(stored_bytes, upload_id=upload["id"]) == data
    await second.close()


async def test_a_chunk_at_the_wrong_offset_is_refused_and_changes_nothing(pool, contributor):
    data = payload(2 * CHUNK)
    socket = await connected(contributor)
    transfer_id = (await start(socket, pool, data))["transfer_id"]
    for offset in (CHUNK, 1):
        reply = await socket.ask({"type": "write-chunk", "transfer_id": transfer_id, "offset": offset,
                                  "data": b64(data[offset:offset + CHUNK]), "request_id": "w"})
        assert (reply["code"], reply["details"]["offset"], reply["request_id"]) == ("conflict", 0, "w")
    await send_all(socket, transfer_id, data)
    duplicate = await socket.ask({"type": "write-chunk", "transfer_id": transfer_id, "offset": 0,
                                  "data": b64(data[:CHUNK])})
    assert duplicate["code"] == "conflict" and duplicate["details"]["offset"] == 2 * CHUNK
    upload = (await socket.ask({"type": "complete-upload", "transfer_id": transfer_id}))["upload"]
    assert await run(stored_bytes, upload_id=upload["id"]) == data
    await socket.close()


async def test_bytes_past_the_declared_size_are_refused(pool, contributor):
    data = payload(CHUNK // 2)
    socket = await connected(contributor)
    transfer_id = (await start(socket, pool, data))["transfer_id"]
    reply = await socket.ask({"type": "write-chunk", "transfer_id": transfer_id, "offset": 0,
                              "data": b64(data + b"extra")})
    assert reply["code"] == "file_too_large"
    status = await socket.ask({"type": "get-transfer", "transfer_id": transfer_id})
    assert status["offset"] == 0
    assert await run(nothing_stored)
    await socket.close()


async def test_a_file_over_the_pools_limit_is_refused_at_the_start(pool, contributor):
    await run(Pool.objects.filter(id=pool.id).update, max_file_bytes=1000)
    socket = await connected(contributor)
    reply = await start(socket, pool, payload(1001))
    assert reply["type"] == "error" and reply["code"] == "file_too_large"
    await socket.close()


@pytest.mark.parametrize("data", ["not base64!", "QUJD=", "", 12])
async def test_bad_base64_is_refused_and_the_transfer_goes_on(pool, contributor, data):
    socket = await connected(contributor)
    content = payload(100)
    transfer_id = (await start(socket, pool, content))["transfer_id"]
    reply = await socket.ask({"type": "write-chunk", "transfer_id": transfer_id, "offset": 0, "data": data})
    assert reply["code"] == "invalid"
    assert await run(nothing_stored)
    await send_all(socket, transfer_id, content)
    assert (await socket.ask({"type": "complete-upload", "transfer_id": transfer_id}))["type"] == "upload-accepted"
    await socket.close()


async def test_a_chunk_larger_than_chunk_size_is_refused(pool, contributor):
    content = payload(CHUNK + 1)
    socket = await connected(contributor)
    transfer_id = (await start(socket, pool, content))["transfer_id"]
    reply = await socket.ask({"type": "write-chunk", "transfer_id": transfer_id, "offset": 0, "data": b64(content)})
    assert reply["code"] == "invalid"
    assert await run(nothing_stored)
    await socket.close()


async def test_unknown_and_foreign_transfer_ids_are_not_found(pool, contributor, manager):
    content = payload(100)
    owner, thief = await connected(contributor), await connected(manager)
    transfer_id = (await start(owner, pool, content))["transfer_id"]
    for frame in ({"type": "write-chunk", "offset": 0, "data": b64(content)},
                  {"type": "complete-upload"}, {"type": "get-transfer"}):
        for socket, tid in ((thief, transfer_id), (owner, "0" * 32)):
            reply = await socket.ask({**frame, "transfer_id": tid})
            assert reply["type"] == "error" and reply["code"] == "not_found", (frame, reply)
    assert await run(nothing_stored)
    await send_all(owner, transfer_id, content)  # the owner's transfer is untouched
    assert (await owner.ask({"type": "complete-upload", "transfer_id": transfer_id}))["type"] == "upload-accepted"
    await owner.close()
    await thief.close()


async def test_an_expired_transfer_is_refused_and_its_bytes_dropped(pool, contributor):
    content = payload(2 * CHUNK)
    socket = await connected(contributor)
    transfer_id = (await start(socket, pool, content))["transfer_id"]
    await socket.ask({"type": "write-chunk", "transfer_id": transfer_id, "offset": 0, "data": b64(content[:CHUNK])})
    assert await run(staging_used_bytes) == CHUNK
    assert await run(transfers_expire, now=time.time() + 2 * 3600) == 1  # what beat does once it is idle too long
    assert await run(staging_used_bytes) == 0
    reply = await socket.ask({"type": "write-chunk", "transfer_id": transfer_id, "offset": CHUNK,
                              "data": b64(content[CHUNK:])})
    assert reply["code"] == "not_found"
    assert (await socket.ask({"type": "complete-upload", "transfer_id": transfer_id}))["code"] == "not_found"
    assert await run(nothing_stored)
    await socket.close()


async def test_a_checksum_mismatch_stores_nothing(pool, contributor):
    content = payload(CHUNK + 10)
    socket = await connected(contributor)
    transfer_id = (await start(socket, pool, content, sha256="0" * 64))["transfer_id"]
    await send_all(socket, transfer_id, content)
    reply = await socket.ask({"type": "complete-upload", "transfer_id": transfer_id})
    assert reply["code"] == "checksum_mismatch"
    assert await run(nothing_stored)
    await socket.close()


async def test_a_forbidden_type_is_refused_from_the_content(pool, contributor):
    elf = b"\x7fELF\x02\x01\x01\x00" + bytes(CHUNK)
    socket = await connected(contributor)
    transfer_id = (await start(socket, pool, elf, filename="innocent.csv"))["transfer_id"]
    reply = await socket.ask({"type": "write-chunk", "transfer_id": transfer_id, "offset": 0,
                              "data": b64(elf[:CHUNK])})
    if reply["type"] == "chunk-ack":  # the type is decided once enough bytes are in
        reply = await socket.ask({"type": "write-chunk", "transfer_id": transfer_id, "offset": CHUNK,
                                  "data": b64(elf[CHUNK:])})
        if reply["type"] == "chunk-ack":
            reply = await socket.ask({"type": "complete-upload", "transfer_id": transfer_id})
    assert reply["code"] == "forbidden_type"
    assert await run(nothing_stored)
    await socket.close()


async def test_completing_early_is_refused_and_the_transfer_goes_on(pool, contributor):
    content = payload(2 * CHUNK)
    socket = await connected(contributor)
    transfer_id = (await start(socket, pool, content))["transfer_id"]
    await socket.ask({"type": "write-chunk", "transfer_id": transfer_id, "offset": 0, "data": b64(content[:CHUNK])})
    reply = await socket.ask({"type": "complete-upload", "transfer_id": transfer_id})
    assert reply["code"] == "invalid" and reply["details"]["offset"] == CHUNK
    await send_all(socket, transfer_id, content, offset=CHUNK)
    assert (await socket.ask({"type": "complete-upload", "transfer_id": transfer_id}))["type"] == "upload-accepted"
    await socket.close()


async def test_start_checks_role_membership_and_fields(pool, listener, outsider, contributor):
    content = payload(10)
    reader, stranger, writer = await connected(listener), await connected(outsider), await connected(contributor)
    assert (await start(reader, pool, content))["code"] == "forbidden"
    assert (await start(stranger, pool, content))["code"] == "not_found"
    assert (await start(writer, pool, content, timestamp="yesterday"))["code"] == "invalid_timestamp"
    assert (await start(writer, pool, content, sha256="xyz"))["code"] == "invalid"
    assert (await start(writer, pool, content, size=0))["code"] == "empty_file"
    assert (await start(writer, pool, content, size="ten"))["code"] == "invalid"
    assert await run(nothing_stored)
    for socket in (reader, stranger, writer):
        await socket.close()


async def test_one_user_may_hold_only_so_many_open_transfers(pool, contributor, settings):
    settings.POOLHUB_WS_MAX_OPEN_TRANSFERS = 2
    content = payload(100)
    socket = await connected(contributor)
    first = (await start(socket, pool, content))["transfer_id"]
    await start(socket, pool, content)
    refused = await start(socket, pool, content)
    assert refused["type"] == "error" and refused["code"] == "staging_full"
    await send_all(socket, first, content)
    assert (await socket.ask({"type": "complete-upload", "transfer_id": first}))["type"] == "upload-accepted"
    assert (await start(socket, pool, content))["type"] == "transfer-started"  # a completed one frees a place
    await socket.close()
