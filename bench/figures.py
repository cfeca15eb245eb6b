"""Figures 8 to 11 and the socket figures, each in three short steps: measure (drive the load
generators, return raw numbers), summarise (pure: raw numbers to report rows), and the figure
function that ties them together. bench/run.py runs them in order; bench/report.py writes them.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from bench import report
from bench.stats import Target, percentile

if TYPE_CHECKING:
    from bench.run import Bench

MB = 1_000_000
KIB = 1024
TUS_NODE = "tus Node server"


class NotMeasured(Exception):
    """An endpoint or service a figure needs is not there (yet)."""


# --- shared: sockets spread over the load generators --------------------------------------------
def _split(items: list[Any], parts: int) -> list[list[Any]]:
    return [items[i::parts] for i in range(parts)]


def storm(bench: Bench, *, target: str, label: str, tokens: list[str] | None, count: int) -> dict[str, Any]:
    """Open `count` sockets at the same instant from every load generator; their replies merged."""
    gens = bench.plan.socket_loadgens
    bench.stack.start_loadgen(gens)
    shares = _split(tokens, gens) if tokens else [[None] * len(part) for part in _split([0] * count, gens)]
    for on, share in enumerate(shares):
        bench.stack.send("ws_storm", on=on, target=target, label=label, tokens=share,
                         timeout=bench.plan.socket_timeout)
    replies = [bench.stack.reply(on) for on in range(gens)]
    merged: dict[str, Any] = {"opened": 0, "connected": 0, "latencies": [], "refused": Counter(), "failures": [],
                              "failure_count": 0}
    for reply in replies:
        if "error" in reply:
            raise RuntimeError(f"ws_storm: {reply['error']}")
        for key in ("opened", "connected", "failure_count"):
            merged[key] += reply[key]
        merged["latencies"] += reply["latencies"]
        merged["refused"].update(reply["refused"])
        merged["failures"] += reply["failures"]
    return merged


def close_sockets(bench: Bench, label: str, *, abort: bool = False) -> None:
    for on in range(len(bench.stack.loadgens)):
        bench.stack.call("ws_close", on=on, label=label, abort=abort)


def broadcast_once(bench: Bench, *, target: str, label: str, prepared: dict[str, Any] | None) -> dict[str, Any]:
    """One broadcast, timed from the post to each socket's arrival on every load generator."""
    key = prepared["group"] if prepared else f"m{time.monotonic_ns()}"
    timeout = 60
    for on in range(1, len(bench.stack.loadgens)):
        bench.stack.send("arrivals", on=on, label=label, key=key, timeout=timeout)
    if prepared:
        first = bench.stack.call("broadcast", target=target, label=label, group=key, lease=prepared["lease"],
                                 exporter_token=bench.tokens["exporter"], timeout=timeout)
    else:
        first = bench.stack.call("broadcast", target=target, label=label, key=key, timeout=timeout)
    others = [bench.stack.reply(on) for on in range(1, len(bench.stack.loadgens))]
    if "error" in first:
        raise RuntimeError(f"broadcast: {first['error']}")
    started = float(first["started"])
    latencies = list(first["latencies"]) + [t - started for o in others for t in o.get("arrivals", [])]
    expected = first["expected"] + sum(o.get("expected", 0) for o in others)
    closed = first["closed_by_server"] + sum(o.get("closed_by_server", 0) for o in others)
    return {"latencies": latencies, "expected": expected, "delivered": len(latencies), "closed_by_server": closed,
            "errors": [c for o in others for c in o.get("errors", [])], "post_seconds": first["post_seconds"]}


def pool_subscriptions(bench: Bench) -> int:
    """Redis pub/sub subscriptions to the round pool's group: one per web process with a socket in it."""
    from channels.layers import get_channel_layer

    from notifications.selectors import pool_group
    from poolhub.redis import redis_client

    layer: Any = get_channel_layer()
    channel = layer.group_channel(pool_group(bench.pools["round"])) if hasattr(layer, "group_channel") else None
    if channel is None:
        raise NotMeasured("not measured: the channel layer has no pub/sub groups")
    return int(dict(redis_client().pubsub_numsub(channel)).get(channel.encode(), 0))


def _group_channel_probe(bench: Bench) -> Any:
    """The harness's own event loop for `pool_subscriptions` (the layer resolves names per loop)."""
    import asyncio

    async def probe() -> int:
        return pool_subscriptions(bench)

    return asyncio.run(probe())


# --- figure 11: reconnect storm ---------------------------------------------------------------------
def summarise_storm(poolhub: dict[str, Any], bare: dict[str, Any], *, tracebacks: int, left: int | None,
                    errors_after: int) -> list[dict[str, Any]]:
    n = poolhub["opened"]
    refused = dict(poolhub["refused"])
    rows = [
        report.row(f"{n} sockets opened at once, authenticated", "sockets", [poolhub["connected"]],
                   baseline_name="opened", baseline_values=[n], target=Target("ratio_min", 1.0, "all authenticate"),
                   note=(f"refused: {refused}; client-side failures: {poolhub['failure_count']} "
                         f"{poolhub['failures'][:2]}" if refused or poolhub["failure_count"] else "")),
        report.row("refused for the server's own slowness (`not_authenticated`) or `server_error`", "sockets",
                   [refused.get("not_authenticated", 0) + refused.get("server_error", 0) + errors_after],
                   on="value", target=Target("max", 0.5, "none")),
        report.row("tracebacks in the web processes' log", "tracebacks", [tracebacks],
                   on="value", target=Target("max", 0.5, "none")),
    ]
    if poolhub["latencies"]:
        for q in (50, 99):
            rows.append(report.row(
                f"start to `connected` p{q}", "s", [percentile(poolhub["latencies"], q)],
                baseline_name=f"bare app, {bare['opened']} sockets connected",
                baseline_values=[percentile(bare["latencies"], q)] if bare["latencies"] else []))
    if left is not None:
        rows.append(report.row("pool group subscriptions left after every socket dropped", "subscriptions", [left],
                               on="value", target=Target("max", 0.5, "none (no group holds a gone socket)")))
    return rows


def fig_storm(bench: Bench, entry: dict[str, Any]) -> None:
    bench.endpoints("ws")
    n = bench.plan.storm_sockets
    before = bench.stack.tracebacks("web")
    measured = storm(bench, target="poolhub", label="storm", tokens=bench.tokens["clients"][:n], count=n)
    time.sleep(2)  # errors the server sends after `connected` (a failed group join) arrive too
    errors_after = 0
    for on in range(len(bench.stack.loadgens)):
        reply = bench.stack.call("arrivals", on=on, label="storm", key="-", timeout=0)
        errors_after += sum(1 for code in reply.get("errors", []) if code == "server_error")
    close_sockets(bench, "storm", abort=True)
    left = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = _group_channel_probe(bench)
        if left == 0:
            break
        time.sleep(0.5)
    tracebacks = bench.stack.tracebacks("web") - before
    bare = storm(bench, target="bare", label="storm-bare", tokens=None, count=n)
    close_sockets(bench, "storm-bare")
    entry["rows"] += summarise_storm(measured, bare, tracebacks=tracebacks, left=left, errors_after=errors_after)

    def again() -> None:
        storm(bench, target="poolhub", label="storm", tokens=bench.tokens["clients"][:n], count=n)
        close_sockets(bench, "storm", abort=True)

    bench.repeaters[f"11: {n} sockets opened at once, authenticated"] = (["web"], again)
    entry["setup"].append(
        f"{n} pool members' sockets opened at the same instant from {bench.plan.socket_loadgens} load generator "
        f"processes against {bench.stack.web_count} web processes; each sends `connect` with its access token "
        "as soon as the handshake completes (no pacing). Then every socket is dropped without a closing handshake "
        "(devices vanishing), and Redis is asked how many web processes are still subscribed to the pool's group "
        "(`PUBSUB NUMSUB`: a process stays subscribed while any channel is in the group). Baseline: the same number "
        "of sockets opened at once on the bare app (no authentication).")


# --- figure 4: broadcast ----------------------------------------------------------------------------
def summarise_broadcast(stats: dict[str, dict[str, list[float]]], n: int) -> list[dict[str, Any]]:
    rows = [report.row(f"post to delivery {q}, {n} sockets", "s", stats["poolhub"][q],
                       baseline_name=f"bare broadcaster, {n} sockets", baseline_values=stats["bare"][q], on="value",
                       target=Target("max", 1.0, "p99 < 1 s") if q == "p99" else None) for q in ("p50", "p99")]
    rows.append(report.row("the post's own response time (stores the result, commits, publishes)", "s",
                           stats["poolhub"]["post"], baseline_name="bare `POST /broadcast` (sends every frame)",
                           baseline_values=stats["bare"]["post"], on="value"))
    return rows


def fig_broadcast(bench: Bench, entry: dict[str, Any]) -> None:
    bench.endpoints("ws", "POST pools/{id}/uploads", "POST groups/{id}/close", "POST groups/{id}/claim",
                    "POST groups/{id}/result")
    n = bench.plan.subscribers
    opened = storm(bench, target="poolhub", label="broadcast", tokens=bench.tokens["clients"][:n], count=n)
    bare = storm(bench, target="bare", label="bare", tokens=None, count=n)
    for name, got in (("poolhub", opened), ("bare", bare)):
        if got["connected"] != n:
            bench.errors.append(f"figure 4: only {got['connected']} of {n} {name} sockets connected "
                                f"({dict(got['refused'])}, {got['failures'][:2]}); measured on those")
    stats: dict[str, dict[str, list[float]]] = {t: {"p50": [], "p99": [], "post": []} for t in ("poolhub", "bare")}
    delivered: list[int] = []

    def poolhub_once() -> dict[str, Any]:
        prepared = bench.call("prepare_group", pool=bench.pools["round"], timestamp=bench.next_slot(),
                              uploader_token=bench.tokens["manager"], manager_token=bench.tokens["manager"],
                              exporter_token=bench.tokens["exporter"])
        return broadcast_once(bench, target="poolhub", label="broadcast", prepared=prepared)

    for _ in range(bench.plan.broadcast_runs):
        for target in ("poolhub", "bare"):
            result = (poolhub_once() if target == "poolhub"
                      else broadcast_once(bench, target="bare", label="bare", prepared=None))
            if result["delivered"] < result["expected"]:
                bench.errors.append(f"figure 4 ({target}): {result['delivered']} of {result['expected']} sockets "
                                    f"received the broadcast within 60 s ({result['closed_by_server']} closed by "
                                    "the server)")
            if target == "poolhub":
                delivered.append(result["delivered"])
            stats[target]["post"].append(result["post_seconds"])
            if result["latencies"]:
                stats[target]["p50"].append(percentile(result["latencies"], 50))
                stats[target]["p99"].append(percentile(result["latencies"], 99))
    close_sockets(bench, "bare")

    name = f"4: post to delivery p99, {n} sockets"
    bench.repeaters[name] = (["web", "worker"], poolhub_once)
    bench.repeater_context[name] = (  # the profile sees the broadcast only: sockets open before it starts
        lambda: storm(bench, target="poolhub", label="broadcast", tokens=bench.tokens["clients"][:n], count=n),
        lambda: close_sockets(bench, "broadcast"))
    entry["rows"] += summarise_broadcast(stats, n)
    entry["setup"].append(
        f"{n} websocket clients (each its own pool member, authenticated with a `connect` frame), spread over "
        f"{bench.plan.socket_loadgens} load generator processes, against {bench.stack.web_count} web "
        "processes; per run a fresh group is closed and claimed, then the clock starts as the exporter sends "
        "`POST /groups/{id}/result` and stops at each socket's `result.available` for that group (one monotonic "
        f"clock for all processes). Delivered to {min(delivered, default=0)}-{max(delivered, default=0)} of {n} "
        f"sockets per run. Baseline: {n} sockets on the bare app, one `POST /broadcast` that sends one text frame "
        "to each.")
    close_sockets(bench, "broadcast")


# --- figure 8: one and two web processes --------------------------------------------------------------
def fig_web_processes(bench: Bench, entry: dict[str, Any]) -> None:
    from django.db import connection

    if connection.vendor != "postgresql":
        bench.stack.restart_web(bench.plan.socket_web_processes)
        raise NotMeasured("not measured: needs PostgreSQL (run `make bench` with DATABASE_URL=postgres://...)")
    bench.endpoints("POST pools/{id}/uploads")
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for processes in (1, 2):
        bench.stack.restart_web(processes)
        for _ in range(bench.plan.runs):
            runs[processes].append(bench.measure_ingest("poolhub", 200 * KIB, 16, bench.plan.web_compare_files))
    entry["rows"] += [
        report.row("200 KiB files, 16 clients, 2 web processes, files/s", "files/s",
                   [r["files_s"] for r in runs[2]], baseline_name="1 web process",
                   baseline_values=[r["files_s"] for r in runs[1]]),
        report.row("web CPU per file, 2 web processes", "ms", [r["cpu_ms"] for r in runs[2]],
                   baseline_name="1 web process", baseline_values=[r["cpu_ms"] for r in runs[1]]),
    ]
    entry["setup"].append(
        f"{bench.plan.web_compare_files} uploads of 200 KiB per run from 16 kept-alive clients, on PostgreSQL, "
        "with `uvicorn --workers 1` and then `--workers 2` (the launcher's command line); CPU from /proc, summed "
        "over the web processes. The worker stores each run's uploads before the next starts.")


# --- figure 9: sustained stores --------------------------------------------------------------------
def stored_span(upload_ids: list[str]) -> tuple[int, float]:
    """How many of these uploads have `upload.stored`, and seconds from the first to the last."""
    from django.db import connection
    from django.db.models import Max, Min

    from uploads.models import Event

    stored = Event.objects.filter(stream_id__in=upload_ids, type="upload.stored")
    span = stored.aggregate(first=Min("at"), last=Max("at"))
    count = stored.count()
    connection.close()
    if count < 2:
        return count, 0.0
    return count, (span["last"] - span["first"]).total_seconds()


def fig_stores(bench: Bench, entry: dict[str, Any]) -> None:
    bench.endpoints("POST pools/{id}/uploads")
    count = bench.plan.sustained_files
    rates: list[float] = []
    raw: list[float] = []
    cpu_ms: list[float] = []
    _, bucket, chunk_size = bench.filestore()
    threads = int(bench.stack.env.get("CELERY_CONCURRENCY", "2"))
    for _ in range(bench.plan.runs):
        result = bench.measure_ingest("poolhub", 200 * KIB, 16, count)  # drained and pruned when it returns
        stored, seconds = stored_span(result["ids"])
        if seconds > 0:
            rates.append((stored - 1) / seconds)
        cpu_ms.append(result["worker_ms"])
        puts = bench.call("gridfs_put", mongo_url=bench.mongo_url(), db=bench.mongo_db(), count=count,
                          size=200 * KIB, bucket=bucket, chunk_size=chunk_size, threads=threads)
        raw.append(count / puts["elapsed"])
    entry["rows"] += [
        report.row("sustained stores of 200 KiB files", "files/s", rates, baseline_name="raw GridFS puts",
                   baseline_values=raw, target=Target("ratio_min", 0.8, "≥ 0.8 of raw GridFS puts")),
        report.row("worker CPU per stored 200 KiB file", "ms", cpu_ms, on="value",
                   target=Target("max", 5.0, "< 5 ms")),
    ]
    entry["setup"].append(
        f"{count} uploads of 200 KiB per run sent as fast as 16 kept-alive clients go, so the worker has a backlog; "
        "stores/s = stored uploads / seconds from the first `upload.stored` event to the last (server clocks). "
        f"Baseline: `GridFSBucket.upload_from_stream` of {count} files of the same size into the same bucket from "
        f"{threads} threads (the worker's concurrency) in the load generator. Worker CPU from /proc (main process and "
        "pool).")


# --- figure 10: 10 MB over tus ---------------------------------------------------------------------
def fig_tus(bench: Bench, entry: dict[str, Any]) -> None:
    bench.endpoints("POST pools/{id}/tus")
    size = bench.plan.ws_size
    values: dict[str, list[float]] = {"tus": [], "rest": [], TUS_NODE: []}
    node = "tus-node" in bench.stack.children
    for run in range(bench.plan.runs):
        result = bench.call("tus_upload", target="poolhub", size=size, token=bench.tokens["ingest"][2],
                            pool=bench.pools["ingest"], timestamp=bench.recent(), tag=9000 + run)
        if "elapsed" not in result:
            raise RuntimeError(f"tus upload refused: {result}")
        values["tus"].append(size / MB / result["elapsed"])
        rest = bench.call("upload", size=size, token=bench.tokens["ingest"][2], pool=bench.pools["ingest"],
                          timestamp=bench.recent(), tag=9100 + run)
        if rest["status"] != 202:
            raise RuntimeError(f"REST upload refused: {rest}")
        values["rest"].append(size / MB / rest["elapsed"])
        if node:
            values[TUS_NODE].append(size / MB / bench.call("tus_upload", target="tus-node", size=size,
                                                           timestamp=bench.recent(), tag=run)["elapsed"])
        bench.drain()
    label = f"{size // MB} MB over tus"
    if node:
        entry["rows"].append(report.row(label, "MB/s", values["tus"], baseline_name=TUS_NODE,
                                        baseline_values=values[TUS_NODE],
                                        target=Target("ratio_min", 1.0, "≥ the tus Node server's MB/s")))
    else:
        entry["notes"].append(bench.stack.config.get("tus baseline", "tus Node server not measured"))
    entry["rows"].append(report.row(label, "MB/s", values["tus"], baseline_name="REST upload of the same size",
                                    baseline_values=values["rest"]))
    entry["setup"].append(
        f"One {size // MB} MB file per run the way tus-js-client and tuspy send it by default (their chunk size is "
        "unlimited): a creation `POST /pools/{pool}/tus` with `Upload-Length` and `Upload-Metadata`, then the whole "
        "file in one `PATCH`; beside one REST upload of the same size and the same two requests to the tus Node "
        "server, each on a fresh connection.")


# --- figure 12: storage that shrinks -------------------------------------------------------------
def chunks_megabytes(bench: Bench) -> float:
    """MB of the uploads bucket's chunks by the file store's own accounting (collStats `size`)."""
    db, bucket, _ = bench.filestore()
    try:
        return float(db.command("collStats", f"{bucket}.chunks").get("size", 0)) / MB
    finally:
        db.client.close()


def stored_then_purged(bench: Bench, count: int) -> tuple[float, float, int]:
    """Store `count` 200 KiB uploads in a pool with a one-day retention, then run the retention
    job as if two days had passed; the chunks' MB before and after, and how many were purged."""
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from accounts.models import Pool
    from lifecycle.services import purge_expired

    for tag in range(count):
        result = bench.call("upload", size=200 * KIB, token=bench.tokens["ingest"][tag % 16],
                            pool=bench.pools["ingest"], timestamp=bench.recent(), tag=12000 + tag)
        if result["status"] != 202:
            raise RuntimeError(f"upload refused: {result}")
    bench.drain()
    Pool.objects.filter(id=bench.pools["ingest"]).update(retention_days=1)
    before = chunks_megabytes(bench)
    purged = 0
    try:
        while True:  # one call purges at most its batches; run until nothing is left
            done = purge_expired(now=timezone.now() + timedelta(days=2))
            purged += done.uploads
            if not done.marked and not done.removed:
                break
    finally:
        Pool.objects.filter(id=bench.pools["ingest"]).update(retention_days=None)
        connection.close()
    return before, chunks_megabytes(bench), purged


def fig_purge(bench: Bench, entry: dict[str, Any]) -> None:
    bench.endpoints("POST pools/{id}/uploads")
    bench.keep_files.clear()  # the last figure: nothing later reads the export's files
    bench.prune()
    count = bench.plan.sustained_files
    before, after, purged = stored_then_purged(bench, count)
    entry["rows"].append(report.row(
        "uploads bucket after the retention purge", "MB", [after], baseline_name="the same bucket before it",
        baseline_values=[before], target=Target("max", 0.1, "< 0.1 of the bytes before the purge"),
        note=f"{purged} uploads purged"))
    entry["setup"].append(
        f"{count} uploads of 200 KiB stored in the ingest pool, whose retention is then set to one day; the "
        "retention job (`lifecycle.services.purge_expired`, the beat task's service) runs as if two days had "
        "passed, until it finds nothing more. Sizes are the file store's own `collStats` of the uploads bucket's "
        "chunks, so they show the space the store gives back, not a count of rows.")
