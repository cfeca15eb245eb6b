"""`make run`'s launcher with nothing configured: it comes up ready, serves, and leaves nothing behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from poolhub.embedded import free_port

BASE_DIR = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.e2e

# Everything a configured environment (or this test run) could pass on to the launcher.
CONFIG_PREFIXES = ("POOLHUB_", "CELERY_", "THROTTLE_", "DJANGO_", "JWT_")
CONFIG_NAMES = {"REDIS_URL", "MONGO_URL", "MONGO_DB", "DATABASE_URL", "SECRET_KEY", "PORT", "HOST",
                "ALLOWED_HOSTS", "DEBUG"}


def bare_env(var_dir: Path, port: int, filestore_port: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in CONFIG_NAMES and not key.startswith(CONFIG_PREFIXES)}
    env.update(POOLHUB_VAR_DIR=str(var_dir), PORT=str(port), POOLHUB_FILESTORE_PORT=str(filestore_port),
               PYTHONUNBUFFERED="1")
    return env


def wait_ready(url: str, launcher: subprocess.Popen[bytes], timeout: float = 240) -> httpx.Response | None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        assert launcher.poll() is None, f"the launcher exited with {launcher.returncode} before it was ready"
        try:
            last = httpx.get(f"{url}/readyz", timeout=10)
            if last.status_code == 200:
                return last
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return last


def family(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    try:
        return psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    process, url, log_path = start_launcher(tmp_path)
    try:
        yield process, url, log_path
    finally:
        leftovers(process, tmp_path)


def start_launcher(tmp_path: Path, **extra: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    port, filestore_port = free_port(), free_port()
    log_path = tmp_path / "launcher.log"
    env = {**bare_env(tmp_path / "var", port, filestore_port), **extra}
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "poolhub.launcher"], cwd=BASE_DIR, env=env,
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return process, f"http://127.0.0.1:{port}", log_path


def leftovers(process: subprocess.Popen[bytes], tmp_path: Path) -> None:
    """If the test failed midway, stop whatever this stack left: its own processes only."""
    if process.poll() is None:
        process.kill()
        process.wait(10)
    ours = []
    for candidate in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if str(tmp_path) in " ".join(candidate.info["cmdline"] or []):
                candidate.kill()
                ours.append(candidate)
    psutil.wait_procs(ours, timeout=10)


@pytest.mark.parametrize("stop", ["sigterm-launcher", "sigint-group"])
def test_launcher_with_nothing_configured(launcher: tuple[subprocess.Popen[bytes], str, Path], stop: str) -> None:
    """SIGTERM to the launcher (a service manager) or SIGINT to its whole group (Ctrl-C in a terminal)."""
    process, url, log_path = launcher

    ready = wait_ready(url, process)

    assert ready is not None and ready.status_code == 200, log_path.read_text()[-4000:]
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok", "broker": "ok", "filestore": "ok"}
    signup = httpx.post(f"{url}/api/v1/auth/signup",
                        json={"username": "first-client", "password": "a-long-and-unusual-passphrase-41"}, timeout=30)
    assert signup.status_code == 201, signup.text
    me = httpx.get(f"{url}/api/v1/auth/validate", headers={"Authorization": f"Bearer {signup.json()['access']}"},
                   timeout=30)
    assert me.json()["user"]["username"] == "first-client"

    children = family(process)
    names = " ".join(" ".join(child.cmdline()) for child in children)
    for part in ["uvicorn", "worker", "beat", "redis-server", "secantusd"]:
        assert part in names, f"{part} is not running under the launcher"

    if stop == "sigterm-launcher":
        process.send_signal(signal.SIGTERM)
    else:
        os.killpg(process.pid, signal.SIGINT)
    process.wait(60)

    assert process.returncode == 0, log_path.read_text()[-4000:]
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], [" ".join(p.cmdline()) for p in alive]
    log = log_path.read_text()
    assert "admin account created" in log
    assert "stopped; nothing left running" in log
    assert "Traceback" not in log, log[-4000:]


def test_killing_the_launcher_takes_its_children_down(launcher: tuple[subprocess.Popen[bytes], str, Path]) -> None:
    """Even SIGKILL, which the launcher cannot catch: the kernel tells each child its parent died."""
    process, _, log_path = launcher
    deadline = time.monotonic() + 240
    expected = ["uvicorn", "worker", "beat", "redis-server", "secantusd"]
    while time.monotonic() < deadline:  # wait until every part has started
        assert process.poll() is None, log_path.read_text()[-4000:]
        names = " ".join(" ".join(child.cmdline()) for child in family(process))
        if all(part in names for part in expected):
            break
        time.sleep(0.5)
    children = family(process)

    process.kill()
    process.wait(10)

    _, alive = psutil.wait_procs(children, timeout=30)
    assert alive == [], [" ".join(p.cmdline()) for p in alive]


def wait_for_line(log_path: Path, text: str, process: subprocess.Popen[bytes], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while text not in log_path.read_text():
        assert process.poll() is None, log_path.read_text()[-4000:]
        assert time.monotonic() < deadline, log_path.read_text()[-4000:]
        time.sleep(0.05)


def test_ctrl_c_while_beat_starts_stops_cleanly(launcher: tuple[subprocess.Popen[bytes], str, Path]) -> None:
    """Ctrl-C (SIGINT to the terminal's whole group) the moment beat is spawned, while the worker and
    beat are still importing: every child stops, and nobody prints a traceback."""
    process, _, log_path = launcher
    wait_for_line(log_path, "[poolhub] Celery beat", process)
    children = family(process)
    os.killpg(process.pid, signal.SIGINT)
    process.wait(60)

    log = log_path.read_text()
    assert process.returncode == 0, log[-4000:]
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], [" ".join(p.cmdline()) for p in alive]
    assert "stopped; nothing left running" in log
    assert "Traceback" not in log, log[-4000:]


@pytest.mark.parametrize("service", ["redis-server", "secantusd"])
def test_a_dead_data_service_stops_the_stack_and_says_so(launcher: tuple[subprocess.Popen[bytes], str, Path],
                                                        service: str) -> None:
    process, url, log_path = launcher
    ready = wait_ready(url, process)
    assert ready is not None and ready.status_code == 200, log_path.read_text()[-4000:]
    children = family(process)
    [victim] = [child for child in children if service in " ".join(child.cmdline())]
    victim.kill()
    process.wait(60)

    log = log_path.read_text()
    assert process.returncode == 1, log[-4000:]
    label = "the embedded Redis" if service == "redis-server" else "the embedded file store"
    assert f"{label}" in log and "exited with code" in log and "; stopping the stack" in log, log[-4000:]
    _, alive = psutil.wait_procs(children, timeout=30)
    assert alive == [], [" ".join(p.cmdline()) for p in alive]
    assert "stopped; nothing left running" in log


def test_the_launcher_trusts_forwarded_headers_only_from_named_proxies(
        launcher: tuple[subprocess.Popen[bytes], str, Path]) -> None:
    process, url, log_path = launcher
    ready = wait_ready(url, process)
    assert ready is not None and ready.status_code == 200, log_path.read_text()[-4000:]
    [web] = [child for child in family(process) if "uvicorn" in " ".join(child.cmdline())]
    assert "--no-proxy-headers" in web.cmdline()
    # A websocket frame is at most one base64 chunk and its JSON, not uvicorn's 16 MiB.
    cmdline = web.cmdline()
    assert int(cmdline[cmdline.index("--ws-max-size") + 1]) < 1024 * 1024
    os.killpg(process.pid, signal.SIGINT)
    process.wait(60)


def test_json_logs_of_a_stack_with_two_web_processes_are_json_from_first_line_to_last(tmp_path: Path) -> None:
    """uvicorn's parent process (with --workers), the admin account's creation, the launcher, the
    web processes, the worker and beat: under LOG_FORMAT=json a log collector parses every line."""
    process, url, log_path = start_launcher(tmp_path, LOG_FORMAT="json", WEB_CONCURRENCY="2")
    try:
        ready = wait_ready(url, process)
        assert ready is not None and ready.status_code == 200, log_path.read_text()[-4000:]
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    finally:
        leftovers(process, tmp_path)

    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
    assert all({"ts", "level", "logger", "message"} <= set(record) for record in records)
    messages = " ".join(record["message"] for record in records)
    assert "Started parent process" in messages and "Uvicorn running on" in messages
    password_file = tmp_path / "var" / "admin-password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert f"its generated password is in {password_file}" in messages
    assert password_file.read_text().strip() not in log_path.read_text()
