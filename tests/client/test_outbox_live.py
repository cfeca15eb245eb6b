"""The outbox against the live server: down then up, and a flush killed half-way then run again."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import pytest

from poolhub_client import Outbox, PoolhubClient
from poolhub_client.simulate import _closed_port
from tests.client.conftest import cli_env

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def queue_updates(box: Outbox, pool_id: str, count: int) -> set[str]:
    """Updates a client produced while offline, over several hours (several windows)."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=count)
    stamps = set()
    for i in range(count):
        item = box.add(pool_id, f"offline reading {i}\n".encode() * 500, timestamp=start + timedelta(hours=i))
        stamps.add(item.timestamp)
    return stamps


def server_timestamps(client: PoolhubClient, pool_id: str) -> list[str]:
    return sorted(datetime.fromisoformat(u["timestamp"]).astimezone(UTC).isoformat().replace("+00:00", "Z")
                  for u in client.iter_uploads(pool=pool_id))


def test_updates_queued_while_the_server_is_down_are_all_sent_once_it_is_up(sdk, pool, contributor, tmp_path):
    box = Outbox(tmp_path / "outbox.sqlite3", max_batch_items=3, max_attempts=2, backoff_base=0.01)
    stamps = queue_updates(box, str(pool.id), 7)

    down = PoolhubClient(_closed_port(), max_retries=0)
    report = box.flush(down)
    assert report.sent == 0 and report.pending == 7 and "unreachable" in report.errors[0]

    client = sdk(contributor)
    report = box.flush(client)
    assert (report.sent, report.batches, report.pending) == (7, 3, 0)
    assert server_timestamps(client, str(pool.id)) == sorted(stamps)
    assert box.flush(client).sent == 0
    assert client.uploads(pool=str(pool.id))["count"] == 7


KILLED_FLUSH = textwrap.dedent("""
    import json, os, signal, sys
    from poolhub_client import Outbox, PoolhubClient, Tokens

    url, box_path = sys.argv[1], sys.argv[2]
    tokens = Tokens(**json.loads(os.environ["TEST_TOKENS"]))
    box = Outbox(box_path, max_batch_items=2)
    # Killed for real (SIGKILL: no cleanup, no finally) once the server has accepted the first batch.
    box.after_send = lambda key, response: os.kill(os.getpid(), signal.SIGKILL)
    box.flush(PoolhubClient(url, tokens=tokens))
""")


def test_a_flush_killed_half_way_then_run_again_loses_nothing_and_duplicates_nothing(sdk, pool, contributor,
                                                                                     live_server_url, tmp_path):
    client = sdk(contributor)
    box_path = tmp_path / "outbox.sqlite3"
    with Outbox(box_path) as box:
        stamps = queue_updates(box, str(pool.id), 5)
    tokens = client.tokens
    env = cli_env(live_server_url, tmp_path / "cfg",
                  TEST_TOKENS=json.dumps({"access": tokens.access, "refresh": tokens.refresh}))
    killed = subprocess.run([sys.executable, "-c", KILLED_FLUSH, live_server_url, str(box_path)], env=env,
                            timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert client.uploads(pool=str(pool.id))["count"] == 2  # the first batch got through before the kill

    with Outbox(box_path, max_batch_items=2) as box:
        assert box.pending() == 5  # the killed process recorded nothing as sent
        report = box.flush(client)
        assert report.sent == 5 and report.pending == 0
    assert server_timestamps(client, str(pool.id)) == sorted(stamps)  # each exactly once
