"""The SDK resumes interrupted uploads (tus) and downloads (Range) against the live server.

A small TCP proxy between the SDK and the server cuts the connection once, mid-transfer, the
way a flaky mobile link does; the transfer must finish from where it was, byte-exact.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from poolhub_client import PoolhubClient
from poolhub_client.flows import TusState
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


class CuttingProxy:
    """Forwards TCP to `upstream`; the first time `cut_up` bytes went up (or `cut_down` came down)
    on one connection, it closes that connection, and lets later ones through untouched."""

    def __init__(self, upstream: str, *, cut_up: int | None = None, cut_down: int | None = None) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.cut_up = cut_up
        self.cut_down = cut_down
        self.cuts = 0
        self.connections = 0
        self.range_requests = 0  # requests that went up asking for part of a body
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self.lock:
                self.connections += 1
            pair = (client, server)
            threading.Thread(target=self._pump, args=(client, server, "up", pair), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, "down", pair), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, direction: str,
              pair: tuple[socket.socket, socket.socket]) -> None:
        moved = 0
        try:
            while chunk := source.recv(65536):
                moved += len(chunk)
                if direction == "up":
                    self.range_requests += chunk.lower().count(b"\r\nrange: bytes=")
                limit = self.cut_up if direction == "up" else self.cut_down
                if limit is not None and moved >= limit and self._take_cut():
                    target.sendall(chunk[: len(chunk) - (moved - limit)])
                    for sock in pair:
                        sock.shutdown(socket.SHUT_RDWR)
                        sock.close()
                    return
                target.sendall(chunk)
        except OSError:
            pass
        for sock in pair:
            with contextlib.suppress(OSError):
                sock.close()

    def _take_cut(self) -> bool:
        with self.lock:
            if self.cuts:
                return False
            self.cuts += 1
            return True

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def proxy(live_server_url: str) -> Iterator[Callable[..., CuttingProxy]]:
    made: list[CuttingProxy] = []

    def build(**cuts: int) -> CuttingProxy:
        made.append(CuttingProxy(live_server_url, **cuts))
        return made[-1]

    yield build
    for one in made:
        one.close()


def wait_stored(client: PoolhubClient, upload_id: str, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        upload = client.get_upload(upload_id)
        if upload["status"] != "cached":
            return dict(upload)
        time.sleep(0.2)
    raise AssertionError(f"upload {upload_id} was not stored in {timeout}s")


def test_a_tus_upload_cut_midway_resumes_and_is_stored_byte_exact(proxy, pool, contributor, celery_worker,
                                                                  tmp_path: Path) -> None:
    data = os.urandom(10 * 1024 * 1024)
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    cutting = proxy(cut_up=6 * 1024 * 1024)  # in the middle of the second 4 MiB PATCH
    with PoolhubClient(cutting.url, tus_threshold=1024 * 1024) as client:
        client.login(contributor.username, PASSWORD)
        progress: list[int] = []
        state = TusState()
        upload = client.upload(str(pool.id), path, progress=lambda done, total: progress.append(done), tus=state)
        assert cutting.cuts == 1  # the link really broke once
        assert upload["sha256"] == hashlib.sha256(data).hexdigest() and upload["size"] == len(data)
        stored = wait_stored(client, str(upload["id"]))
        assert stored["status"] == "stored"
        back = client.download_upload(str(upload["id"]), tmp_path / "back.bin")
    assert back.read_bytes() == data
    assert progress[-1] == len(data)


def test_a_fresh_client_continues_a_killed_clients_tus_upload(live_server_url, pool, contributor,
                                                              tmp_path: Path) -> None:
    data = os.urandom(5 * 1024 * 1024)  # two PATCHes of the SDK's 4 MiB
    kept: list[str] = []

    class Killed(Exception):
        pass

    def die_after_first_chunk(done: int, total: int | None) -> None:
        raise Killed  # the process dies after the server took the first chunk

    with PoolhubClient(live_server_url) as first:
        first.login(contributor.username, PASSWORD)
        with pytest.raises(Killed):
            first.upload(str(pool.id), data, filename="model.bin", tus=TusState(on_location=kept.append),
                         progress=die_after_first_chunk)
    assert len(kept) == 1

    with PoolhubClient(live_server_url) as second:
        second.login(contributor.username, PASSWORD)
        upload = second.upload(str(pool.id), data, filename="model.bin", tus=TusState(location=kept[0]))
    assert upload["sha256"] == hashlib.sha256(data).hexdigest()


def test_an_archive_download_cut_midway_resumes_with_range(proxy, pool, contributor, exporter, celery_worker,
                                                           tmp_path: Path) -> None:
    with PoolhubClient(proxy().url) as uploader:
        uploader.login(contributor.username, PASSWORD)
        files = [os.urandom(700 * 1024) for _ in range(3)]
        stamp = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)  # one window for all three
        uploads = [uploader.upload(str(pool.id), data, filename=f"u{i}.bin", timestamp=stamp)
                   for i, data in enumerate(files)]
        for upload in uploads:
            wait_stored(uploader, str(upload["id"]))
    group = str(uploads[0]["group"])

    cutting = proxy(cut_down=1024 * 1024)
    with PoolhubClient(cutting.url) as client:
        client.login(exporter.username, PASSWORD)
        client.close_group(group)
        lease = client.claim_group(group)
        connections_before = cutting.connections
        resumed = client.download_archive(group, lease["lease_id"], tmp_path / "resumed.tar")
        assert cutting.cuts == 1 and cutting.connections > connections_before  # cut, then a new connection
        assert cutting.range_requests == 1  # which asked only for the rest
        whole = client.download_archive(group, lease["lease_id"], tmp_path / "whole.tar")
    assert hashlib.sha256(resumed.read_bytes()).digest() == hashlib.sha256(whole.read_bytes()).digest()
    for data in files:
        assert data in resumed.read_bytes()
