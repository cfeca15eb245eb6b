"""The asyncio client, and `listen()`: notifications over /ws/ with reconnect and resume."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import httpx
import websockets
from websockets.asyncio.client import ClientConnection, connect

from poolhub_client import _core
from poolhub_client._core import (
    AUTH_RETRY_CODES,
    BatchItem,
    Download,
    FileInput,
    FileSource,
    MultipartBody,
    ProgressCallback,
    Tokens,
    TokenState,
)
from poolhub_client.client import DEFAULT_TIMEOUT, _page, _results, upload_filters
from poolhub_client.errors import RETRYABLE_STATUS, AuthError, PoolhubError, TransportError
from poolhub_client.types import Batch, Group, Lease, Member, Page, Pool, Result, Session, Upload, User

log = logging.getLogger("poolhub_client")

Notification = dict[str, Any]
SOCKET_AUTH_CODES = frozenset({"invalid_token", "not_authenticated", "token_revoked"})


async def _aiter(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """A sync chunk generator (file reads) driven from a thread, so the event loop never blocks on disk."""
    while True:
        chunk = await asyncio.to_thread(next, chunks, None)
        if chunk is None:
            return
        yield chunk


class AsyncPoolhubClient(_core.ClientSettings):
    """The asyncio twin of PoolhubClient: same methods, awaited, plus `listen()`."""

    def __init__(self, base_url: str, *, tokens: Tokens | None = None, token_state: TokenState | None = None,
                 on_tokens: Any = None, timeout: httpx.Timeout | float = DEFAULT_TIMEOUT, max_retries: int = 4,
                 max_retry_wait: float = 120.0, transport: httpx.AsyncBaseTransport | None = None,
                 verify: bool = True, refresh_early: bool = True) -> None:
        super().__init__(base_url, tokens=tokens, token_state=token_state, on_tokens=on_tokens,
                         max_retries=max_retries, max_retry_wait=max_retry_wait, refresh_early=refresh_early)
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport, verify=verify)
        self._refresh_lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncPoolhubClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _wait_or_raise(self, attempt: int, error: PoolhubError) -> None:
        await asyncio.sleep(self._retry_delay(attempt, error))

    async def _send(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                    body: MultipartBody | None = None, headers: dict[str, str] | None = None, auth: bool = True,
                    stream: bool = False, progress: ProgressCallback | None = None) -> httpx.Response:
        repeatable = method == "GET" or bool(headers and "Idempotency-Key" in headers)
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            if auth and self.refresh_early and self.state.needs_refresh():
                await self.refresh(if_generation=self.state.generation)
            request_headers = self._headers(auth, headers)
            content = None
            if body is not None:
                request_headers["Content-Type"] = body.content_type
                request_headers["Content-Length"] = str(len(body))
                content = _aiter(body.iter_chunks(progress))
            request = self._http.build_request(method, _core.api_url(self.base_url, path), json=json,
                                               params=params, content=content, headers=request_headers)
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                unreachable = TransportError(f"cannot reach {self.base_url}: {exc.__class__.__name__} {exc}")
                if not repeatable:
                    raise unreachable from exc
                await self._wait_or_raise(attempt, unreachable)
                continue
            if response.status_code < 400:
                return response
            await response.aread()
            await response.aclose()
            error = _core.response_error(response)
            if (response.status_code == 401 and auth and error.code in AUTH_RETRY_CODES and not refreshed
                    and self.state.tokens is not None and self.state.tokens.refresh):
                refreshed = True
                await self.refresh(if_generation=self.state.generation)
                continue
            if response.status_code in RETRYABLE_STATUS:
                await self._wait_or_raise(attempt, error)
                continue
            raise error

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return _core.json_or_none(await self._send(method, path, **kwargs))

    # -- authentication ---------------------------------------------------------------------

    def _store_login(self, body: dict[str, Any]) -> User:
        self.state.set(Tokens(access=body["access"], refresh=body.get("refresh"), user=body.get("user")))
        return cast(User, body["user"])

    async def signup(self, username: str, password: str) -> User:
        body = await self._json("POST", "/auth/signup", json={"username": username, "password": password},
                                auth=False)
        return self._store_login(body)

    async def login(self, username: str, password: str) -> User:
        body = await self._json("POST", "/auth/login", json={"username": username, "password": password},
                                auth=False)
        return self._store_login(body)

    async def refresh(self, *, if_generation: int | None = None) -> None:
        async with self._refresh_lock:
            if if_generation is not None and self.state.generation != if_generation:
                return
            tokens = self.state.tokens
            if tokens is None or not tokens.refresh:
                raise AuthError("not logged in", code="not_authenticated")
            generation = self.state.generation
            try:
                body = await self._json("POST", "/auth/refresh", json={"refresh": tokens.refresh}, auth=False)
            except AuthError:
                if self.state.generation != generation:
                    return  # a sync twin in another thread rotated the pair meanwhile
                raise
            self.state.set(Tokens(access=body["access"], refresh=body.get("refresh") or tokens.refresh,
                                  user=tokens.user))

    async def logout(self) -> None:
        tokens = self.state.tokens
        if tokens is None:
            return
        await self._send("POST", "/auth/logout", json={"refresh": tokens.refresh or ""})
        self.state.set(None)

    async def validate(self) -> Session:
        return cast(Session, await self._json("GET", "/auth/validate"))

    # -- pools and members -------------------------------------------------------------------

    async def create_pool(self, name: str, **fields: Any) -> Pool:
        return cast(Pool, await self._json("POST", "/pools", json={"name": name, **fields}))

    async def list_pools(self) -> list[Pool]:
        return cast(list[Pool], _results(await self._json("GET", "/pools")))

    async def get_pool(self, pool: str) -> Pool:
        return cast(Pool, await self._json("GET", f"/pools/{pool}"))

    async def update_pool(self, pool: str, **fields: Any) -> Pool:
        return cast(Pool, await self._json("PATCH", f"/pools/{pool}", json=fields))

    async def members(self, pool: str) -> list[Member]:
        return cast(list[Member], _results(await self._json("GET", f"/pools/{pool}/members")))

    async def add_member(self, pool: str, username: str, role: str) -> Member:
        return cast(Member, await self._json("POST", f"/pools/{pool}/members",
                                             json={"username": username, "role": role}))

    async def remove_member(self, pool: str, username: str) -> None:
        await self._send("DELETE", f"/pools/{pool}/members/{username}")

    # -- uploads -----------------------------------------------------------------------------

    async def upload(self, pool: str, file: FileInput, *, timestamp: datetime | str | None = None,
                     filename: str | None = None, sha256: str | None = None, idempotency_key: str | None = None,
                     progress: ProgressCallback | None = None) -> Upload:
        source = await asyncio.to_thread(FileSource, file, filename)
        try:
            body = _core.single_upload_body(source, _core.iso(timestamp), sha256)
            headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
            return cast(Upload, await self._json("POST", f"/pools/{pool}/uploads", body=body, headers=headers,
                                                 progress=progress))
        finally:
            source.close()

    async def upload_batch(self, pool: str, items: list[BatchItem], *, idempotency_key: str | None = None,
                           progress: ProgressCallback | None = None) -> Batch:
        body, sources = await asyncio.to_thread(_core.batch_body, items)
        try:
            headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
            return cast(Batch, await self._json("POST", f"/pools/{pool}/batches", body=body, headers=headers,
                                                progress=progress))
        finally:
            for source in sources:
                source.close()

    async def uploads(self, *, pool: str | None = None, user: str | None = None, status: str | None = None,
                      group: str | None = None, limit: int | None = None, offset: int | None = None) -> Page:
        return _page(await self._json("GET", "/uploads",
                                      params=upload_filters(pool, user, status, group, limit, offset)))

    async def iter_uploads(self, *, pool: str | None = None, user: str | None = None, status: str | None = None,
                           group: str | None = None, page_size: int = 100) -> AsyncIterator[Upload]:
        offset = 0
        while True:
            page = await self.uploads(pool=pool, user=user, status=status, group=group, limit=page_size,
                                      offset=offset)
            for upload in page["results"]:
                yield upload
            offset += len(page["results"])
            if not page["next"] or not page["results"]:
                return

    async def get_upload(self, upload_id: str) -> Upload:
        return cast(Upload, await self._json("GET", f"/uploads/{upload_id}"))

    async def download_upload(self, upload_id: str, dest: str | os.PathLike[str], *,
                              progress: ProgressCallback | None = None) -> Path:
        return await self._download(f"/uploads/{upload_id}/content", dest, fallback=f"{upload_id}.bin",
                                    progress=progress)

    # -- groups, export, results -------------------------------------------------------------

    async def groups(self, pool: str, *, status: str | None = None) -> list[Group]:
        params = {"status": status} if status else None
        return cast(list[Group], _results(await self._json("GET", f"/pools/{pool}/groups", params=params)))

    async def get_group(self, group_id: str) -> Group:
        return cast(Group, await self._json("GET", f"/groups/{group_id}"))

    async def close_group(self, group_id: str) -> Group:
        return cast(Group, await self._json("POST", f"/groups/{group_id}/close"))

    async def claim_group(self, group_id: str) -> Lease:
        return cast(Lease, await self._json("POST", f"/groups/{group_id}/claim"))

    async def download_archive(self, group_id: str, lease_id: str, dest: str | os.PathLike[str], *,
                               progress: ProgressCallback | None = None) -> Path:
        return await self._download(f"/groups/{group_id}/archive", dest, fallback=f"group-{group_id}.archive",
                                    params={"lease": lease_id}, progress=progress)

    async def post_result(self, group_id: str, lease_id: str, file: FileInput, *, filename: str | None = None,
                          progress: ProgressCallback | None = None) -> Result:
        source = await asyncio.to_thread(FileSource, file, filename or "result.bin")
        try:
            body = _core.result_body(source, lease_id)
            return cast(Result, await self._json("POST", f"/groups/{group_id}/result", body=body,
                                                 progress=progress))
        finally:
            source.close()

    async def latest_result(self, pool: str) -> Result:
        return cast(Result, await self._json("GET", f"/pools/{pool}/results/latest"))

    async def download_result(self, result_id: str, dest: str | os.PathLike[str], *, sha256: str | None = None,
                              progress: ProgressCallback | None = None) -> Path:
        return await self._download(f"/results/{result_id}/content", dest, fallback=f"result-{result_id}.bin",
                                    sha256=sha256, progress=progress)

    async def download_latest_result(self, pool: str, dest: str | os.PathLike[str], *,
                                     progress: ProgressCallback | None = None) -> tuple[Result, Path]:
        result = await self.latest_result(pool)
        path = await self.download_result(result["id"], dest, sha256=result.get("sha256"), progress=progress)
        return result, path

    async def _download(self, path: str, dest: str | os.PathLike[str], *, fallback: str,
                        params: dict[str, Any] | None = None, sha256: str | None = None,
                        progress: ProgressCallback | None = None) -> Path:
        attempt = 0
        while True:
            attempt += 1
            response = await self._send("GET", path, params=params, stream=True)
            target = _core.download_target(dest, response, fallback)
            download = Download(target, sha256, _core.content_length(response), progress)
            try:
                async for chunk in response.aiter_bytes(_core.CHUNK):
                    await asyncio.to_thread(download.write, chunk)
            except httpx.TransportError as exc:
                download.abort()
                await self._wait_or_raise(attempt, TransportError(f"download of {target.name} broke off: {exc}"))
                continue
            except BaseException:
                download.abort()
                raise
            finally:
                await response.aclose()
            return download.finish()

    # -- notifications -----------------------------------------------------------------------

    def listen(self, *, after: int | None = None, reconnect: bool = True, max_backoff: float = 30.0) -> Listener:
        """An async iterator of notifications: `async for note in client.listen(): ...`.

        Authenticates with a first `connect` frame (never a token in the URL), reconnects with
        backoff when the socket drops, and then sends `resume` from the last `seq` seen, so
        nothing pushed meanwhile is missed; notifications are deduplicated by `seq`. Pass
        `after` to also receive what happened before this call (for example the `last_seq` of
        a previous run).
        """
        return Listener(self, after=after, reconnect=reconnect, max_backoff=max_backoff)


class Listener:
    """The iterator `listen()` returns; `last_seq` is the highest seq delivered so far."""

    def __init__(self, client: AsyncPoolhubClient, *, after: int | None, reconnect: bool,
                 max_backoff: float) -> None:
        self.client = client
        self.last_seq = after
        self.reconnect = reconnect
        self.max_backoff = max_backoff
        self.connected = asyncio.Event()
        self.connections = 0
        self._seen: set[int] = set()
        self._order: deque[int] = deque()
        self._stream: AsyncGenerator[Notification, None] = self._run()

    def __aiter__(self) -> Listener:
        return self

    async def __anext__(self) -> Notification:
        return await self._stream.__anext__()

    async def aclose(self) -> None:
        await self._stream.aclose()

    def _fresh(self, seq: int) -> bool:
        if seq in self._seen:
            return False
        self._seen.add(seq)
        self._order.append(seq)
        if len(self._order) > 50_000:
            self._seen.discard(self._order.popleft())
        return True

    async def _authenticate(self, ws: ClientConnection) -> None:
        client = self.client
        if client.state.needs_refresh():
            await client.refresh(if_generation=client.state.generation)
        tokens = client.state.tokens
        if tokens is None:
            raise AuthError("not logged in", code="not_authenticated")
        await ws.send(json.dumps({"type": "connect", "access_token": tokens.access, "request_id": "connect"}))
        while True:
            reply = json.loads(await asyncio.wait_for(ws.recv(), 15))
            if reply.get("type") == "connected":
                return
            if reply.get("type") == "error":
                code = str(reply.get("code") or "error")
                cls = AuthError if code in SOCKET_AUTH_CODES else PoolhubError
                raise cls(str(reply.get("message") or code), code=code)

    async def _session(self, ws: ClientConnection) -> AsyncIterator[Notification]:
        await self._authenticate(ws)
        self.connections += 1
        self.connected.set()
        if self.last_seq is not None:
            await ws.send(json.dumps({"type": "resume", "after": self.last_seq, "request_id": "resume"}))
        async for raw in ws:
            message = json.loads(raw)
            if not isinstance(message, dict):
                continue
            if message.get("type") == "error":
                # An expired token is routine: the server closes the socket and we come back refreshed.
                level = logging.INFO if message.get("code") in SOCKET_AUTH_CODES else logging.WARNING
                log.log(level, "server error on the socket: %s %s", message.get("code"), message.get("message"))
                continue
            note = _flatten(message)
            seq = note.get("seq")
            if not isinstance(seq, int) or not self._fresh(seq):
                continue  # a reply (alive, connected) or a duplicate of something already delivered
            self.last_seq = max(self.last_seq or 0, seq)
            yield note

    async def _run(self) -> AsyncGenerator[Notification, None]:
        failures = 0
        refreshed = False
        while True:
            try:
                async with connect(_core.ws_url(self.client.base_url), origin=cast(Any, _core.origin_of(
                        self.client.base_url)), open_timeout=10, max_size=2**22) as ws:
                    async for note in self._session(ws):
                        failures = 0
                        refreshed = False
                        yield note
                    error: Exception = TransportError("the server closed the socket")
            except AuthError as exc:
                if refreshed or exc.code not in AUTH_RETRY_CODES | {"not_authenticated"}:
                    raise
                refreshed = True  # the access token expired: one refresh, then connect again
                await self.client.refresh(if_generation=self.client.state.generation)
                continue
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                error = exc
            self.connected.clear()
            if not self.reconnect:
                raise TransportError(f"the notification socket closed: {error}") from error
            failures += 1
            delay = _core.backoff_delay(failures, base=0.5, cap=self.max_backoff)
            log.info("notification socket lost (%s); reconnecting in %.1fs", error, delay)
            await asyncio.sleep(delay)


def _flatten(message: dict[str, Any]) -> Notification:
    """Push frames carry their fields at the top level; a nested `data` object is merged in."""
    data = message.get("data")
    if isinstance(data, dict):
        merged = {key: value for key, value in message.items() if key != "data"}
        for key, value in data.items():
            merged.setdefault(key, value)
        return merged
    return dict(message)
