"""Groups, export and results through the SDK, and the exporter helper through whole rounds."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from accounts.models import Pool
from batching.models import Lease
from poolhub_client import AsyncPoolhubClient, Conflict, Exporter, NotFound
from poolhub_client.archive import archive_upload_ids, iter_members, xor_bytes, xor_files
from poolhub_client.exporter import Export, ExporterStats
from tests import live
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WINDOW_START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)


def contribute(client, pool_id: str, count: int) -> dict[str, bytes]:
    """`count` uploads in one window; returns {upload id: bytes}, once every one is stored."""
    sent = {}
    for i in range(count):
        data = f"reading {i}\n".encode() * (1000 + 97 * i)
        upload = client.upload(pool_id, data, timestamp=WINDOW_START + timedelta(minutes=i))
        sent[upload["id"]] = data
    live.wait_for(lambda: all(client.get_upload(i)["status"] == "stored" for i in sent), what="uploads stored")
    return sent


def test_round_calls_and_their_errors(sdk, pool, manager, contributor, exporter, listener, outsider, tmp_path,
                                      celery_worker):
    pool_id = str(pool.id)
    sent = contribute(sdk(contributor), pool_id, 3)
    group_id = sdk(contributor).get_upload(next(iter(sent)))["group"]
    exporting = sdk(exporter)

    assert [g["id"] for g in sdk(listener).groups(pool_id, status="open")] == [group_id]
    with pytest.raises(Conflict) as early:
        exporting.claim_group(group_id)
    assert early.value.code == "not_ready"
    with pytest.raises(NotFound):
        sdk(outsider).get_group(group_id)

    closed = sdk(manager).close_group(group_id)
    assert closed["status"] == "closed" and closed["upload_count"] == 3
    assert [g["id"] for g in exporting.groups(pool_id, status="closed")] == [group_id]
    lease = exporting.claim_group(group_id)
    with pytest.raises(Conflict) as twice:
        exporting.claim_group(group_id)
    assert twice.value.code == "already_claimed"

    archive = exporting.download_archive(group_id, lease["lease_id"], tmp_path)
    assert archive.name.endswith(".tar")
    names = [name for name, _ in iter_members(archive)]
    assert names[0] == "manifest.json"
    assert archive_upload_ids(archive) == set(sent)

    combined = xor_files(archive, tmp_path / "xor.bin")
    assert combined.read_bytes() == xor_bytes(list(sent.values()))
    result = exporting.post_result(group_id, lease["lease_id"], combined)
    assert result["sha256"] == hashlib.sha256(combined.read_bytes()).hexdigest()

    latest, path = sdk(listener).download_latest_result(pool_id, tmp_path / "result.bin")
    assert latest["id"] == result["id"] and path.read_bytes() == combined.read_bytes()
    assert sdk(manager).get_group(group_id)["status"] == "completed"
    with pytest.raises(NotFound):
        sdk(outsider).latest_result(pool_id)
    with pytest.raises(NotFound):
        sdk(outsider).download_result(result["id"], tmp_path / "stolen.bin")
    assert not (tmp_path / "stolen.bin").exists()


async def _login(url: str, username: str) -> AsyncPoolhubClient:
    client = AsyncPoolhubClient(url)
    await client.login(username, PASSWORD)
    return client


def test_exporter_helper_runs_a_whole_round_and_every_member_hears_of_it(sdk, live_server_url, pool, manager,
                                                                        contributor, exporter, listener, tmp_path,
                                                                        celery_worker):
    pool_id = str(pool.id)
    sent = contribute(sdk(contributor), pool_id, 4)
    group_id = sdk(contributor).get_upload(next(iter(sent)))["group"]

    async def round_trip() -> tuple[list[dict], ExporterStats]:
        exporting = await _login(live_server_url, "exporter")
        listening = await _login(live_server_url, "listener")
        helper = Exporter(exporting, pool_id, lambda archive, workdir: xor_files(archive, workdir / "out.bin"),
                          workdir=tmp_path / "work", poll_interval=60)  # the socket must do it, not polling
        notes: list[dict] = []

        heard = listening.listen()

        async def hear() -> None:
            async for note in heard:
                notes.append(note)
                if note["type"] == "result.available":
                    return

        hearing = asyncio.create_task(hear())
        running = asyncio.create_task(helper.run(max_groups=1))
        while helper.listener is None:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(helper.listener.connected.wait(), 30)  # the exporter's socket is up
        await asyncio.wait_for(heard.connected.wait(), 30)  # and the listener's
        await asyncio.to_thread(sdk(manager).close_group, group_id)
        stats = await asyncio.wait_for(running, 60)
        await asyncio.wait_for(hearing, 30)
        for client in (exporting, listening):
            await client.aclose()
        return notes, stats

    notes, stats = asyncio.run(round_trip())
    assert [e.group for e in stats.exported] == [group_id]
    types = [n["type"] for n in notes if n.get("group") == group_id]
    assert "group.closed" in types and types[-1] == "result.available"
    result_note = notes[-1]
    expected = xor_bytes(list(sent.values()))
    assert result_note["sha256"] == hashlib.sha256(expected).hexdigest()
    target = sdk(listener).download_result(result_note["result_id"], tmp_path / "r.bin", sha256=result_note["sha256"])
    assert target.read_bytes() == expected


def test_exporter_claims_again_when_its_lease_expired_and_skips_groups_claimed_by_another(
        sdk, live_server_url, pool, manager, contributor, exporter, tmp_path, celery_worker):
    pool_id = str(pool.id)
    sent = contribute(sdk(contributor), pool_id, 2)
    group_id = sdk(contributor).get_upload(next(iter(sent)))["group"]
    sdk(manager).close_group(group_id)

    @sync_to_async
    def expire_leases() -> None:
        Lease.objects.filter(group_id=group_id).update(expires_at=datetime.now(UTC) - timedelta(seconds=1))

    async def slow_work(archive: Path, workdir: Path) -> bytes:
        await expire_leases()  # the work took longer than the lease
        return b"aggregate of " + str(len(archive_upload_ids(archive))).encode()

    async def scenario() -> tuple[Export | None, Export | None, ExporterStats]:
        exporting = await _login(live_server_url, "exporter")
        first = await Exporter(exporting, pool_id, slow_work, workdir=tmp_path / "a").process(group_id)
        rival = Exporter(exporting, pool_id, slow_work, workdir=tmp_path / "b")
        second = await rival.process(group_id)
        await exporting.aclose()
        return first, second, rival.stats

    first, second, rival_stats = asyncio.run(scenario())
    assert first is not None and first.lease_renewals == 1
    assert first.result["group"] == group_id
    assert second is None and rival_stats.skipped == {group_id: "conflict"}  # the group has its result
    _, path = sdk(contributor).download_latest_result(pool_id, tmp_path / "latest.bin")
    assert path.read_bytes() == b"aggregate of 2"


def test_exporter_skips_a_group_another_exporter_holds(sdk, live_server_url, pool, manager, contributor, exporter,
                                                       tmp_path, celery_worker):
    pool_id = str(pool.id)
    sent = contribute(sdk(contributor), pool_id, 1)
    group_id = sdk(contributor).get_upload(next(iter(sent)))["group"]
    sdk(manager).close_group(group_id)
    sdk(exporter).claim_group(group_id)  # someone else's live lease

    async def scenario() -> tuple[Export | None, dict[str, str]]:
        exporting = await _login(live_server_url, "exporter")
        helper = Exporter(exporting, pool_id, lambda a, w: b"x", workdir=tmp_path)
        outcome = await helper.process(group_id)
        await exporting.aclose()
        return outcome, helper.stats.skipped

    outcome, skipped = asyncio.run(scenario())
    assert outcome is None and skipped == {group_id: "already_claimed"}
    assert Pool.objects.get(id=pool.id).groups.get(id=group_id).status == "exporting"
