"""Every operation of the contract, written once, without I/O ("sans-IO").

An operation is a generator (a `Flow`): it yields `Step`s (send this request, sleep this long,
refresh the tokens, copy this response into a file, run this blocking call) and receives what
the step produced. `PoolhubClient` drives flows with blocking calls and `AsyncPoolhubClient`
with awaits (see their `_drive`), so retries, token refresh, pagination, resumable uploads and
resumable downloads exist once, and the two clients differ only in how they wait.
"""

from __future__ import annotations

import base64
import functools
import re
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx

from poolhub_client import _core
from poolhub_client._core import (
    AUTH_RETRY_CODES,
    BatchItem,
    ClientSettings,
    Download,
    FileInput,
    FileSource,
    MultipartBody,
    ProgressCallback,
    Tokens,
)
from poolhub_client.errors import RETRYABLE_STATUS, AuthError, PoolhubError, TransportError
from poolhub_client.types import Batch, Page, Result, Upload, User

T = TypeVar("T")


# --- steps: what a flow asks its driver to do -------------------------------------------------

@dataclass(frozen=True)
class Call:
    """One request of the contract, before headers and retries."""

    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    body: MultipartBody | None = None
    raw: bytes | Iterator[bytes] | None = None  # a request body sent as it is (tus PATCH)
    headers: dict[str, str] = field(default_factory=dict)
    auth: bool = True
    stream: bool = False
    progress: ProgressCallback | None = None
    absolute_url: str | None = None  # a Location the server handed out, instead of API prefix + path
    ok_status: frozenset[int] = frozenset()  # 4xx statuses the flow handles itself instead of raising

    @property
    def repeatable(self) -> bool:
        """Safe to send again after a network error: reads, and writes carrying an Idempotency-Key."""
        return self.method in {"GET", "HEAD"} or "Idempotency-Key" in self.headers


@dataclass(frozen=True)
class Send:
    """Send `call` with these headers; the driver answers with the httpx.Response or the httpx.TransportError."""

    call: Call
    url: str
    headers: dict[str, str]


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Refresh:
    """Rotate the tokens unless another caller already did since `generation`."""

    generation: int


@dataclass(frozen=True)
class Discard:
    """Read and close an error response (its body is needed for the error)."""

    response: httpx.Response


@dataclass(frozen=True)
class Pump:
    """Copy a streamed response into `download` and close it; answers None or the httpx.TransportError."""

    response: httpx.Response
    download: Download


@dataclass(frozen=True)
class Blocking:
    """A call that may block on disk (spooling a file); the async driver runs it in a thread."""

    fn: Callable[[], Any]


Step = Send | Sleep | Refresh | Discard | Pump | Blocking
Flow = Generator[Step, Any, T]


# --- the exchange: one request with retries and refresh ---------------------------------------

def exchange(settings: ClientSettings, call: Call) -> Flow[httpx.Response]:
    """Send `call` until it succeeds or fails for good.

    Repeatable requests are retried on network errors; every request is retried on 429/503,
    honouring Retry-After, up to `max_retries`; an expired access token is refreshed once.
    """
    refreshed = False
    attempt = 0
    url = call.absolute_url or _core.api_url(settings.base_url, call.path)
    while True:
        attempt += 1
        if call.auth and settings.refresh_early and settings.state.needs_refresh():
            yield Refresh(settings.state.generation)
        outcome = yield Send(call, url, settings._headers(call.auth, call.headers))
        if isinstance(outcome, httpx.TransportError):
            unreachable = TransportError(f"cannot reach {settings.base_url}: {outcome.__class__.__name__} {outcome}")
            if not call.repeatable:
                raise unreachable from outcome
            yield Sleep(settings._retry_delay(attempt, unreachable))
            continue
        response = cast(httpx.Response, outcome)
        if response.status_code < 400 or response.status_code in call.ok_status:
            return response
        yield Discard(response)
        error = _core.response_error(response)
        if (response.status_code == 401 and call.auth and error.code in AUTH_RETRY_CODES and not refreshed
                and settings.state.tokens is not None and settings.state.tokens.refresh):
            refreshed = True
            yield Refresh(settings.state.generation)
            continue
        if response.status_code in RETRYABLE_STATUS:
            yield Sleep(settings._retry_delay(attempt, error))
            continue
        raise error


def json_call(settings: ClientSettings, call: Call) -> Flow[Any]:
    return _core.json_or_none((yield from exchange(settings, call)))


# --- authentication ---------------------------------------------------------------------------

def login(settings: ClientSettings, path: str, username: str, password: str) -> Flow[User]:
    body = yield from json_call(settings, Call("POST", path, json={"username": username, "password": password},
                                               auth=False))
    settings.state.set(Tokens(access=body["access"], refresh=body.get("refresh"), user=body.get("user")))
    return cast(User, body["user"])


def refresh(settings: ClientSettings, if_generation: int | None) -> Flow[None]:
    """Rotate the token pair (the old refresh token is spent; the new one is stored).

    Callers hold the client's refresh lock, so `if_generation` tells whether another caller
    rotated the pair while this one waited.
    """
    if if_generation is not None and settings.state.generation != if_generation:
        return
    tokens = settings.state.tokens
    if tokens is None or not tokens.refresh:
        raise AuthError("not logged in", code="not_authenticated")
    generation = settings.state.generation
    try:
        body = yield from json_call(settings, Call("POST", "/auth/refresh", json={"refresh": tokens.refresh},
                                                   auth=False))
    except AuthError:
        if settings.state.generation != generation:
            return  # a twin client rotated the pair meanwhile: the spent token was its old one
        raise
    settings.state.set(Tokens(access=body["access"], refresh=body.get("refresh") or tokens.refresh,
                              user=tokens.user))


def logout(settings: ClientSettings) -> Flow[None]:
    tokens = settings.state.tokens
    if tokens is None:
        return
    yield from exchange(settings, Call("POST", "/auth/logout", json={"refresh": tokens.refresh or ""}))
    settings.state.set(None)


# --- plain calls: one request, the JSON answer ------------------------------------------------

def validate() -> Call:
    return Call("GET", "/auth/validate")


def create_pool(name: str, fields: dict[str, Any]) -> Call:
    return Call("POST", "/pools", json={"name": name, **fields})


def get_pool(pool: str) -> Call:
    return Call("GET", f"/pools/{pool}")


def update_pool(pool: str, fields: dict[str, Any]) -> Call:
    return Call("PATCH", f"/pools/{pool}", json=fields)


def list_pools() -> Call:
    return Call("GET", "/pools")


def members(pool: str) -> Call:
    return Call("GET", f"/pools/{pool}/members")


def add_member(pool: str, username: str, role: str) -> Call:
    return Call("POST", f"/pools/{pool}/members", json={"username": username, "role": role})


def remove_member(pool: str, username: str) -> Call:
    return Call("DELETE", f"/pools/{pool}/members/{username}")


def provision(pool: str, count: int, prefix: str, role: str, idempotency_key: str | None) -> Call:
    return Call("POST", f"/pools/{pool}/members/provision", json={"count": count, "prefix": prefix, "role": role},
                headers={"Idempotency-Key": idempotency_key or str(uuid.uuid4())})


def usage(pool: str) -> Call:
    return Call("GET", f"/pools/{pool}/usage")


def uploads(pool: str | None, user: str | None, status: str | None, group: str | None,
            limit: int | None, offset: int | None) -> Call:
    params = {"pool": pool, "user": user, "status": status, "group": group, "limit": limit, "offset": offset}
    return Call("GET", "/uploads", params={key: value for key, value in params.items() if value is not None})


def get_upload(upload_id: str) -> Call:
    return Call("GET", f"/uploads/{upload_id}")


def groups(pool: str, status: str | None) -> Call:
    return Call("GET", f"/pools/{pool}/groups", params={"status": status} if status else None)


def get_group(group_id: str) -> Call:
    return Call("GET", f"/groups/{group_id}")


def close_group(group_id: str) -> Call:
    return Call("POST", f"/groups/{group_id}/close")


def claim_group(group_id: str) -> Call:
    return Call("POST", f"/groups/{group_id}/claim")


def latest_result(pool: str) -> Call:
    return Call("GET", f"/pools/{pool}/results/latest")


def results(body: Any) -> list[Any]:
    """A plain list, or the `results` of a DRF page."""
    if isinstance(body, dict) and "results" in body:
        return list(body["results"])
    return list(body or [])


def page(body: Any) -> Page:
    if isinstance(body, list):
        return {"count": len(body), "next": None, "previous": None, "results": body}
    return cast(Page, body)


def next_offset(current: Page, offset: int) -> int | None:
    """Where the page after `current` starts, or None when it was the last."""
    if not current["next"] or not current["results"]:
        return None
    return offset + len(current["results"])


# --- uploads ----------------------------------------------------------------------------------

def upload(settings: ClientSettings, pool: str, file: FileInput, *, timestamp: datetime | str | None,
           filename: str | None, sha256: str | None, idempotency_key: str | None,
           progress: ProgressCallback | None) -> Flow[Upload]:
    """Stream one file (path, bytes or file object); its sha256 is computed while it is read."""
    source = cast(FileSource, (yield Blocking(lambda: FileSource(file, filename))))
    try:
        body = _core.single_upload_body(source, _core.iso(timestamp), sha256)
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        call = Call("POST", f"/pools/{pool}/uploads", body=body, headers=headers, progress=progress)
        return cast(Upload, (yield from json_call(settings, call)))
    finally:
        source.close()


def upload_batch(settings: ClientSettings, pool: str, items: list[BatchItem], *, idempotency_key: str | None,
                 progress: ProgressCallback | None) -> Flow[Batch]:
    """Several updates with their own timestamps, accepted whole or not at all."""
    body, sources = cast(tuple[MultipartBody, list[FileSource]], (yield Blocking(lambda: _core.batch_body(items))))
    try:
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        call = Call("POST", f"/pools/{pool}/batches", body=body, headers=headers, progress=progress)
        return cast(Batch, (yield from json_call(settings, call)))
    finally:
        for source in sources:
            source.close()


# --- tus: resumable uploads -------------------------------------------------------------------

TUS_HEADERS = {"Tus-Resumable": "1.0.0"}
TUS_CHUNK = 4 * 1024 * 1024


@dataclass
class TusState:
    """Where a resumable upload stands; `on_location` lets a caller keep the URL (the outbox does)."""

    location: str | None = None
    on_location: Callable[[str], None] | None = None


def _tus_metadata(values: dict[str, str]) -> str:
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items())


def tus_upload(settings: ClientSettings, pool: str, file: FileInput, *, timestamp: datetime | str | None,
               filename: str | None, sha256: str | None, progress: ProgressCallback | None,
               state: TusState | None = None, chunk_size: int = TUS_CHUNK) -> Flow[Upload]:
    """Upload over the tus endpoint in chunks, resuming from the server's offset after a cut.

    With a `state` whose `location` is set (a previous run's), the upload continues there; a
    location the server no longer knows (expired, 404/410) starts over.
    """
    state = state or TusState()
    source = cast(FileSource, (yield Blocking(lambda: FileSource(file, filename))))
    try:
        digest = sha256 or cast(str, (yield Blocking(source.sha256)))
        location = state.location
        offset = (yield from _tus_offset(settings, location)) if location else None
        if location is None or offset is None:
            location = state.location = yield from _tus_create(settings, pool, source, _core.iso(timestamp), digest)
            offset = 0
            if state.on_location is not None:
                state.on_location(location)
        attempt = 0
        while True:
            try:
                response = yield from _tus_patches(settings, location, source, offset, chunk_size, progress)
                break
            except TransportError as exc:
                attempt += 1
                yield Sleep(settings._retry_delay(attempt, exc))
                resumed = yield from _tus_offset(settings, location)
                if resumed is None:
                    raise PoolhubError("the server forgot the resumable upload", code="tus_expired") from exc
                offset = resumed
        upload_id = response.headers.get("Poolhub-Upload-Id")
        if not upload_id:
            raise PoolhubError("the server finished the upload without naming it", code="tus_protocol")
        return cast(Upload, (yield from json_call(settings, get_upload(upload_id))))
    finally:
        source.close()


def _tus_create(settings: ClientSettings, pool: str, source: FileSource, timestamp: str, digest: str) -> Flow[str]:
    metadata = _tus_metadata({"filename": source.filename, "timestamp": timestamp, "sha256": digest})
    headers = {**TUS_HEADERS, "Upload-Length": str(source.size), "Upload-Metadata": metadata,
               "Idempotency-Key": str(uuid.uuid4())}
    response = yield from exchange(settings, Call("POST", f"/pools/{pool}/tus", headers=headers))
    location = response.headers.get("Location")
    if not location:
        raise PoolhubError("the server created no resumable upload", code="tus_protocol")
    return str(response.url.join(location))


def _tus_offset(settings: ClientSettings, location: str) -> Flow[int | None]:
    """The server's offset for `location`, or None when it no longer exists."""
    call = Call("HEAD", "", headers=dict(TUS_HEADERS), absolute_url=location, ok_status=frozenset({404, 410}))
    response = yield from exchange(settings, call)
    if response.status_code in {404, 410}:
        return None
    return int(response.headers["Upload-Offset"])


def _tus_patches(settings: ClientSettings, location: str, source: FileSource, offset: int, chunk_size: int,
                 progress: ProgressCallback | None) -> Flow[httpx.Response]:
    """PATCH the rest of the file from `offset`; the last answer carries the upload's id."""
    while True:
        chunk = cast(bytes, (yield Blocking(functools.partial(source.read_at, offset, chunk_size))))
        headers = {**TUS_HEADERS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
        # Not repeatable as such: after a cut, the caller asks the server's offset (HEAD) and goes on from there.
        call = Call("PATCH", "", raw=chunk, headers=headers, absolute_url=location)
        response = yield from exchange(settings, call)
        offset = int(response.headers["Upload-Offset"])
        if progress is not None:
            progress(offset, source.size)
        if offset >= source.size:
            return response


# --- downloads (resumable with Range) ---------------------------------------------------------

def download(settings: ClientSettings, path: str, dest: Any, *, fallback: str, params: dict[str, Any] | None = None,
             sha256: str | None = None, progress: ProgressCallback | None = None) -> Flow[Path]:
    """Stream a download to disk; after a cut, ask for the rest (`Range`, `If-Range` the ETag) and go on."""
    attempt = 0
    partial: Download | None = None
    etag: str | None = None
    while True:
        attempt += 1
        headers = {}
        if partial is not None and partial.done and etag:
            headers = {"Range": f"bytes={partial.done}-", "If-Range": etag}
        response = yield from exchange(settings, Call("GET", path, params=params, headers=headers, stream=True))
        if partial is not None and response.status_code == 206 and _range_start(response) != partial.done:
            # Not the rest we asked for: appending it would corrupt the file, so start over.
            yield Discard(response)
            partial.abort()
            partial, etag = None, None
            continue
        if partial is None or response.status_code != 206:
            if partial is not None:
                partial.abort()  # the server sent the whole body again (the file changed, or no ranges)
            target = _core.download_target(dest, response, fallback)
            partial = Download(target, sha256, _core.content_length(response), progress)
        etag = response.headers.get("ETag")
        broke = yield Pump(response, partial)
        if broke is None:
            return partial.finish()
        yield Sleep(settings._retry_delay(attempt, TransportError(f"download of {partial.dest.name} broke off: "
                                                                   f"{broke}")))


def _range_start(response: httpx.Response) -> int | None:
    """Where a 206's `Content-Range: bytes START-END/SIZE` starts, or None if it says nothing usable."""
    match = re.fullmatch(r"bytes (\d+)-\d+/(?:\d+|\*)", response.headers.get("Content-Range", "").strip())
    return int(match.group(1)) if match else None


def download_latest_result(settings: ClientSettings, pool: str, dest: Any, *,
                           progress: ProgressCallback | None) -> Flow[tuple[Result, Path]]:
    """Fetch the pool's latest result to disk, verified against its sha256."""
    result = cast(Result, (yield from json_call(settings, latest_result(pool))))
    path = yield from download(settings, f"/results/{result['id']}/content", dest,
                               fallback=f"result-{result['id']}.bin", sha256=result.get("sha256"),
                               progress=progress)
    return result, path


def post_result(settings: ClientSettings, group_id: str, lease_id: str, file: FileInput, *, filename: str | None,
                progress: ProgressCallback | None) -> Flow[Result]:
    source = cast(FileSource, (yield Blocking(lambda: FileSource(file, filename or "result.bin"))))
    try:
        call = Call("POST", f"/groups/{group_id}/result", body=_core.result_body(source, lease_id),
                    progress=progress)
        return cast(Result, (yield from json_call(settings, call)))
    finally:
        source.close()

