"""`make run`: the whole system in the foreground, on embedded defaults where nothing is configured.

Starts, in order: the embedded Redis and SecantusDB file store (only when REDIS_URL / MONGO_URL
are unset), migrations, the admin account, then the ASGI server, a Celery worker and Celery
beat. Ctrl-C or SIGTERM stops every child; children also die with this process (PDEATHSIG).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from poolhub.embedded import EmbeddedService, die_with_parent, start_filestore, start_redis

BASE_DIR = Path(__file__).resolve().parent.parent
BIN_DIR = Path(sys.executable).parent


def log(message: str) -> None:
    print(f"[poolhub] {message}", flush=True)


def ensure_local_secret_key(var_dir: Path) -> Path:
    """The per-checkout SECRET_KEY under var/ (mode 0600, never in the repo) that settings read when
    SECRET_KEY is unset, so web, worker and beat share it and tokens outlive a restart."""
    path = var_dir / "secret_key"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as key_file:
            key_file.write(secrets.token_urlsafe(50))
    return path


def web_args(*, host: str, port: str, log_level: str, processes: int = 1) -> list[str]:
    """The ASGI server's command line (`make bench` starts the same)."""
    args = [str(BIN_DIR / "uvicorn"), "poolhub.asgi:application", "--host", host, "--port", port,
            "--ws", "websockets-sansio", "--lifespan", "off", "--no-server-header",
            "--timeout-graceful-shutdown", "10", "--log-level", log_level]
    return [*args, "--workers", str(processes)] if processes > 1 else args


class Stack:
    """The processes of one stack; `make bench` reuses it with its children's output in log files."""

    def __init__(self, env: dict[str, str] | None = None, log_dir: Path | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        self.log_dir = log_dir
        self.var_dir = Path(self.env.get("POOLHUB_VAR_DIR") or BASE_DIR / "var")
        self.env["POOLHUB_VAR_DIR"] = str(self.var_dir)
        self.embedded: list[EmbeddedService] = []
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False

    def start_embedded(self) -> None:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        if not self.env.get("REDIS_URL"):
            redis = start_redis(self.var_dir)
            self.embedded.append(redis)
            self.env["REDIS_URL"] = redis.url
            log(f"embedded Redis (staging, broker, channel layer) on {redis.url}")
        else:
            log("Redis: REDIS_URL from the environment")
        if not self.env.get("MONGO_URL"):
            port = int(self.env.get("POOLHUB_FILESTORE_PORT") or 27018)
            store = start_filestore(self.var_dir / "filestore", port)
            self.embedded.append(store)
            self.env["MONGO_URL"] = store.url
            log(f"embedded file store (SecantusDB, MongoDB wire protocol) on 127.0.0.1:{port}, data in "
                f"{self.var_dir / 'filestore'}")
        else:
            log("file store: MONGO_URL from the environment")

    def manage(self, *args: str) -> None:
        subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=self.env, check=True,
                       preexec_fn=die_with_parent)

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        """Start a child; with `log_dir`, its output goes to `<name>.log` there."""
        out = None
        if self.log_dir is not None:
            out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child holds it; closed below
        try:
            child = subprocess.Popen(args, cwd=BASE_DIR, env=self.env, preexec_fn=die_with_parent,
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT if out else None)
        finally:
            if out is not None:
                out.close()
        self.children[name] = child
        return child

    def start_processes(self) -> None:
        self.start_web()
        self.start_worker()
        self.start_beat()

    def start_web(self, processes: int = 1) -> None:
        host = self.env.get("HOST", "127.0.0.1")
        port = self.env.get("PORT", "8000")
        self.spawn("web", web_args(host=host, port=port, log_level=self.env.get("UVICORN_LOG_LEVEL", "info"),
                                   processes=processes))
        log(f"web (ASGI: API, websockets, admin) on http://{host}:{port}/ ({processes} process(es))")

    def start_worker(self, loglevel: str = "INFO") -> None:
        concurrency = self.env.get("CELERY_CONCURRENCY", "2")
        queue = self.env.get("CELERY_QUEUE", "poolhub")
        self.spawn("worker", [str(BIN_DIR / "celery"), "-A", "celery_app", "worker", "--loglevel", loglevel,
                              "--concurrency", concurrency, "--prefetch-multiplier", "1", "-Q", queue,
                              "--hostname", f"{queue}@{os.uname()[1]}"])
        log(f"Celery worker ({concurrency} processes)")

    def start_beat(self) -> None:
        self.spawn("beat", [str(BIN_DIR / "celery"), "-A", "celery_app", "beat", "--loglevel", "INFO",
                            "--schedule", str(self.var_dir / "celerybeat-schedule")])
        log("Celery beat")

    def stop(self) -> None:
        self.stopping = True
        log("stopping")
        for child in self.children.values():
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + 20
        for name, child in self.children.items():
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop in time; killing it")
                child.kill()
                child.wait()
        for service in reversed(self.embedded):
            service.stop()
        log("stopped; nothing left running")

    def run(self) -> int:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            if not self.stopping:  # a second signal while stopping must not cut the shutdown short
                raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            self.start_embedded()
            if not self.env.get("SECRET_KEY"):
                ensure_local_secret_key(self.var_dir)
            self.manage("migrate", "--noinput", "-v", "0")
            self.manage("collectstatic", "--noinput", "-v", "0")
            self.manage("ensure_admin")
            self.start_processes()
            log("ready when http://{}:{}/readyz answers 200; Ctrl-C stops everything".format(
                self.env.get("HOST", "127.0.0.1"), self.env.get("PORT", "8000")))
            while True:
                for name, child in self.children.items():
                    if child.poll() is not None:
                        log(f"{name} exited with code {child.returncode}; stopping the stack")
                        return 1
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
        except (subprocess.CalledProcessError, RuntimeError) as exc:
            log(f"failed to start: {exc}")
            return 1
        finally:
            self.stop()


def main() -> None:
    os.chdir(BASE_DIR)
    sys.exit(Stack().run())


if __name__ == "__main__":
    main()
