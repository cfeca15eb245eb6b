"""How much the pool's usage counter (lifecycle.PoolUsage, one row per pool, locked from an
upload's reservation to its commit) holds up concurrent uploads to one pool.

Not a test: a measurement for docs/lifecycle.md. Run it against a scratch PostgreSQL database and
Redis database (it creates pools and users there and flushes that Redis database):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/scratch REDIS_URL=redis://127.0.0.1:6379/8 \\
        .venv/bin/python manage.py migrate
    DATABASE_URL=... REDIS_URL=... .venv/bin/python tools/measure_usage_lock.py [--uploads 10] [--rounds 3]

16 processes (as 16 web workers would be) each send `--uploads` uploads of `--size` bytes (200 KiB) through the
upload endpoint, in process (Django's test client: the view, the Redis staging and the accepting
transaction; the store task is not sent). Scenarios: all 16 to one pool; spread over 4 pools;
one pool with the counter's reservation left out (what the lock costs at most). Prints files/s.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import sys
import time
from datetime import UTC, datetime
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "poolhub.settings")

PROCESSES = 16
SIZE = 200 * 1024


def _setup(*, without_counter: bool) -> None:
    import django

    django.setup()
    import logging

    logging.disable(logging.INFO)  # one line per upload otherwise
    from django.conf import settings

    settings.ALLOWED_HOSTS = ["*"]
    import uploads.services

    uploads.services._enqueue_store = lambda upload_id: None  # only the acceptance is measured
    if without_counter:
        uploads.services.upload_admit = lambda **kwargs: None


def _send(args: tuple[str, str, int, int, Any, bool]) -> float:
    token, pool_id, count, size, barrier, without_counter = args
    _setup(without_counter=without_counter)
    from django.db import connection
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    connection.ensure_connection()
    barrier.wait()
    started = time.perf_counter()
    for _ in range(count):
        handle = _named(secrets.token_bytes(size))
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        response = client.post(f"/api/v1/pools/{pool_id}/uploads", {"file": handle, "timestamp": stamp},
                               format="multipart")
        if response.status_code != 202:
            raise SystemExit(f"upload refused: {response.status_code} {response.content[:300]!r}")
    connection.close()
    return started


def _named(data: bytes) -> Any:
    import io

    handle = io.BytesIO(data)
    handle.name = "sample.bin"
    return handle


def _scenario(name: str, pools: int, uploads: int, size: int, without_counter: bool) -> float:
    from accounts.models import Membership, Pool, Role, User
    from accounts.tokens import token_pair_issue
    from poolhub.redis import redis_client

    tag = secrets.token_hex(3)
    pool_rows = [Pool.objects.create(name=f"measure-{tag}-{n}", quota_bytes=10**12) for n in range(pools)]
    tokens = []
    for n in range(PROCESSES):
        user = User.objects.create_user(username=f"measure-{tag}-{n}", password=secrets.token_urlsafe(16))
        pool = pool_rows[n % pools]
        Membership.objects.create(pool=pool, user=user, role=Role.CONTRIBUTOR)
        tokens.append((token_pair_issue(user=user)["access"], str(pool.id)))
    manager = multiprocessing.Manager()
    barrier = manager.Barrier(PROCESSES + 1)
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as workers:
        pending = workers.map_async(_send, [(token, pool_id, uploads, size, barrier, without_counter)
                                            for token, pool_id in tokens])
        barrier.wait()
        started = time.perf_counter()
        pending.get()
        elapsed = time.perf_counter() - started
    rate = PROCESSES * uploads / elapsed
    print(f"{name:<34} {PROCESSES * uploads:>4} uploads in {elapsed:6.2f} s: {rate:6.1f} files/s", flush=True)
    redis_client().flushdb()  # the staged bytes of uploads never stored
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=10, help="uploads per process")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=SIZE, help="bytes per upload")
    options = parser.parse_args()
    _setup(without_counter=False)
    from django.db import connection

    if connection.vendor != "postgresql":
        raise SystemExit("run it on PostgreSQL (DATABASE_URL): SQLite runs one writer at a time anyway")
    for _ in range(options.rounds):
        _scenario("16 processes, one pool", 1, options.uploads, options.size, False)
        _scenario("16 processes, 4 pools", 4, options.uploads, options.size, False)
        _scenario("16 processes, one pool, no counter", 1, options.uploads, options.size, True)


if __name__ == "__main__":
    main()
