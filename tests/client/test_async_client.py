"""The asyncio client's calls against the live server, and the exporter helper on polling alone."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from poolhub_client import AsyncPoolhubClient, BatchItem, Conflict, Exporter, Forbidden, NotFound
from poolhub_client.archive import xor_bytes, xor_files
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

STAMP = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)


async def logged_in(url: str, username: str) -> AsyncPoolhubClient:
    client = AsyncPoolhubClient(url)
    await client.login(username, PASSWORD)
    return client


async def wait_stored(client: AsyncPoolhubClient, pool_id: str, count: int) -> None:
    for _ in range(300):
        uploads = [u async for u in client.iter_uploads(pool=pool_id)]
        if len(uploads) == count and all(u["status"] == "stored" for u in uploads):
            return
        await asyncio.sleep(0.2)
    raise AssertionError("uploads were not stored in time")


def test_async_client_through_a_round_with_an_exporter_polling_only(live_server_url, admin_user, tmp_path,
                                                                     celery_worker):
    url = live_server_url

    async def scenario() -> None:
        admin = await logged_in(url, admin_user.username)
        pool = await admin.create_pool("async-pool", window_seconds=3600)
        pool_id = pool["id"]
        assert (await admin.get_pool(pool_id))["name"] == "async-pool"
        assert (await admin.update_pool(pool_id, grace_seconds=5))["grace_seconds"] == 5
        assert pool_id in {p["id"] for p in await admin.list_pools()}

        station, aggregator = AsyncPoolhubClient(url), AsyncPoolhubClient(url)
        await station.signup("async-station", "a-long-enough-passphrase")
        await aggregator.signup("async-aggregator", "another-long-passphrase")
        await admin.add_member(pool_id, "async-station", "contributor")
        await admin.add_member(pool_id, "async-aggregator", "exporter")
        assert {m["username"] for m in await station.members(pool_id)} == {"async-station", "async-aggregator"}
        assert (await station.validate())["pools"][0]["id"] == pool_id

        reading = tmp_path / "reading.bin"
        reading.write_bytes(b"async reading\n" * 5000)
        single = await station.upload(pool_id, reading, timestamp=STAMP)
        batch = await station.upload_batch(pool_id, [BatchItem(file=b"one\n" * 900, timestamp=STAMP),
                                                     BatchItem(file=b"two\n" * 700, timestamp=STAMP)])
        assert len(batch["uploads"]) == 2
        with pytest.raises(Forbidden):
            await aggregator.upload(pool_id, b"not mine to send", timestamp=STAMP)
        await wait_stored(station, pool_id, 3)
        page = await station.uploads(pool=pool_id, status="stored", limit=2)
        assert page["count"] == 3 and len(page["results"]) == 2
        detail = await station.get_upload(single["id"])
        assert detail["events"][0]["type"] == "upload.cached"
        back = await station.download_upload(single["id"], tmp_path / "back.bin")
        assert back.read_bytes() == reading.read_bytes()

        group_id = str(single["group"])
        assert (await station.get_group(group_id))["upload_count"] == 3
        with pytest.raises(Conflict):
            await aggregator.claim_group(group_id)  # still open
        helper = Exporter(aggregator, pool_id, lambda archive, work: xor_files(archive, work / "r.bin"),
                          workdir=tmp_path / "work", use_socket=False, poll_interval=0.3)
        running = asyncio.create_task(helper.run(max_groups=1))
        closed = await aggregator.close_group(group_id)  # an exporter may trigger too
        assert closed["status"] == "closed"
        stats = await asyncio.wait_for(running, 60)
        assert [e.group for e in stats.exported] == [group_id]
        assert [g["id"] for g in await station.groups(pool_id, status="completed")] == [group_id]

        result, path = await station.download_latest_result(pool_id, tmp_path / "result.bin")
        expected = xor_bytes([reading.read_bytes(), b"one\n" * 900, b"two\n" * 700])
        assert path.read_bytes() == expected and result["group"] == group_id

        await admin.remove_member(pool_id, "async-station")
        with pytest.raises(NotFound):
            await station.latest_result(pool_id)
        await station.logout()
        for client in (admin, station, aggregator):
            await client.aclose()

    asyncio.run(scenario())
    assert not list(Path(tmp_path).glob("*.part"))
