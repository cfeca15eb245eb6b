"""The asyncio client, and `listen()`: notifications over /ws/ with reconnect and resume."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import websockets
from websockets.asyncio.client import ClientConnection, connect

from poolhub_client import _core, flows
from poolhub_client._core import (
    AUTH_RETRY_CODES,
    DEFAULT_TIMEOUT,
    BatchItem,
    FileInput,
    ProgressCallback,
    Tokens,
    TokenState,
)
from poolhub_client.errors import AuthError, PoolhubError, TransportError
from poolhub_client.flows import Call, Flow
from poolhub_client.types import Batch, Group, Lease, Member, Page, Pool, Result, Session, Upload, User

T = TypeVar("T")

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
    """The asyncio twin of PoolhubClient: same methods, awaited, plus `listen()`.

    Both drive the operations of `poolhub_client.flows`; this one awaits each step.
    """

    def __init__(self, base_url: str, *, tokens: Tokens | None = None, token_state: TokenState | None = None,
                 on_tokens: Any = None, timeout: httpx.Timeout | float = DEFAULT_TIMEOUT, max_retries: int = 4,
                 max_retry_wait: float = 120.0, transport: httpx.AsyncBaseTransport | None = None,
                 verify: bool = True, refresh_early: bool = True, tus_threshold: int | None = None) -> None:
        super().__init__(base_url, tokens=tokens, token_state=token_state, on_tokens=on_tokens,
                         max_retries=max_retries, max_retry_wait=max_retry_wait, refresh_early=refresh_early,
                         tus_threshold=tus_threshold)
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport, verify=verify)
        self._refresh_lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncPoolhubClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _drive(self, flow: Flow[T]) -> T:
        """Run a flow, awaiting each step it asks for; a step's error is raised in the flow."""
        answer: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    step = flow.throw(error) if error is not None else flow.send(answer)
                except StopIteration as done:
                    return cast(T, done.value)
                answer, error = None, None
                try:
                    answer = await self._do(step)
                except Exception as exc:
                    error = exc
        finally:
            flow.close()

    async def _do(self, step: flows.Step) -> Any:
        if isinstance(step, flows.Send):
            return await self._send(step)
        if isinstance(step, flows.Sleep):
            await asyncio.sleep(step.seconds)
        elif isinstance(step, flows.Refresh):
            await self.refresh(if_generation=step.generation)
        elif isinstance(step, flows.Discard):
            await step.response.aread()
            await step.response.aclose()
        elif isinstance(step, flows.Pump):
            return await self._pump(step)
        else:
            return await asyncio.to_thread(step.fn)
        return None

    async def _send(self, step: flows.Send) -> httpx.Response | httpx.TransportError:
        call = step.call
        content: Any = call.raw
        headers = dict(step.headers)
        if call.body is not None:
            headers["Content-Type"] = call.body.content_type
            headers["Content-Length"] = str(len(call.body))
            content = _aiter(call.body.iter_chunks(call.progress))
        request = self._http.build_request(call.method, step.url, json=call.json, params=call.params,
                                           content=content, headers=headers)
        try:
            return await self._http.send(request, stream=call.stream)
        except httpx.TransportError as exc:
            return exc

    async def _pump(self, step: flows.Pump) -> httpx.TransportError | None:
        try:
            async for chunk in step.response.aiter_bytes(_core.CHUNK):
                await asyncio.to_thread(step.download.write, chunk)
        except httpx.TransportError as exc:
            return exc
        except BaseException:
            step.download.abort()
            raise
        finally:
            await step.response.aclose()
        return None

    async def _json(self, call: Call) -> Any:
        return await self._drive(flows.json_call(self, call))

    # -- authentication ---------------------------------------------------------------------

    async def signup(self, username: str, password: str) -> User:
        return await self._drive(flows.login(self, "/auth/signup", username, password))

    async def login(self, username: str, password: str) -> User:
        return await self._drive(flows.login(self, "/auth/login", username, password))

    async def refresh(self, *, if_generation: int | None = None) -> None:
        async with self._refresh_lock:
            await self._drive(flows.refresh(self, if_generation))

    async def logout(self) -> None:
        await self._drive(flows.logout(self))

    async def validate(self) -> Session:
        return cast(Session, await self._json(flows.validate()))

    # -- pools and members -------------------------------------------------------------------

    async def create_pool(self, name: str, **fields: Any) -> Pool:
        return cast(Pool, await self._json(flows.create_pool(name, fields)))

    async def list_pools(self) -> list[Pool]:
        return cast(list[Pool], flows.results(await self._json(flows.list_pools())))

    async def get_pool(self, pool: str) -> Pool:
        return cast(Pool, await self._json(flows.get_pool(pool)))

    async def update_pool(self, pool: str, **fields: Any) -> Pool:
        return cast(Pool, await self._json(flows.update_pool(pool, fields)))

    async def members(self, pool: str) -> list[Member]:
        return cast(list[Member], flows.results(await self._json(flows.members(pool))))

    async def add_member(self, pool: str, username: str, role: str) -> Member:
        return cast(Member, await self._json(flows.add_member(pool, username, role)))

    async def remove_member(self, pool: str, username: str) -> None:
        await self._json(flows.remove_member(pool, username))

    async def provision(self, pool: str, count: int, *, prefix: str = "device", role: str = "contributor",
                        idempotency_key: str | None = None) -> list[dict[str, Any]]:
        body = await self._json(flows.provision(pool, count, prefix, role, idempotency_key))
        return list(body["members"])

    async def usage(self, pool: str) -> dict[str, Any]:
        return cast(dict[str, Any], await self._json(flows.usage(pool)))

    # -- uploads -----------------------------------------------------------------------------

    async def upload(self, pool: str, file: FileInput, *, timestamp: datetime | str | None = None,
                     filename: str | None = None, sha256: str | None = None, idempotency_key: str | None = None,
                     progress: ProgressCallback | None = None, tus: flows.TusState | None = None) -> Upload:
        if tus is not None or self.use_tus(file):
            return await self._drive(flows.tus_upload(self, pool, file, timestamp=timestamp, filename=filename,
                                                      sha256=sha256, progress=progress, state=tus))
        return await self._drive(flows.upload(self, pool, file, timestamp=timestamp, filename=filename,
                                              sha256=sha256, idempotency_key=idempotency_key, progress=progress))

    async def upload_batch(self, pool: str, items: list[BatchItem], *, idempotency_key: str | None = None,
                           progress: ProgressCallback | None = None) -> Batch:
        return await self._drive(flows.upload_batch(self, pool, items, idempotency_key=idempotency_key,
                                                    progress=progress))

    async def uploads(self, *, pool: str | None = None, user: str | None = None, status: str | None = None,
                      group: str | None = None, limit: int | None = None, offset: int | None = None) -> Page:
        return flows.page(await self._json(flows.uploads(pool, user, status, group, limit, offset)))

    async def iter_uploads(self, *, pool: str | None = None, user: str | None = None, status: str | None = None,
                           group: str | None = None, page_size: int = 100) -> AsyncIterator[Upload]:
        offset: int | None = 0
        while offset is not None:
            current = await self.uploads(pool=pool, user=user, status=status, group=group, limit=page_size,
                                         offset=offset)
            for upload in current["results"]:
                yield upload
            offset = flows.next_offset(current, offset)

    async def get_upload(self, upload_id: str) -> Upload:
        return cast(Upload, await self._json(flows.get_upload(upload_id)))

    async def download_upload(self, upload_id: str, dest: str | os.PathLike[str], *,
                              progress: ProgressCallback | None = None) -> Path:
        return await self._drive(flows.download(self, f"/uploads/{upload_id}/content", dest,
                                                fallback=f"{upload_id}.bin", progress=progress))

    # -- groups, export, results -------------------------------------------------------------

    async def groups(self, pool: str, *, status: str | None = None) -> list[Group]:
        return cast(list[Group], flows.results(await self._json(flows.groups(pool, status))))

    async def get_group(self, group_id: str) -> Group:
        return cast(Group, await self._json(flows.get_group(group_id)))

    async def close_group(self, group_id: str) -> Group:
        return cast(Group, await self._json(flows.close_group(group_id)))

    async def claim_group(self, group_id: str) -> Lease:
        return cast(Lease, await self._json(flows.claim_group(group_id)))

    async def download_archive(self, group_id: str, lease_id: str, dest: str | os.PathLike[str], *,
                               progress: ProgressCallback | None = None) -> Path:
        return await self._drive(flows.download(self, f"/groups/{group_id}/archive", dest,
                                                fallback=f"group-{group_id}.archive", params={"lease": lease_id},
                                                progress=progress))

    async def post_result(self, group_id: str, lease_id: str, file: FileInput, *, filename: str | None = None,
                          progress: ProgressCallback | None = None) -> Result:
        return await self._drive(flows.post_result(self, group_id, lease_id, file, filename=filename,
                                                   progress=progress))

    async def latest_result(self, pool: str) -> Result:
        return cast(Result, await self._json(flows.latest_result(pool)))

    async def download_result(self, result_id: str, dest: str | os.PathLike[str], *, sha256: str | None = None,
                              progress: ProgressCallback | None = None) -> Path:
        return await self._drive(flows.download(self, f"/results/{result_id}/content", dest,
                                                fallback=f"result-{result_id}.bin", sha256=sha256,
                                                progress=progress))

    async def download_latest_result(self, pool: str, dest: str | os.PathLike[str], *,
                                     progress: ProgressCallback | None = None) -> tuple[Result, Path]:
        return await self._drive(flows.download_latest_result(self, pool, dest, progress=progress))

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


SETTLE_SECONDS = 30.0
"""How far back a reconnect resumes. The server gives each event its `seq` when the event is
written, and events of concurrent transactions commit (and are pushed) in an order that can
differ from `seq` order by a transaction's length; a client that resumed from the highest `seq` it
saw live could skip an event with a smaller `seq` that committed just after. So the listener
resumes from the highest `seq` it saw at least this long ago, and drops the repeats by `seq`."""


class Listener:
    """The iterator `listen()` returns. `last_seq` is the highest seq delivered so far;
    `resume_seq` is where a later run should start (`listen(after=listener.resume_seq)`)."""

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
        self._settled = after  # the highest seq delivered at least SETTLE_SECONDS ago
        self._recent: deque[tuple[float, int]] = deque()  # (when, seq) of what was delivered since
        self._stream: AsyncGenerator[Notification, None] = self._run()

    def __aiter__(self) -> Listener:
        return self

    async def __anext__(self) -> Notification:
        return await self._stream.__anext__()

    async def aclose(self) -> None:
        await self._stream.aclose()

    @property
    def resume_seq(self) -> int | None:
        """Where to resume from: nothing with a smaller seq can still be on its way."""
        now = time.monotonic()
        while self._recent and now - self._recent[0][0] >= SETTLE_SECONDS:
            _, seq = self._recent.popleft()
            self._settled = max(self._settled or 0, seq)
        if self._settled is None and self._recent:  # listening "from now on": replay what came since
            return min(seq for _, seq in self._recent) - 1
        return self._settled

    def _delivered(self, seq: int) -> None:
        self.last_seq = max(self.last_seq or 0, seq)
        self._recent.append((time.monotonic(), seq))

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
        after = self.resume_seq
        if after is not None:
            await ws.send(json.dumps({"type": "resume", "after": after, "request_id": "resume"}))
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
            self._delivered(seq)
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
