"""A minimal HTTP/1.1 client over asyncio streams, for the load generator's hot paths.

It sends prebuilt request bytes on a kept-alive connection and reads the answer, so the client
spends as little CPU as possible per request and the same client measures poolhub and the bare
baseline. Only 127.0.0.1 is ever a target.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

LOOPBACK = ("127.0.0.1", "localhost", "::1")
IDLE_SECONDS = 3.0  # below uvicorn's default --timeout-keep-alive (5 s)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    size: int = 0  # bytes of body read (also when the body was discarded)
    elapsed: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body or b"null")


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type."""
    boundary = "bench" + uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data) in files.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        parts.append(data)
        parts.append(b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def request_bytes(method: str, path: str, host: str, headers: dict[str, str] | None = None,
                  body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    """One kept-alive connection to 127.0.0.1:port; reconnects when the server closed it."""

    def __init__(self, host: str, port: int) -> None:
        if host not in LOOPBACK:
            raise ValueError("the benchmark only talks to the loopback interface")
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        return self.reader, self.writer

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def send(self, raw: bytes, *, keep_body: bool = True,
                   on_chunk: Callable[[int], None] | None = None) -> Response:
        """Send one prebuilt request and read its response (body kept or only counted).

        uvicorn closes a kept-alive connection after 5 idle seconds: a connection idle for longer
        is replaced first, and a request that finds its reused connection closed before any byte
        of the answer is sent once more on a new one (the server never saw it)."""
        loop = asyncio.get_running_loop()
        if self.writer is not None and loop.time() - self.last_used > IDLE_SECONDS:
            await self.close()
        reused = self.writer is not None
        started = loop.time()
        try:
            reader, writer = await self._open()
            writer.write(raw)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            if not reused:
                raise
            await self.close()
            reader, writer = await self._open()
            writer.write(raw)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = bytearray()
        size = 0

        def take(chunk: bytes) -> None:
            nonlocal size
            size += len(chunk)
            if keep_body:
                body.extend(chunk)
            if on_chunk is not None:
                on_chunk(len(chunk))

        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = await reader.readuntil(b"\r\n")
                length = int(size_line.split(b";")[0].strip(), 16)
                if length == 0:
                    await reader.readuntil(b"\r\n")
                    break
                remaining = length
                while remaining:
                    chunk = await reader.read(min(remaining, 1 << 20))
                    if not chunk:
                        raise ConnectionError("connection closed inside a chunk")
                    take(chunk)
                    remaining -= len(chunk)
                await reader.readexactly(2)
        elif "content-length" in headers:
            remaining = int(headers["content-length"])
            while remaining:
                chunk = await reader.read(min(remaining, 1 << 20))
                if not chunk:
                    raise ConnectionError("connection closed inside the body")
                take(chunk)
                remaining -= len(chunk)
        elif status not in (204, 304):
            while chunk := await reader.read(1 << 20):
                take(chunk)
            await self.close()
        if headers.get("connection", "").lower() == "close":
            await self.close()
        self.last_used = loop.time()
        return Response(status=status, headers=headers, body=bytes(body), size=size,
                        elapsed=loop.time() - started)

    async def request(self, method: str, path: str, *, token: str | None = None, json_body: Any = None,
                      body: bytes = b"", content_type: str | None = None, keep_body: bool = True,
                      headers: dict[str, str] | None = None) -> Response:
        all_headers = dict(headers or {})
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            body = json.dumps(json_body).encode()
            content_type = "application/json"
        if content_type:
            all_headers["Content-Type"] = content_type
        raw = request_bytes(method, path, f"{self.host}:{self.port}", all_headers, body)
        return await self.send(raw, keep_body=keep_body)


def bench_bytes(size: int, tag: int = 0) -> bytes:
    """Incompressible test content with a plain prefix (never mistaken for an executable or script)."""
    prefix = f"poolhub-bench {tag:012d}\n".encode()
    return (prefix + os.urandom(max(0, size - len(prefix))))[:size]
