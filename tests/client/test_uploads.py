"""Uploads through the SDK against the live server: single, batch, history, detail, content, errors."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime, timedelta

import pytest

from accounts.models import Pool
from poolhub_client import BatchItem, Conflict, FileTooLarge, Forbidden, NotFound, ValidationError
from tests import live

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)  # an hour's window, past


def payload(label: str, size: int = 300_000) -> bytes:
    head = f"poolhub test {label}\n".encode()
    return head + bytes((i * 7 + len(label)) % 251 for i in range(size - len(head)))


class NonSeekable(io.RawIOBase):
    """A pipe-like stream: readable once, no seek, no size."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_upload_from_path_file_object_and_bytes_then_history_detail_and_content(sdk, pool, contributor, tmp_path,
                                                                                 celery_worker):
    client = sdk(contributor)
    source = tmp_path / "reading.bin"
    source.write_bytes(payload("path"))
    seen: list[tuple[int, int | None]] = []

    from_path = client.upload(str(pool.id), source, timestamp=NOW, progress=lambda d, t: seen.append((d, t)))
    assert from_path["status"] in {"cached", "stored"}
    assert from_path["filename"] == "reading.bin" and from_path["size"] == source.stat().st_size
    assert from_path["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert seen and seen[-1][0] == seen[-1][1]  # the progress callback reached the end

    with source.open("rb") as handle:
        handle.seek(0)
        second = client.upload(str(pool.id), io.BytesIO(payload("fileobj")), timestamp=NOW + timedelta(minutes=1),
                               filename="fileobj.bin")
    piped = client.upload(str(pool.id), NonSeekable(payload("pipe")), timestamp=NOW + timedelta(minutes=2),
                          filename="pipe.bin")
    raw = client.upload(str(pool.id), b"small but not empty", timestamp=NOW + timedelta(minutes=3))
    ids = {from_path["id"], second["id"], piped["id"], raw["id"]}
    assert len(ids) == 4

    live.wait_for(lambda: all(u["status"] == "stored" for u in client.iter_uploads(pool=str(pool.id))),
                  what="every upload stored")
    history = list(client.iter_uploads(pool=str(pool.id), page_size=2))  # several pages
    assert {u["id"] for u in history} == ids
    assert {u["id"] for u in client.iter_uploads(status="stored")} == ids
    page = client.uploads(pool=str(pool.id), limit=1)
    assert page["count"] == 4 and len(page["results"]) == 1

    detail = client.get_upload(piped["id"])
    assert detail["status"] == "stored"
    seqs = [event["seq"] for event in detail["events"]]
    assert seqs == sorted(seqs) and {"upload.cached", "upload.stored"} <= {e["type"] for e in detail["events"]}

    target = client.download_upload(piped["id"], tmp_path / "back.bin")
    assert target.read_bytes() == payload("pipe")
    folder = tmp_path / "downloads"
    folder.mkdir()
    named = client.download_upload(from_path["id"], folder)  # a directory: the server's filename is used
    assert named.name == "reading.bin" and named.read_bytes() == source.read_bytes()


def test_idempotency_key_replays_and_refuses_a_different_request(sdk, pool, contributor):
    client = sdk(contributor)
    first = client.upload(str(pool.id), payload("a"), timestamp=NOW, idempotency_key="key-one")
    again = client.upload(str(pool.id), payload("a"), timestamp=NOW, idempotency_key="key-one")
    assert again["id"] == first["id"]
    assert client.uploads(pool=str(pool.id))["count"] == 1
    with pytest.raises(Conflict) as conflict:
        client.upload(str(pool.id), payload("b"), timestamp=NOW, idempotency_key="key-one")
    assert conflict.value.code == "idempotency_conflict"


def test_upload_errors_are_typed(sdk, pool, contributor, listener, outsider):
    client = sdk(contributor)
    with pytest.raises(ValidationError) as empty:
        client.upload(str(pool.id), b"", timestamp=NOW)
    assert empty.value.code == "empty_file"
    with pytest.raises(ValidationError) as mismatch:
        client.upload(str(pool.id), payload("x"), timestamp=NOW, sha256="0" * 64)
    assert mismatch.value.code == "checksum_mismatch"
    with pytest.raises(ValidationError) as bad_time:
        client.upload(str(pool.id), payload("x"), timestamp="yesterday-ish")
    assert bad_time.value.code == "invalid_timestamp"
    with pytest.raises(Forbidden):
        sdk(listener).upload(str(pool.id), payload("x"), timestamp=NOW)
    with pytest.raises(NotFound):
        sdk(outsider).upload(str(pool.id), payload("x"), timestamp=NOW)
    with pytest.raises(NotFound):
        client.get_upload("00000000-0000-0000-0000-000000000000")

    Pool.objects.filter(id=pool.id).update(max_file_bytes=1000)
    with pytest.raises(FileTooLarge) as too_large:
        client.upload(str(pool.id), payload("big", 5000), timestamp=NOW)
    assert (too_large.value.status, too_large.value.code) == (413, "file_too_large")
    assert client.uploads(pool=str(pool.id))["count"] == 0  # nothing was created by any of these


def test_batch_upload_is_accepted_whole_or_refused_naming_the_bad_item(sdk, pool, contributor, tmp_path):
    client = sdk(contributor)
    on_disk = tmp_path / "day-two.bin"
    on_disk.write_bytes(payload("day-two"))
    items = [BatchItem(file=payload("day-one"), timestamp=NOW - timedelta(days=1), filename="day-one.bin"),
             BatchItem(file=on_disk, timestamp=NOW),
             BatchItem(file=io.BytesIO(payload("day-three")), timestamp=NOW + timedelta(hours=2),
                       filename="day-three.bin")]
    batch = client.upload_batch(str(pool.id), items)
    assert [u["filename"] for u in batch["uploads"]] == ["day-one.bin", "day-two.bin", "day-three.bin"]
    assert len({u["group"] for u in batch["uploads"]}) == 3  # three windows of an hour

    refused_items = [BatchItem(file=payload("fine"), timestamp=NOW), BatchItem(file=b"", timestamp=NOW)]
    with pytest.raises(ValidationError) as refused:
        client.upload_batch(str(pool.id), refused_items)
    assert [item["index"] for item in refused.value.details["items"]] == [1]
    assert refused.value.details["items"][0]["code"] == "empty_file"
    assert client.uploads(pool=str(pool.id))["count"] == 3
