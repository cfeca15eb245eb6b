"""The `poolhub` command line, run as a user would (a subprocess), against the live server."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import pytest

from poolhub_client.archive import xor_bytes
from poolhub_client.simulate import _closed_port
from tests import live
from tests.client.conftest import cli_env
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

STAMP = (datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)).isoformat()


def poolhub(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "poolhub_client", "--no-progress", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def as_user(live_server_url, tmp_path):
    """as_user(name) logs that persona in through the CLI, in its own config dir, and returns its env."""

    def login(username: str) -> dict[str, str]:
        env = cli_env(live_server_url, tmp_path / username, POOLHUB_PASSWORD=PASSWORD)
        done = poolhub(env, "login", "--username", username)
        assert done.returncode == 0, done.stderr
        return env

    return login


def test_login_stores_tokens_privately_and_never_prints_them(live_server_url, tmp_path, contributor, pool):
    env = cli_env(live_server_url, tmp_path / "cfg", POOLHUB_PASSWORD=PASSWORD)
    done = poolhub(env, "login", "--username", "contributor")
    assert done.returncode == 0, done.stderr
    stored = tmp_path / "cfg" / "credentials.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    tokens = json.loads(stored.read_text())
    assert tokens["access"] not in done.stdout + done.stderr
    assert tokens["refresh"] not in done.stdout + done.stderr

    whoami = poolhub(env, "whoami")
    assert whoami.returncode == 0 and "contributor" in whoami.stdout and str(pool.id) in whoami.stdout
    assert tokens["access"] not in whoami.stdout + whoami.stderr

    assert poolhub(env, "logout").returncode == 0
    assert "access" not in json.loads(stored.read_text())
    after = poolhub(env, "pools")
    assert after.returncode == 3 and "poolhub login" in after.stderr


def test_errors_give_clear_messages_and_exit_codes(live_server_url, tmp_path, contributor, listener, pool,
                                                    as_user):
    wrong = poolhub(cli_env(live_server_url, tmp_path / "w", POOLHUB_PASSWORD="nope-nope-nope"),
                    "login", "--username", "contributor")
    assert wrong.returncode == 3 and "invalid_credentials" in wrong.stderr

    listening = as_user("listener")
    reading = tmp_path / "reading.bin"
    reading.write_bytes(b"a reading")
    forbidden = poolhub(listening, "upload", "--pool", str(pool.id), str(reading))
    assert forbidden.returncode == 1 and "forbidden" in forbidden.stderr

    missing = poolhub(listening, "upload", "--pool", str(pool.id), str(tmp_path / "nope.bin"))
    assert missing.returncode == 2 and "no such file" in missing.stderr

    unreachable = poolhub(dict(listening, POOLHUB_URL=_closed_port()), "pools")
    assert unreachable.returncode == 4 and "unreachable" in unreachable.stderr


def test_upload_queue_flush_listen_and_result(live_server_url, tmp_path, contributor, manager, exporter, pool,
                                              as_user, celery_worker):
    contributing = as_user("contributor")
    files = []
    for i in range(3):
        path = tmp_path / f"reading-{i}.bin"
        path.write_bytes(f"reading {i}\n".encode() * 2000)
        files.append(path)

    uploaded = poolhub(contributing, "upload", "--pool", pool.name, "--timestamp", STAMP, str(files[0]))
    assert uploaded.returncode == 0, uploaded.stderr
    assert "reading-0.bin" in uploaded.stdout

    for path in files[1:]:
        queued = poolhub(contributing, "queue", "--pool", str(pool.id), "--timestamp", STAMP, str(path))
        assert queued.returncode == 0 and "queued" in queued.stdout
    down = poolhub(dict(contributing, POOLHUB_URL=_closed_port()), "flush", "--attempts", "1")
    assert down.returncode == 4 and "nothing is lost" in down.stderr
    flushed = poolhub(contributing, "flush")
    assert flushed.returncode == 0 and "sent 2 update(s)" in flushed.stdout
    assert "nothing to send" in poolhub(contributing, "flush").stdout

    heard = poolhub(contributing, "listen", "--from-start", "--count", "1", "--json", timeout=60)
    assert heard.returncode == 0, heard.stderr
    note = json.loads(heard.stdout.splitlines()[0])
    assert note["type"] == "upload.status" and note["seq"] > 0

    # The external server: one command per group, given the archive, writing the result.
    script = tmp_path / "aggregate.py"
    script.write_text(textwrap.dedent("""
        import sys
        from poolhub_client.archive import xor_files
        xor_files(sys.argv[1], sys.argv[2])
    """))
    exporting = as_user("exporter")
    worker = subprocess.Popen(
        [sys.executable, "-m", "poolhub_client", "--no-progress", "export-worker", "--pool", str(pool.id), "--once",
         "--poll-interval", "1", "--workdir", str(tmp_path / "work"),
         "--exec", f"{sys.executable} {script} {{archive}} {{output}}"],
        env=exporting, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        managing = as_user("manager")
        live.wait_for(lambda: _all_stored(managing, pool.id), what="uploads stored")
        group = _only_group(managing, pool.id)
        assert poolhub(managing, "pools").returncode == 0
        from poolhub_client import PoolhubClient

        with PoolhubClient(live_server_url) as client:
            client.login("manager", PASSWORD)
            client.close_group(group)
        out, err = worker.communicate(timeout=90)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    assert f"group {group}: result" in out

    fetched = poolhub(contributing, "result", "--pool", str(pool.id), "--out", str(tmp_path / "result.bin"))
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "result.bin").read_bytes() == xor_bytes([p.read_bytes() for p in files])


def _all_stored(env: dict[str, str], pool_id: object) -> bool:
    from poolhub_client import PoolhubClient

    with PoolhubClient(env["POOLHUB_URL"]) as client:
        client.login("manager", PASSWORD)
        uploads = list(client.iter_uploads(pool=str(pool_id)))
    return len(uploads) == 0 or all(u["status"] == "stored" for u in uploads)


def _only_group(env: dict[str, str], pool_id: object) -> str:
    from poolhub_client import PoolhubClient

    with PoolhubClient(env["POOLHUB_URL"]) as client:
        client.login("manager", PASSWORD)
        groups = client.groups(str(pool_id))
    assert len(groups) == 1
    return str(groups[0]["id"])


def test_simulate_runs_a_small_round_end_to_end(live_server_url, tmp_path, admin_user, celery_worker):
    env = cli_env(live_server_url, tmp_path / "sim", POOLHUB_ADMIN_USERNAME=admin_user.username,
                  POOLHUB_ADMIN_PASSWORD=PASSWORD)
    done = poolhub(env, "simulate", "--clients", "6", "--listeners", "2", "--offline", "1", "--offline-items", "2",
                   "--size", "8KB", "--timeout", "120", timeout=280)
    assert done.returncode == 0, done.stdout + done.stderr
    table = dict(re.findall(r"^(\S.*?)\s{2,}(\S.*)$", done.stdout, flags=re.MULTILINE))
    assert table["members who received the result"] == "7/7"  # 6 clients and the exporter
    assert table["uploads accepted"] == "5"  # 3 online contributors, 1 offline client with 2 updates
    assert table["groups exported"] == "2"  # the offline updates span two windows
    assert table["status"] == "OK" and "problem:" not in done.stdout


def test_provision_writes_credentials_once_to_a_private_file(live_server_url, tmp_path, manager, contributor, pool,
                                                              as_user):
    managing = as_user("manager")
    out = tmp_path / "creds.csv"
    done = poolhub(managing, "provision", "--pool", str(pool.id), "--count", "3", "--prefix", "station",
                   "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    rows = [line.split(",") for line in out.read_text().splitlines()]
    assert rows[0] == ["username", "password", "role", "pool", "url"]
    assert len(rows) == 4 and all(row[2] == "contributor" and row[3] == str(pool.id) for row in rows[1:])
    for username, password, *_ in rows[1:]:
        assert password not in done.stdout + done.stderr
        device = poolhub(cli_env(live_server_url, tmp_path / username, POOLHUB_PASSWORD=password),
                         "login", "--username", username)
        assert device.returncode == 0, device.stderr

    again = poolhub(managing, "provision", "--pool", str(pool.id), "--count", "1", "--out", str(out))
    assert again.returncode == 2 and "exists" in again.stderr
    assert len(out.read_text().splitlines()) == 4  # the only copy of the passwords is untouched

    refused_out = tmp_path / "refused.csv"
    refused = poolhub(as_user("contributor"), "provision", "--pool", str(pool.id), "--count", "1",
                      "--out", str(refused_out))
    assert refused.returncode == 1 and "forbidden" in refused.stderr
    assert not refused_out.exists()


def test_an_admin_sees_pools_it_is_not_a_member_of_without_a_bogus_role(live_server_url, tmp_path, admin_user,
                                                                         pool, as_user):
    listing = poolhub(as_user(admin_user.username), "pools")
    assert listing.returncode == 0, listing.stderr
    line = next(line for line in listing.stdout.splitlines() if str(pool.id) in line)
    assert "role None" not in line and "not a member" in line
