"""What the sync and async clients share: tokens, URLs, multipart bodies, responses, backoff."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx

from poolhub_client.errors import PoolhubError, error_from_response

API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
CHUNK = 256 * 1024
AUTH_RETRY_CODES = frozenset({"invalid_token"})

ProgressCallback = Callable[[int, int | None], None]
"""Called with (bytes done, total bytes or None) as a transfer moves."""


@dataclass
class Tokens:
    access: str
    refresh: str | None = None
    user: dict[str, Any] | None = None

    def access_expires_at(self) -> float | None:
        return jwt_expiry(self.access)


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT, read without verifying it (only to refresh a little early)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


@dataclass
class TokenState:
    """Tokens shared by a client (and the async twin it hands out); rotation calls `on_change`."""

    tokens: Tokens | None = None
    on_change: Callable[[Tokens | None], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    generation: int = 0

    def set(self, tokens: Tokens | None) -> None:
        self.tokens = tokens
        self.generation += 1
        if self.on_change is not None:
            self.on_change(tokens)

    def needs_refresh(self, margin: float = 5.0) -> bool:
        if self.tokens is None or not self.tokens.refresh:
            return False
        expiry = self.tokens.access_expires_at()
        return expiry is not None and expiry - time.time() < margin


class ClientSettings:
    """What the sync and async clients share: where, which tokens, how patiently to retry."""

    def __init__(self, base_url: str, *, tokens: Tokens | None, token_state: TokenState | None, on_tokens: Any,
                 max_retries: int, max_retry_wait: float, refresh_early: bool, tus_threshold: int | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.refresh_early = refresh_early  # refresh a few seconds before expiry rather than after a 401
        self.state = token_state or TokenState(tokens=tokens, on_change=on_tokens)
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        # Files above this many bytes go over the resumable (tus) endpoint; POOLHUB_TUS_THRESHOLD sets the default.
        self.tus_threshold = tus_threshold if tus_threshold is not None else tus_threshold_default()

    def use_tus(self, file: FileInput) -> bool:
        """Whether `file` is large enough for a resumable upload (an unknown size never is)."""
        size = file_size(file)
        return size is not None and size > self.tus_threshold

    @property
    def tokens(self) -> Tokens | None:
        return self.state.tokens

    def _headers(self, auth: bool, extra: dict[str, str] | None) -> dict[str, str]:
        headers = dict(extra or {})
        if auth and self.state.tokens is not None:
            headers["Authorization"] = f"Bearer {self.state.tokens.access}"
        return headers

    def _retry_delay(self, attempt: int, error: PoolhubError) -> float:
        """How long to wait before trying again; raises `error` when retrying is over."""
        if attempt > self.max_retries or (error.retry_after or 0) > self.max_retry_wait:
            raise error
        return backoff_delay(attempt, retry_after=error.retry_after)


TUS_THRESHOLD_DEFAULT = 8 * 1024 * 1024


def tus_threshold_default() -> int:
    raw = os.environ.get("POOLHUB_TUS_THRESHOLD", "")
    return int(raw) if raw.isdigit() else TUS_THRESHOLD_DEFAULT


def file_size(file: FileInput) -> int | None:
    """The size of a path or bytes without reading it; None for a file object."""
    if isinstance(file, bytes):
        return len(file)
    if isinstance(file, str | os.PathLike):
        return Path(file).stat().st_size
    return None


def api_url(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + API_PREFIX + path


def ws_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://"):] + "/ws/"
    if base.startswith("http://"):
        return "ws://" + base[len("http://"):] + "/ws/"
    return base + "/ws/"


def origin_of(base_url: str) -> str:
    url = httpx.URL(base_url)
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}"


def iso(ts: datetime | str | None) -> str:
    """UTC ISO-8601 with an offset; a naive datetime is taken as UTC."""
    if ts is None:
        ts = datetime.now(UTC)
    if isinstance(ts, str):
        return ts
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def backoff_delay(attempt: int, *, base: float = 0.5, cap: float = 30.0, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter; a server's Retry-After is a floor, never shortened."""
    delay = random.uniform(0, min(cap, base * (2 ** max(0, attempt - 1))))
    if retry_after is not None:
        delay = max(delay, retry_after + random.uniform(0, base))
    return delay


def response_error(response: httpx.Response) -> PoolhubError:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    return error_from_response(response.status_code, body, response.headers.get("Retry-After"))


def json_or_none(response: httpx.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


# --- files ----------------------------------------------------------------------------------

FileInput = str | os.PathLike[str] | IO[bytes] | bytes


class FileSource:
    """A re-readable byte source for an upload: a path, bytes, or a file object.

    A seekable file object is rewound for a retry; a non-seekable one is first spooled to a
    temporary file (bounded memory), so a retry after a token refresh can send it again.
    """

    def __init__(self, source: FileInput, filename: str | None = None) -> None:
        self._path: Path | None = None
        self._fileobj: IO[bytes] | None = None
        self._start = 0
        self._spool: IO[bytes] | None = None
        if isinstance(source, bytes):
            self._fileobj = io.BytesIO(source)
            self.size = len(source)
            self.filename = filename or "upload.bin"
        elif isinstance(source, str | os.PathLike):
            self._path = Path(source)
            self.size = self._path.stat().st_size
            self.filename = filename or self._path.name
        else:
            self.filename = filename or Path(str(getattr(source, "name", "upload.bin"))).name
            if _seekable(source):
                self._fileobj = source
                self._start = source.tell()
                self.size = source.seek(0, io.SEEK_END) - self._start
                source.seek(self._start)
            else:
                spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
                shutil.copyfileobj(source, spool, CHUNK)
                self.size = spool.tell()
                spool.seek(0)
                self._spool = self._fileobj = spool

    def chunks(self) -> Iterator[bytes]:
        if self._path is not None:
            with self._path.open("rb") as handle:
                yield from iter(lambda: handle.read(CHUNK), b"")
            return
        assert self._fileobj is not None
        self._fileobj.seek(self._start)
        remaining = self.size
        while remaining > 0:
            chunk = self._fileobj.read(min(CHUNK, remaining))
            if not chunk:
                raise PoolhubError(f"{self.filename} got shorter while it was being sent", code="file_changed")
            remaining -= len(chunk)
            yield chunk

    def read_at(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes from `offset` (a resumable upload sends the file in such pieces)."""
        if self._path is not None:
            with self._path.open("rb") as handle:
                handle.seek(offset)
                return handle.read(min(size, self.size - offset))
        assert self._fileobj is not None
        self._fileobj.seek(self._start + offset)
        return self._fileobj.read(min(size, self.size - offset))

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for chunk in self.chunks():
            digest.update(chunk)
        return digest.hexdigest()

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()


def _seekable(handle: IO[bytes]) -> bool:
    try:
        return bool(handle.seekable())
    except (AttributeError, OSError, ValueError):
        return False


@dataclass
class FieldPart:
    name: str
    value: str | Callable[[], str]
    length: int | None = None  # the encoded length of a deferred value, known before it is computed


@dataclass
class FilePart:
    name: str
    source: FileSource
    content_type: str = "application/octet-stream"
    digest: Any = None  # the running sha256 of the last pass over this file


class MultipartBody:
    """A multipart/form-data body streamed chunk by chunk, with its exact length known up front.

    Django needs a Content-Length to parse multipart at all, so chunked encoding is not an option;
    a deferred field (the sha256 computed while the file streams) has a fixed encoded length.
    """

    def __init__(self, parts: list[FieldPart | FilePart]) -> None:
        self.parts = parts
        self.boundary = uuid.uuid4().hex

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _head(self, part: FieldPart | FilePart) -> bytes:
        if isinstance(part, FilePart):
            name = _quote(part.source.filename)
            return (f"--{self.boundary}\r\nContent-Disposition: form-data; name=\"{part.name}\"; "
                    f"filename=\"{name}\"\r\nContent-Type: {part.content_type}\r\n\r\n").encode()
        return f"--{self.boundary}\r\nContent-Disposition: form-data; name=\"{part.name}\"\r\n\r\n".encode()

    def __len__(self) -> int:
        total = len(self._tail())
        for part in self.parts:
            total += len(self._head(part)) + 2
            if isinstance(part, FilePart):
                total += part.source.size
            elif callable(part.value):
                assert part.length is not None, "a deferred field needs its length"
                total += part.length
            else:
                total += len(part.value.encode())
        return total

    def _tail(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode()

    def iter_chunks(self, progress: ProgressCallback | None = None) -> Iterator[bytes]:
        total = len(self)
        done = 0
        for part in self.parts:
            head = self._head(part)
            done += len(head)
            yield head
            if isinstance(part, FilePart):
                part.digest = hashlib.sha256()
                for chunk in part.source.chunks():
                    part.digest.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
                    yield chunk
            else:
                value = (part.value() if callable(part.value) else part.value).encode()
                done += len(value)
                yield value
            done += 2
            yield b"\r\n"
        if progress is not None:
            progress(total, total)
        yield self._tail()


def _quote(name: str) -> str:
    return re.sub(r'[\r\n"\\]', "_", name)


def single_upload_body(source: FileSource, timestamp: str, sha256: str | None) -> MultipartBody:
    """timestamp, the file, then the sha256 the client computed while reading it (unless given)."""
    file_part = FilePart("file", source)
    parts: list[FieldPart | FilePart] = [FieldPart("timestamp", timestamp)]
    if sha256:
        parts += [FieldPart("sha256", sha256), file_part]
    else:
        parts += [file_part, FieldPart("sha256", lambda: file_part.digest.hexdigest(), 64)]
    return MultipartBody(parts)


def result_body(source: FileSource, lease_id: str) -> MultipartBody:
    file_part = FilePart("file", source)
    return MultipartBody([FieldPart("lease_id", lease_id), file_part,
                          FieldPart("sha256", lambda: file_part.digest.hexdigest(), 64)])


@dataclass
class BatchItem:
    """One update of a batch: its bytes, its own timestamp and (if known) its sha256."""

    file: FileInput
    timestamp: datetime | str | None = None
    sha256: str | None = None
    filename: str | None = None


def batch_body(items: list[BatchItem]) -> tuple[MultipartBody, list[FileSource]]:
    sources = [FileSource(item.file, item.filename) for item in items]
    manifest = {"items": [
        {"file": f"file{index}", "timestamp": iso(item.timestamp), "sha256": item.sha256 or source.sha256()}
        for index, (item, source) in enumerate(zip(items, sources, strict=True))
    ]}
    parts: list[FieldPart | FilePart] = [FieldPart("manifest", json.dumps(manifest, sort_keys=True))]
    parts += [FilePart(f"file{index}", source) for index, source in enumerate(sources)]
    return MultipartBody(parts), sources


def filename_from(response: httpx.Response, fallback: str) -> str:
    disposition = response.headers.get("Content-Disposition", "")
    match = re.search(r"filename\*?=(?:UTF-8'')?\"?([^\";]+)\"?", disposition)
    name = Path(match.group(1)).name if match else ""
    return name or fallback


class Download:
    """Writes a streamed response to `<dest>.part`, hashing; renamed into place when complete."""

    def __init__(self, dest: Path, expected_sha256: str | None, total: int | None,
                 progress: ProgressCallback | None) -> None:
        self.dest = dest
        self.partial = dest.with_name(dest.name + ".part")
        self.expected = expected_sha256
        self.total = total
        self.progress = progress
        self.digest = hashlib.sha256()
        self.done = 0
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.handle = self.partial.open("wb")

    def write(self, chunk: bytes) -> None:
        self.handle.write(chunk)
        self.digest.update(chunk)
        self.done += len(chunk)
        if self.progress is not None:
            self.progress(self.done, self.total)

    def finish(self) -> Path:
        from poolhub_client.errors import ChecksumMismatch

        self.handle.close()
        actual = self.digest.hexdigest()
        if self.expected and actual != self.expected:
            self.partial.unlink(missing_ok=True)
            raise ChecksumMismatch(f"downloaded {self.dest.name} has sha256 {actual}, expected {self.expected}")
        os.replace(self.partial, self.dest)
        return self.dest

    def abort(self) -> None:
        self.handle.close()
        self.partial.unlink(missing_ok=True)


def download_target(dest: str | os.PathLike[str], response: httpx.Response, fallback: str) -> Path:
    path = Path(dest)
    return path / filename_from(response, fallback) if path.is_dir() else path


def content_length(response: httpx.Response) -> int | None:
    raw = response.headers.get("Content-Length")
    return int(raw) if raw and raw.isdigit() else None
