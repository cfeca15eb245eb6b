"""The embedded stand-ins refuse to start on top of something else."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from poolhub.embedded import start_filestore


def test_filestore_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]

        with pytest.raises(RuntimeError, match=f"port {port} .* in use"):
            start_filestore(tmp_path / "filestore", port)


def test_embedded_redis_keeps_its_data_across_a_restart(tmp_path: Path) -> None:
    """It holds the only copy of cached uploads, queued tasks, idempotency keys and the denylist."""
    import redis

    from poolhub.embedded import start_redis

    data_dir = tmp_path / "var"
    service = start_redis(data_dir)
    try:
        client = redis.Redis.from_url(service.url)
        assert client.config_get("appendfsync")["appendfsync"] in {"everysec", "always"}
        client.set("staged-upload", b"bytes a client was told are safe")
    finally:
        service.stop()
    service = start_redis(data_dir)
    try:
        assert redis.Redis.from_url(service.url).get("staged-upload") == b"bytes a client was told are safe"
    finally:
        service.stop()


def test_embedded_data_files_are_the_owners_only(tmp_path: Path) -> None:
    import redis

    from poolhub.embedded import start_redis

    data_dir = tmp_path / "var"
    redis_service = start_redis(data_dir)
    store = start_filestore(data_dir / "filestore")
    try:
        redis.Redis.from_url(redis_service.url).set("k", "v")
        import pymongo

        mongo: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(store.url, serverSelectionTimeoutMS=5000)
        with mongo:
            mongo.get_default_database()["files"].insert_one({"a": 1})
    finally:
        store.stop()
        redis_service.stop()
    created = [path for path in data_dir.rglob("*") if not path.is_socket()]
    assert any(path.suffix == ".aof" or "appendonly" in path.name for path in created), created
    assert (data_dir / "filestore.log").exists()
    for path in [data_dir, *created]:
        mode = path.stat().st_mode & 0o777
        assert mode & 0o077 == 0, f"{path} is mode {oct(mode)}"
