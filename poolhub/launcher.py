"""`make run`: the whole system in the foreground, on embedded defaults where nothing is configured.

Starts, in order: the embedded Redis and SecantusDB file store (only when REDIS_URL / MONGO_URL
are unset), migrations, the admin account, then the ASGI server, a Celery worker and Celery
beat. Ctrl-C or SIGTERM stops every child; children also die with this process (PDEATHSIG).

Every child runs in its own session: a Ctrl-C in the terminal reaches this launcher only, which
then stops each child once, with SIGTERM, whatever it is doing (a child that is still importing
or starting would otherwise print a KeyboardInterrupt or SystemExit traceback). The embedded
Redis and file store are watched like the other children: if any of them dies, the launcher says
so and stops the rest cleanly (a service manager restarts the whole stack).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from poolhub.embedded import EmbeddedService, private_child, private_dir, start_filestore, start_redis

BASE_DIR = Path(__file__).resolve().parent.parent
BIN_DIR = Path(sys.executable).parent


def log(message: str) -> None:
    if os.environ.get("LOG_FORMAT") == "json":  # the same one-object-per-line shape as the children
        print(json.dumps({"ts": datetime.now(UTC).isoformat(), "level": "INFO", "logger": "poolhub.launcher",
                          "message": message}), flush=True)
    else:
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


class Stack:
    """The processes of one stack; `make bench` reuses it, with its children's output in log files."""

    def __init__(self, env: dict[str, str] | None = None, log_dir: Path | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        self.log_dir = log_dir
        self.var_dir = Path(self.env.get("POOLHUB_VAR_DIR") or BASE_DIR / "var")
        self.env["POOLHUB_VAR_DIR"] = str(self.var_dir)
        self.embedded: list[EmbeddedService] = []
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False

    def start_embedded(self) -> None:
        private_dir(self.var_dir)
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
        # On Ctrl-C, run() kills the command (SIGKILL: no traceback) as it unwinds.
        subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=self.env, check=True,
                       preexec_fn=private_child, start_new_session=True)

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        """Start a child; with `log_dir`, its output goes to `<name>.log` there."""
        out = open(self.log_dir / f"{name}.log", "ab") if self.log_dir else None  # noqa: SIM115 - closed below
        try:
            child = subprocess.Popen(args, cwd=BASE_DIR, env=self.env, preexec_fn=private_child,
                                     stdin=subprocess.DEVNULL, start_new_session=True, stdout=out,
                                     stderr=subprocess.STDOUT if out else None)
        finally:
            if out is not None:
                out.close()  # the child holds its own copy
        self.children[name] = child
        return child

    def web_proxy_args(self) -> list[str]:
        """X-Forwarded-For and -Proto are believed only from the proxies the operator names in
        FORWARDED_ALLOW_IPS (uvicorn's own variable, as in the image). Unset, uvicorn would trust
        127.0.0.1, which on this machine is anyone local: no proxy headers at all then."""
        proxies = self.env.get("FORWARDED_ALLOW_IPS", "").strip()
        if not proxies:
            return ["--no-proxy-headers"]
        return ["--proxy-headers", "--forwarded-allow-ips", proxies]

    def ws_max_size(self) -> int:
        """The largest websocket frame read: one base64 chunk and its JSON, not uvicorn's 16 MiB,
        so an unauthenticated socket cannot make the server buffer more than a chunk."""
        chunk = int(self.env.get("POOLHUB_WS_CHUNK_BYTES") or 512 * 1024)
        return chunk * 4 // 3 + 64 * 1024

    def dead_child(self) -> str | None:
        for name, child in self.children.items():
            if child.poll() is not None:
                return f"{name} exited with code {child.returncode}"
        for service in self.embedded:
            if service.process.poll() is not None:
                return f"the embedded {service.label} exited with code {service.process.returncode}"
        return None

    def metrics_dir(self) -> None:
        """Every web and worker process writes its metrics here (prometheus_client's multiprocess
        mode); it must start empty, or a dead process's counts would be served again."""
        path = Path(self.env.get("PROMETHEUS_MULTIPROC_DIR") or self.var_dir / "prometheus")
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        self.env["PROMETHEUS_MULTIPROC_DIR"] = str(path)

    def quiet(self) -> list[str]:
        return ["--quiet"] if self.env.get("LOG_FORMAT") == "json" else []  # no banner among JSON lines

    def web_args(self, app: str = "poolhub.asgi:application", processes: int = 1) -> list[str]:
        """The ASGI server's command line (`make bench` serves its bare baseline app with the same)."""
        args = [str(BIN_DIR / "uvicorn"), app, "--host", self.env.get("HOST", "127.0.0.1"),
                "--port", self.env.get("PORT", "8000"), "--ws", "websockets-sansio", "--lifespan", "off",
                "--no-server-header", *self.web_proxy_args(), "--ws-max-size", str(self.ws_max_size()),
                "--timeout-graceful-shutdown", "10",
                "--log-level", self.env.get("UVICORN_LOG_LEVEL", "info"), "--log-config", str(self.web_log_config())]
        return [*args, "--workers", str(processes)] if processes > 1 else args

    def web_log_config(self) -> Path:
        """poolhub's logging config as a file for uvicorn's --log-config: with several processes
        uvicorn's parent ("Started parent process", "Uvicorn running on") writes through it too,
        so under LOG_FORMAT=json every line is JSON, not only the app's."""
        from poolhub.logs import logging_config

        config = logging_config(fmt=self.env.get("LOG_FORMAT") or "text", level=self.env.get("LOG_LEVEL") or "INFO")
        path = self.var_dir / "uvicorn-logging.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=1))
        return path

    def start_processes(self) -> None:
        self.metrics_dir()
        self.start_web(processes=self.web_processes())
        self.start_worker()
        self.start_beat()

    def web_processes(self) -> int:
        """WEB_CONCURRENCY web processes on one port (uvicorn's --workers), default one per core."""
        return int(self.env.get("WEB_CONCURRENCY") or os.cpu_count() or 1)

    def start_web(self, processes: int = 1) -> None:
        self.spawn("web", self.web_args(processes=processes))
        log(f"web (ASGI: API, websockets, admin) on http://{self.env.get('HOST', '127.0.0.1')}:"
            f"{self.env.get('PORT', '8000')}/, {processes} process(es)")

    def start_worker(self, loglevel: str = "INFO") -> None:
        concurrency = self.env.get("CELERY_CONCURRENCY") or str(self.web_processes())  # matches the web
        queue = self.env.get("CELERY_QUEUE", "poolhub")
        self.spawn("worker", [str(BIN_DIR / "celery"), "-A", "celery_app", *self.quiet(), "worker", "--loglevel",
                              loglevel, "--concurrency", concurrency, "--prefetch-multiplier", "1", "-Q", queue,
                              "--hostname", f"{queue}@{os.uname()[1]}"])
        log(f"Celery worker ({concurrency} processes)")

    def start_beat(self) -> None:
        self.spawn("beat", [str(BIN_DIR / "celery"), "-A", "celery_app", *self.quiet(), "beat", "--loglevel", "INFO",
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
            while (dead := self.dead_child()) is None:
                time.sleep(0.5)
            log(f"{dead}; stopping the stack")
            return 1
        except KeyboardInterrupt:
            return 0
        except (subprocess.CalledProcessError, RuntimeError) as exc:
            log(f"failed to start: {exc}")
            return 1
        finally:
            self.stop()


def main() -> None:
    os.chdir(BASE_DIR)
    os.umask(0o077)  # the SQLite file, beat's schedule, logs: this account's only
    sys.exit(Stack().run())


if __name__ == "__main__":
    main()
