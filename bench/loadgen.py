"""The load generator: a separate process that the harness drives with one JSON command per line.

It holds the client side of every figure (HTTP uploads, websocket subscribers, raw GridFS
calls) so that the harness process only starts servers, samples memory and writes the report.
Every loop here is bounded in count and in time, and every connection goes to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect

from bench.httpclient import Connection, bench_bytes, multipart, request_bytes

API = "/api/v1"
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def log(message: str) -> None:
    print(f"[loadgen] {message}", file=sys.stderr, flush=True)


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def frame_field(frame: dict[str, Any], key: str) -> Any:
    """A field of a websocket frame, flat (`{type, key}`) or nested under `data` or `payload`."""
    if key in frame:
        return frame[key]
    for wrapper in ("data", "payload"):
        inner = frame.get(wrapper)
        if isinstance(inner, dict) and key in inner:
            return inner[key]
    return None


class Subscriber:
    """One websocket that records when each `result.available` (or bare broadcast) arrives, and
    the codes of any `error` frames the server sends it."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.arrivals: dict[str, float] = {}
        self.errors: list[str] = []
        self.events: asyncio.Event = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.closed: str | None = None  # why the server closed it, if it did
        self.closing = False  # we are closing it ourselves

    async def listen(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await self._listen(loop)
        except Exception as exc:
            self.closed = f"{type(exc).__name__}: {exc}"[:200]
        else:
            self.closed = f"closed by the server: {self.socket.close_code} {self.socket.close_reason}"[:200]

    async def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        async for raw in self.socket:
            now = loop.time()
            try:
                frame = json.loads(raw)
            except ValueError:
                continue
            if isinstance(frame, dict) and frame.get("type") == "error":
                self.errors.append(str(frame.get("code")))
            if isinstance(frame, dict) and frame.get("type") in ("result.available", "bare.broadcast"):
                key = str(frame_field(frame, "group") or frame_field(frame, "marker"))
                self.arrivals.setdefault(key, now)
                self.events.set()


class LoadGen:
    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.ports: dict[str, int] = {}
        self.subscribers: dict[str, list[Subscriber]] = {}

    # --- helpers --------------------------------------------------------------------------
    def conn(self, target: str) -> Connection:
        return Connection(self.host, self.ports[target])

    def upload_request(self, target: str, *, pool: str, token: str, data: bytes, timestamp: datetime,
                       name: str) -> bytes:
        body, content_type = multipart(
            {"timestamp": iso(timestamp), "sha256": hashlib.sha256(data).hexdigest()}, {"file": (name, data)})
        if target == "tus-node":  # one POST with `creation-with-upload`: the whole file in the creation request
            return request_bytes("POST", "/files", f"{self.host}:{self.ports[target]}", {
                "Tus-Resumable": "1.0.0", "Upload-Length": str(len(data)),
                "Upload-Metadata": tus_metadata({"filename": name, "timestamp": iso(timestamp)}),
                "Content-Type": "application/offset+octet-stream"}, data)
        path = f"{API}/pools/{pool}/uploads" if target == "poolhub" else "/upload"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
        return request_bytes("POST", path, f"{self.host}:{self.ports[target]}", headers, body)

    async def ws_open(self, target: str, token: str | None) -> ClientConnection:
        port = self.ports[target]
        socket = await connect(f"ws://{self.host}:{port}/ws/", origin=f"http://{self.host}:{port}",  # type: ignore[arg-type]
                               compression=None, max_size=None, open_timeout=30, ping_interval=None)
        if token is not None:
            await socket.send(json.dumps({"type": "connect", "access_token": token}))
            reply = await self.ws_expect(socket, {"connected"}, timeout=30)
            if reply.get("type") != "connected":
                await socket.close()
                raise RuntimeError(f"websocket authentication failed: {reply}")
        return socket

    async def ws_expect(self, socket: ClientConnection, types: set[str], timeout: float) -> dict[str, Any]:
        """The next frame of one of `types`, or an `error` frame; pushes in between are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {sorted(types)} frame within {timeout}s")
            raw = await asyncio.wait_for(socket.recv(), remaining)
            frame = json.loads(raw)
            if isinstance(frame, dict) and (frame.get("type") in types or frame.get("type") == "error"):
                return frame

    # --- commands ---------------------------------------------------------------------------
    async def cmd_setup(self, args: dict[str, Any]) -> dict[str, Any]:
        self.ports = {k: int(v) for k, v in args["ports"].items()}
        return {"ok": True}

    async def cmd_tus_upload(self, args: dict[str, Any]) -> dict[str, Any]:
        """One file the way tus-js-client and tuspy send it by default: a creation `POST` without
        a body, then the whole file in one `PATCH` (their default chunk size is unlimited)."""
        target, size = args["target"], int(args["size"])
        data = bench_bytes(size, int(args.get("tag", 0)))
        metadata = {"filename": "tus.bin", "timestamp": args["timestamp"], "sha256": hashlib.sha256(data).hexdigest()}
        auth = {"Authorization": f"Bearer {args['token']}"} if target == "poolhub" else {}
        path = f"{API}/pools/{args['pool']}/tus" if target == "poolhub" else "/files"
        connection = self.conn(target)
        try:
            started = time.monotonic()
            created = await connection.request("POST", path, headers={
                **auth, "Tus-Resumable": "1.0.0", "Upload-Length": str(size),
                "Upload-Metadata": tus_metadata(metadata)})
            location = created.headers.get("location", "")
            if created.status != 201 or not location:
                return {"error": f"creation: {created.status} {created.body[:300]!r}"}
            patched = await connection.request("PATCH", urlsplit(location).path, body=data,
                                               content_type="application/offset+octet-stream",
                                               headers={**auth, "Tus-Resumable": "1.0.0", "Upload-Offset": "0"})
            elapsed = time.monotonic() - started
        finally:
            await connection.close()
        if patched.status != 204:
            return {"error": f"PATCH: {patched.status} {patched.body[:300]!r}"}
        return {"elapsed": elapsed, "bytes": size, "upload_id": patched.headers.get("poolhub-upload-id")}

    async def cmd_ingest(self, args: dict[str, Any]) -> dict[str, Any]:
        """`count` files of `size` bytes over `concurrency` kept-alive connections, as fast as they go."""
        target, size, count = args["target"], int(args["size"]), int(args["count"])
        concurrency, tokens = int(args["concurrency"]), list(args["tokens"])
        base = datetime.fromisoformat(args["timestamp"])
        block = os.urandom(size)
        raws: list[bytes] = []
        for index in range(count):
            prefix = f"poolhub-bench {time.monotonic_ns()} {index}\n".encode()
            data = prefix + block[len(prefix):]
            raws.append(self.upload_request(target, pool=args.get("pool", ""), token=tokens[index % len(tokens)],
                                            data=data, timestamp=base - timedelta(milliseconds=index),
                                            name=f"bench-{index}.bin"))
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(count):
            queue.put_nowait(index)
        deadline = time.monotonic() + float(args.get("max_seconds", 60))
        done: list[int] = []
        errors: list[str] = []
        ids: list[str] = []

        async def client() -> None:
            connection = self.conn(target)
            try:
                while time.monotonic() < deadline and not errors:
                    try:
                        index = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    response = await connection.send(raws[index])
                    if response.status not in (200, 201, 202):
                        errors.append(f"{response.status} {response.body[:300]!r}")
                        return
                    done.append(index)
                    if target == "poolhub":
                        ids.append(str(response.json().get("id")))
            finally:
                await connection.close()

        started = time.monotonic()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
        return {"files": len(done), "bytes": len(done) * size, "elapsed": elapsed, "errors": errors, "ids": ids}

    async def cmd_upload(self, args: dict[str, Any]) -> dict[str, Any]:
        """One REST upload on a fresh connection (the ingest and memory figures use it)."""
        size = int(args["size"])
        data = bench_bytes(size, int(args.get("tag", 0)))
        raw = self.upload_request("poolhub", pool=args["pool"], token=args["token"], data=data,
                                  timestamp=datetime.fromisoformat(args["timestamp"]), name="one.bin")
        connection = self.conn("poolhub")
        try:
            started = time.monotonic()
            response = await connection.send(raw)
            elapsed = time.monotonic() - started
        finally:
            await connection.close()
        body = response.json() if response.body else None
        return {"status": response.status, "elapsed": elapsed, "upload": body, "bytes": size}

    async def cmd_steady(self, args: dict[str, Any]) -> dict[str, Any]:
        """Open-loop uploads of `size` bytes at `rate` per second for `seconds`, on up to 8 connections."""
        rate, seconds, size = float(args["rate"]), float(args["seconds"]), int(args["size"])
        tokens = list(args["tokens"])
        count = max(1, int(rate * seconds))
        base = datetime.fromisoformat(args["timestamp"])
        block = os.urandom(size)
        raws = []
        for index in range(count):
            prefix = f"poolhub-bench steady {time.monotonic_ns()} {index}\n".encode()
            raws.append(self.upload_request("poolhub", pool=args["pool"], token=tokens[index % len(tokens)],
                                            data=prefix + block[len(prefix):],
                                            timestamp=base - timedelta(milliseconds=index), name=f"s{index}.bin"))
        free: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(int(args.get("connections", 8))):
            free.put_nowait(self.conn("poolhub"))
        ids: list[str] = []
        errors: list[str] = []
        lags: list[float] = []
        accept_times: list[float] = []
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.2

        async def one(index: int) -> None:
            await asyncio.sleep(max(0.0, start + index / rate - loop.time()))
            connection = await free.get()
            lags.append(loop.time() - (start + index / rate))
            try:
                response = await connection.send(raws[index])
                accept_times.append(response.elapsed)
                if response.status == 202:
                    ids.append(str(response.json()["id"]))
                else:
                    errors.append(f"{response.status} {response.body[:200]!r}")
            finally:
                free.put_nowait(connection)

        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(count))), seconds + 120)
        while not free.empty():
            await free.get_nowait().close()
        return {"sent": count, "ids": ids, "errors": errors[:5], "error_count": len(errors),
                "max_lag": max(lags) if lags else 0.0, "accept_seconds": accept_times,
                "elapsed": loop.time() - start}

    async def cmd_events(self, args: dict[str, Any]) -> dict[str, Any]:
        """Server-side accepted-to-stored seconds of each upload, from its event log."""
        connection = self.conn("poolhub")
        latencies: list[float] = []
        missing = 0
        try:
            for upload_id in args["ids"]:
                response = await connection.request("GET", f"{API}/uploads/{upload_id}", token=args["token"])
                events = response.json().get("events", []) if response.status == 200 else []
                times = {e["type"]: datetime.fromisoformat(e["at"].replace("Z", "+00:00")) for e in events}
                if "upload.cached" in times and "upload.stored" in times:
                    latencies.append((times["upload.stored"] - times["upload.cached"]).total_seconds())
                else:
                    missing += 1
        finally:
            await connection.close()
        return {"latencies": latencies, "missing": missing}

    async def cmd_gridfs_put(self, args: dict[str, Any]) -> dict[str, Any]:
        """Raw GridFS puts of `count` files of `size` bytes (one at a time per thread; `threads`, 1 by
        default), into the given bucket
        (the uploads bucket: the same state the store task writes into); removed afterwards."""
        import gridfs
        import pymongo

        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(args["mongo_url"])
        try:
            bucket = gridfs.GridFSBucket(client[args["db"]], bucket_name=args["bucket"],
                                         chunk_size_bytes=int(args.get("chunk_size", 255 * 1024)))
            size = int(args["size"])
            block = os.urandom(size)
            durations: list[float] = []
            ids: list[Any] = []

            def put(index: int) -> None:
                data = f"raw {index}\n".encode() + block[: size - len(f"raw {index}\n")]
                started = time.monotonic()
                ids.append(bucket.upload_from_stream(f"raw-{index}", data))
                durations.append(time.monotonic() - started)

            began = time.monotonic()
            with ThreadPoolExecutor(int(args.get("threads", 1))) as pool:
                list(pool.map(put, range(int(args["count"]))))
            elapsed = time.monotonic() - began
            for file_id in ids:
                bucket.delete(file_id)
        finally:
            client.close()
        return {"durations": durations, "elapsed": elapsed}

    async def cmd_gridfs_read(self, args: dict[str, Any]) -> dict[str, Any]:
        """Raw GridFS reads of the given files, chunk by chunk, bytes discarded."""
        import gridfs
        import pymongo

        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(args["mongo_url"])
        try:
            from bson import json_util

            bucket = gridfs.GridFSBucket(client[args["db"]], bucket_name=args["bucket"])
            file_ids = json_util.loads(args["ids"])
            total = 0
            started = time.monotonic()
            for file_id in file_ids:
                stream = bucket.open_download_stream(file_id)
                while chunk := stream.read(1 << 20):
                    total += len(chunk)
            elapsed = time.monotonic() - started
        finally:
            client.close()
        return {"bytes": total, "elapsed": elapsed}

    async def cmd_ws_upload(self, args: dict[str, Any]) -> dict[str, Any]:
        """A chunked websocket upload (start-transfer, write-chunk..., complete-upload)."""
        size = int(args["size"])
        data = bench_bytes(size, int(args.get("tag", 0)))
        socket = await self.ws_open("poolhub", args["token"])
        try:
            started = time.monotonic()
            await socket.send(json.dumps({
                "type": "start-transfer", "request_id": "t", "pool": args["pool"], "filename": "ws.bin",
                "size": size, "timestamp": args["timestamp"], "sha256": hashlib.sha256(data).hexdigest()}))
            reply = await self.ws_expect(socket, {"transfer-started"}, 60)
            if reply.get("type") == "error":
                return {"error": reply}
            transfer_id = frame_field(reply, "transfer_id")
            chunk_size = int(frame_field(reply, "chunk_size") or 256 * 1024)
            offset = 0
            chunks = 0
            while offset < size:
                piece = data[offset: offset + chunk_size]
                await socket.send(json.dumps({"type": "write-chunk", "transfer_id": transfer_id, "offset": offset,
                                              "data": base64.b64encode(piece).decode()}))
                ack = await self.ws_expect(socket, {"chunk-ack"}, 60)
                if ack.get("type") == "error":
                    return {"error": ack, "offset": offset}
                offset = int(frame_field(ack, "offset"))
                chunks += 1
            await socket.send(json.dumps({"type": "complete-upload", "transfer_id": transfer_id}))
            done = await self.ws_expect(socket, {"upload-accepted"}, 120)
            elapsed = time.monotonic() - started
            if done.get("type") == "error":
                return {"error": done}
            return {"elapsed": elapsed, "bytes": size, "chunk_size": chunk_size, "chunks": chunks,
                    "upload": frame_field(done, "upload")}
        finally:
            await socket.close()

    async def cmd_ws_connect(self, args: dict[str, Any]) -> dict[str, Any]:
        """Open `count` sockets (poolhub: one per token, authenticated) that listen for broadcasts."""
        target, label = args["target"], args["label"]
        tokens: list[str | None] = list(args.get("tokens") or [None] * int(args["count"]))
        semaphore = asyncio.Semaphore(int(args.get("parallel", 32)))
        subscribers: list[Subscriber] = []
        failures: list[str] = []

        async def open_one(token: str | None) -> None:
            async with semaphore:
                try:
                    socket = await self.ws_open(target, token)
                except Exception as exc:
                    failures.append(repr(exc)[:200])
                    return
                subscriber = Subscriber(socket)
                subscriber.task = asyncio.create_task(subscriber.listen())
                subscribers.append(subscriber)

        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(open_one(t) for t in tokens)), float(args.get("max_seconds", 180)))
        self.subscribers[label] = subscribers
        return {"connected": len(subscribers), "failures": failures[:5], "failure_count": len(failures),
                "elapsed": time.monotonic() - started}

    async def cmd_ws_storm(self, args: dict[str, Any]) -> dict[str, Any]:
        """Open every socket at the same instant (devices coming back after a restart): each
        connects and, for poolhub, authenticates with a `connect` frame. Seconds from the start to
        each socket's `connected`; every refusal by its code; sockets the server closed."""
        target, label = args["target"], args["label"]
        tokens: list[str | None] = list(args.get("tokens") or [None] * int(args["count"]))
        timeout = float(args.get("timeout", 300))
        loop = asyncio.get_running_loop()
        gate = asyncio.Event()
        latencies: list[float] = []
        refused: dict[str, int] = {}
        failures: list[str] = []
        subscribers: list[Subscriber] = []
        started = 0.0

        async def one(token: str | None) -> None:
            await gate.wait()
            try:
                port = self.ports[target]
                socket = await connect(f"ws://{self.host}:{port}/ws/", origin=f"http://{self.host}:{port}",  # type: ignore[arg-type]
                                       compression=None, max_size=None, open_timeout=timeout, ping_interval=None)
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}"[:200])
                return
            try:
                if token is not None:
                    await socket.send(json.dumps({"type": "connect", "access_token": token}))
                    reply = await self.ws_expect(socket, {"connected"}, timeout=timeout)
                    if reply.get("type") != "connected":
                        refused[str(reply.get("code"))] = refused.get(str(reply.get("code")), 0) + 1
                        await socket.close()
                        return
            except Exception as exc:  # closed by the server, or no answer in time
                refused[type(exc).__name__] = refused.get(type(exc).__name__, 0) + 1
                return
            latencies.append(loop.time() - started)
            subscriber = Subscriber(socket)
            subscriber.task = asyncio.create_task(subscriber.listen())
            subscribers.append(subscriber)

        tasks = [asyncio.create_task(one(token)) for token in tokens]
        await asyncio.sleep(0.5)  # every task is waiting at the gate
        started = loop.time()
        gate.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout + 60)
        self.subscribers.setdefault(label, []).extend(subscribers)
        return {"opened": len(tokens), "connected": len(subscribers), "latencies": latencies, "refused": refused,
                "failures": failures[:5], "failure_count": len(failures)}

    async def cmd_arrivals(self, args: dict[str, Any]) -> dict[str, Any]:
        """When (monotonic clock, shared by the processes of this machine) each socket under
        `label` got the broadcast `key`; every socket's server-sent error codes."""
        subscribers = self.subscribers.get(args["label"], [])
        deadline = time.monotonic() + float(args.get("timeout", 60))
        key = args["key"]
        while time.monotonic() < deadline and not all(key in s.arrivals for s in subscribers):
            await asyncio.sleep(0.005)
        closed = [s.closed for s in subscribers if s.closed and not s.closing]
        return {"arrivals": [s.arrivals[key] for s in subscribers if key in s.arrivals],
                "expected": len(subscribers), "closed_by_server": len(closed), "close_reasons": closed[:3],
                "errors": [code for s in subscribers for code in s.errors]}

    async def cmd_ws_close(self, args: dict[str, Any]) -> dict[str, Any]:
        """Close the sockets under `label`; `abort`: drop their connections without a closing
        handshake, as devices that vanish do."""
        subscribers = self.subscribers.pop(args["label"], [])
        abort = bool(args.get("abort"))

        async def close_one(subscriber: Subscriber) -> None:
            subscriber.closing = True
            with contextlib.suppress(Exception):
                if abort:
                    subscriber.socket.transport.abort()
                else:
                    await asyncio.wait_for(subscriber.socket.close(), 5)
            if subscriber.task is not None:
                subscriber.task.cancel()

        await asyncio.gather(*(close_one(s) for s in subscribers))
        return {"closed": len(subscribers)}

    async def wait_arrivals(self, label: str, key: str, started: float, timeout: float) -> dict[str, Any]:
        subscribers = self.subscribers[label]
        deadline = time.monotonic() + timeout
        loop = asyncio.get_running_loop()
        while time.monotonic() < deadline:
            if all(key in s.arrivals for s in subscribers):
                break
            await asyncio.sleep(0.005)
        latencies = [s.arrivals[key] - started for s in subscribers if key in s.arrivals]
        closed = [s.closed for s in subscribers if s.closed and not s.closing]
        return {"latencies": latencies, "expected": len(subscribers), "delivered": len(latencies),
                "waited": loop.time() - started, "closed_by_server": len(closed), "close_reasons": closed[:3]}

    async def poll(self, what: Callable[[], Awaitable[Any]], timeout: float, interval: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = await what()
            if result is not None or time.monotonic() > deadline:
                return result
            await asyncio.sleep(interval)

    async def claim(self, connection: Connection, group: str, token: str, timeout: float) -> dict[str, Any]:
        """Claim a closed group, retrying `not_ready` (uploads still being stored) until `timeout`."""
        last: dict[str, Any] = {}

        async def attempt() -> dict[str, Any] | None:
            nonlocal last
            response = await connection.request("POST", f"{API}/groups/{group}/claim", token=token, json_body={})
            last = {"status": response.status, "body": response.json() if response.body else None}
            return last if response.status == 200 else None

        result = await self.poll(attempt, timeout)
        if result is None:
            raise RuntimeError(f"claim of group {group} did not succeed within {timeout}s: {last}")
        return dict(result["body"])

    async def post_result(self, connection: Connection, group: str, lease: str, token: str) -> Any:
        body, content_type = multipart({"lease_id": lease}, {"file": ("result.bin", bench_bytes(4096, 7))})
        return await connection.request("POST", f"{API}/groups/{group}/result", token=token, body=body,
                                        content_type=content_type)

    async def cmd_prepare_group(self, args: dict[str, Any]) -> dict[str, Any]:
        """A closed, claimed group of the pool with one small upload: ready for a result."""
        connection = self.conn("poolhub")
        try:
            data = bench_bytes(2048, int(time.monotonic_ns() % 10**9))
            body, content_type = multipart({"timestamp": args["timestamp"],
                                            "sha256": hashlib.sha256(data).hexdigest()}, {"file": ("g.bin", data)})
            response = await connection.request("POST", f"{API}/pools/{args['pool']}/uploads",
                                                token=args["uploader_token"], body=body, content_type=content_type)
            if response.status != 202:
                raise RuntimeError(f"upload for the group failed: {response.status} {response.body[:300]!r}")
            group = str(response.json()["group"])
            response = await connection.request("POST", f"{API}/groups/{group}/close", token=args["manager_token"],
                                                json_body={})
            if response.status != 200:
                raise RuntimeError(f"close failed: {response.status} {response.body[:300]!r}")
            lease = await self.claim(connection, group, args["exporter_token"], 60)
            return {"group": group, "lease": lease["lease_id"]}
        finally:
            await connection.close()

    async def cmd_broadcast(self, args: dict[str, Any]) -> dict[str, Any]:
        """Post-to-delivery latency of one broadcast to every socket under `label`."""
        target, label = args["target"], args["label"]
        connection = self.conn(target)
        loop = asyncio.get_running_loop()
        try:
            if target == "poolhub":
                key = args["group"]
                started = loop.time()
                response = await self.post_result(connection, key, args["lease"], args["exporter_token"])
                if response.status not in (200, 201):
                    raise RuntimeError(f"result post failed: {response.status} {response.body[:300]!r}")
            else:
                key = args.get("key") or f"m{time.monotonic_ns()}"
                message = {"type": "bare.broadcast", "marker": key, "pool": "bare", "size": 4096,
                           "sha256": "0" * 64, "url": "/bare"}
                started = loop.time()
                response = await connection.request("POST", "/broadcast", json_body=message)
            post_seconds = loop.time() - started
        finally:
            await connection.close()
        result = await self.wait_arrivals(label, key, started, float(args.get("timeout", 60)))
        result["post_seconds"] = post_seconds
        result["started"] = started
        return result

    async def cmd_archive(self, args: dict[str, Any]) -> dict[str, Any]:
        """Stream a group's archive, discarding the bytes."""
        connection = self.conn("poolhub")
        try:
            started = time.monotonic()
            response = await connection.request("GET", f"{API}/groups/{args['group']}/archive?lease={args['lease']}",
                                                token=args["token"], keep_body=False)
            elapsed = time.monotonic() - started
        finally:
            await connection.close()
        return {"status": response.status, "bytes": response.size, "elapsed": elapsed,
                "content_type": response.headers.get("content-type", "")}

    async def cmd_claim(self, args: dict[str, Any]) -> dict[str, Any]:
        connection = self.conn("poolhub")
        try:
            close = await connection.request("POST", f"{API}/groups/{args['group']}/close",
                                             token=args["manager_token"], json_body={})
            if close.status != 200:
                raise RuntimeError(f"close failed: {close.status} {close.body[:300]!r}")
            lease = await self.claim(connection, args["group"], args["exporter_token"], float(args.get("timeout", 300)))
        finally:
            await connection.close()
        return {"lease": lease["lease_id"]}

    async def cmd_round(self, args: dict[str, Any]) -> dict[str, Any]:
        """One round: every client uploads one file, close, claim, archive, result, all notified."""
        tokens, size, label = list(args["tokens"]), int(args["size"]), args["label"]
        base = datetime.fromisoformat(args["timestamp"])
        block = os.urandom(size)
        raws = []
        for index, token in enumerate(tokens):
            prefix = f"poolhub-bench round {time.monotonic_ns()} {index}\n".encode()
            raws.append(self.upload_request("poolhub", pool=args["pool"], token=token,
                                            data=prefix + block[len(prefix):],
                                            timestamp=base + timedelta(milliseconds=index), name=f"r{index}.bin"))
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(len(raws)):
            queue.put_nowait(index)
        groups: set[str] = set()
        errors: list[str] = []
        phases: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + float(args.get("max_seconds", 300))

        async def client() -> None:
            connection = self.conn("poolhub")
            try:
                while time.monotonic() < deadline:
                    try:
                        index = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    response = await connection.send(raws[index])
                    if response.status == 202:
                        groups.add(str(response.json()["group"]))
                    else:
                        errors.append(f"{response.status} {response.body[:200]!r}")
            finally:
                await connection.close()

        started = loop.time()
        mark = started
        await asyncio.gather(*(client() for _ in range(int(args.get("concurrency", 16)))))
        phases["upload"] = loop.time() - mark
        if len(groups) != 1 or errors:
            return {"error": f"uploads: groups {sorted(groups)}, {len(errors)} errors, first {errors[:1]}"}
        group = groups.pop()
        connection = self.conn("poolhub")
        try:
            mark = loop.time()
            close = await connection.request("POST", f"{API}/groups/{group}/close", token=args["manager_token"],
                                             json_body={})
            if close.status != 200:
                return {"error": f"close: {close.status} {close.body[:200]!r}"}
            phases["close"] = loop.time() - mark
            mark = loop.time()
            claim_timeout = float(args.get("claim_timeout", 600))
            lease = (await self.claim(connection, group, args["exporter_token"], claim_timeout))["lease_id"]
            phases["claim (waits until every upload is stored)"] = loop.time() - mark
            mark = loop.time()
            archive = await connection.request("GET", f"{API}/groups/{group}/archive?lease={lease}",
                                               token=args["exporter_token"], keep_body=False)
            phases["archive download"] = loop.time() - mark
            posted = loop.time()
            result = await self.post_result(connection, group, lease, args["exporter_token"])
            if result.status not in (200, 201):
                return {"error": f"result: {result.status} {result.body[:200]!r}"}
        finally:
            await connection.close()
        delivered = await self.wait_arrivals(label, group, posted, float(args.get("notify_timeout", 120)))
        # The pushes can arrive before the post's own response: one phase from the post to the last socket.
        phases["result post until every client has `result.available`"] = (
            max(delivered["latencies"]) if delivered["latencies"] else delivered["waited"])
        return {"group": group, "phases": phases, "total": loop.time() - started, "uploads": len(raws),
                "archive_bytes": archive.size, "archive_status": archive.status,
                "notified": delivered["delivered"], "subscribers": delivered["expected"]}


async def serve() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    gen = LoadGen()
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return
        command = json.loads(line)
        name = command.pop("cmd")
        if name == "quit":
            for label in list(gen.subscribers):
                await gen.cmd_ws_close({"label": label})
            print(json.dumps({"ok": True}), flush=True)
            return
        handler: Handler | None = getattr(gen, f"cmd_{name}", None)
        try:
            if handler is None:
                raise ValueError(f"unknown command {name}")
            reply = await handler(command)
        except Exception as exc:  # the harness records the failure in the report
            log(f"{name} failed: {exc!r}")
            reply = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
        print(json.dumps(reply, default=str), flush=True)


def tus_metadata(values: dict[str, str]) -> str:
    """An `Upload-Metadata` header: `key base64(value)` pairs."""
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items())


def main() -> None:
    asyncio.run(serve())


if __name__ == "__main__":
    main()
