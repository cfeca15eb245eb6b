"""The synchronous client: `PoolhubClient(url).login(username, password)`, then call the contract.

Every operation lives once in `poolhub_client.flows`; this class only drives flows with blocking
calls (`_drive`). `AsyncPoolhubClient` drives the same flows with awaits.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx

from poolhub_client import _core, flows
from poolhub_client._core import DEFAULT_TIMEOUT, BatchItem, FileInput, ProgressCallback, Tokens, TokenState
from poolhub_client.flows import Call, Flow
from poolhub_client.types import Batch, Group, Lease, Member, Page, Pool, Result, Session, Upload, User

T = TypeVar("T")


class PoolhubClient(_core.ClientSettings):
    """Synchronous poolhub client. Tokens refresh by themselves; errors are typed `PoolhubError`s.

    Requests that are safe to repeat (GETs, and uploads, which always carry an Idempotency-Key)
    are retried on network errors; every request is retried on 429/503, honouring Retry-After,
    up to `max_retries` times. Files above `tus_threshold` bytes go over the resumable (tus)
    endpoint, which resumes from the server's offset after a cut.
    """

    def __init__(self, base_url: str, *, tokens: Tokens | None = None, token_state: TokenState | None = None,
                 on_tokens: Any = None, timeout: httpx.Timeout | float = DEFAULT_TIMEOUT, max_retries: int = 4,
                 max_retry_wait: float = 120.0, transport: httpx.BaseTransport | None = None,
                 verify: bool = True, refresh_early: bool = True, tus_threshold: int | None = None) -> None:
        super().__init__(base_url, tokens=tokens, token_state=token_state, on_tokens=on_tokens,
                         max_retries=max_retries, max_retry_wait=max_retry_wait, refresh_early=refresh_early,
                         tus_threshold=tus_threshold)
        self._http = httpx.Client(timeout=timeout, transport=transport, verify=verify)

    # -- plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PoolhubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drive(self, flow: Flow[T]) -> T:
        """Run a flow, doing each step it asks for with blocking calls; a step's error is raised in the flow."""
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
                    answer = self._do(step)
                except Exception as exc:
                    error = exc
        finally:
            flow.close()

    def _do(self, step: flows.Step) -> Any:
        if isinstance(step, flows.Send):
            return self._send(step)
        if isinstance(step, flows.Sleep):
            time.sleep(step.seconds)
        elif isinstance(step, flows.Refresh):
            self.refresh(if_generation=step.generation)
        elif isinstance(step, flows.Discard):
            step.response.read()
            step.response.close()
        elif isinstance(step, flows.Pump):
            return self._pump(step)
        else:
            return step.fn()
        return None

    def _send(self, step: flows.Send) -> httpx.Response | httpx.TransportError:
        call = step.call
        content: Any = call.raw
        headers = dict(step.headers)
        if call.body is not None:
            headers["Content-Type"] = call.body.content_type
            headers["Content-Length"] = str(len(call.body))
            content = call.body.iter_chunks(call.progress)
        request = self._http.build_request(call.method, step.url, json=call.json, params=call.params,
                                           content=content, headers=headers)
        try:
            return self._http.send(request, stream=call.stream)
        except httpx.TransportError as exc:
            return exc

    def _pump(self, step: flows.Pump) -> httpx.TransportError | None:
        try:
            for chunk in step.response.iter_bytes(_core.CHUNK):
                step.download.write(chunk)
        except httpx.TransportError as exc:
            return exc
        except BaseException:
            step.download.abort()
            raise
        finally:
            step.response.close()
        return None

    def _json(self, call: Call) -> Any:
        return self._drive(flows.json_call(self, call))

    # -- authentication ---------------------------------------------------------------------

    def signup(self, username: str, password: str) -> User:
        return self._drive(flows.login(self, "/auth/signup", username, password))

    def login(self, username: str, password: str) -> User:
        return self._drive(flows.login(self, "/auth/login", username, password))

    def refresh(self, *, if_generation: int | None = None) -> None:
        """Rotate the token pair (the old refresh token is spent; the new one is stored)."""
        with self.state.lock:
            self._drive(flows.refresh(self, if_generation))

    def logout(self) -> None:
        self._drive(flows.logout(self))

    def validate(self) -> Session:
        return cast(Session, self._json(flows.validate()))

    # -- pools and members -------------------------------------------------------------------

    def create_pool(self, name: str, **fields: Any) -> Pool:
        return cast(Pool, self._json(flows.create_pool(name, fields)))

    def list_pools(self) -> list[Pool]:
        return cast(list[Pool], flows.results(self._json(flows.list_pools())))

    def get_pool(self, pool: str) -> Pool:
        return cast(Pool, self._json(flows.get_pool(pool)))

    def update_pool(self, pool: str, **fields: Any) -> Pool:
        return cast(Pool, self._json(flows.update_pool(pool, fields)))

    def members(self, pool: str) -> list[Member]:
        return cast(list[Member], flows.results(self._json(flows.members(pool))))

    def add_member(self, pool: str, username: str, role: str) -> Member:
        return cast(Member, self._json(flows.add_member(pool, username, role)))

    def remove_member(self, pool: str, username: str) -> None:
        self._json(flows.remove_member(pool, username))

    def provision(self, pool: str, count: int, *, prefix: str = "device", role: str = "contributor",
                  idempotency_key: str | None = None) -> list[dict[str, Any]]:
        """Create `count` device accounts in the pool; each password is in this answer only."""
        body = self._json(flows.provision(pool, count, prefix, role, idempotency_key))
        return list(body["members"])

    def usage(self, pool: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._json(flows.usage(pool)))

    # -- uploads -----------------------------------------------------------------------------

    def upload(self, pool: str, file: FileInput, *, timestamp: datetime | str | None = None,
               filename: str | None = None, sha256: str | None = None, idempotency_key: str | None = None,
               progress: ProgressCallback | None = None, tus: flows.TusState | None = None) -> Upload:
        """Stream one file (path, bytes or file object); its sha256 is computed while it is read.

        Files above `tus_threshold` (or any file given a `tus` state) go over the resumable endpoint.
        """
        if tus is not None or self.use_tus(file):
            return self._drive(flows.tus_upload(self, pool, file, timestamp=timestamp, filename=filename,
                                                sha256=sha256, progress=progress, state=tus))
        return self._drive(flows.upload(self, pool, file, timestamp=timestamp, filename=filename, sha256=sha256,
                                        idempotency_key=idempotency_key, progress=progress))

    def upload_batch(self, pool: str, items: list[BatchItem], *, idempotency_key: str | None = None,
                     progress: ProgressCallback | None = None) -> Batch:
        """Several updates with their own timestamps, accepted whole or not at all."""
        return self._drive(flows.upload_batch(self, pool, items, idempotency_key=idempotency_key,
                                              progress=progress))

    def uploads(self, *, pool: str | None = None, user: str | None = None, status: str | None = None,
                group: str | None = None, limit: int | None = None, offset: int | None = None) -> Page:
        """One page of the caller's uploads (admin: everyone's)."""
        return flows.page(self._json(flows.uploads(pool, user, status, group, limit, offset)))

    def iter_uploads(self, *, pool: str | None = None, user: str | None = None, status: str | None = None,
                     group: str | None = None, page_size: int = 100) -> Iterator[Upload]:
        offset: int | None = 0
        while offset is not None:
            current = self.uploads(pool=pool, user=user, status=status, group=group, limit=page_size,
                                   offset=offset)
            yield from current["results"]
            offset = flows.next_offset(current, offset)

    def get_upload(self, upload_id: str) -> Upload:
        return cast(Upload, self._json(flows.get_upload(upload_id)))

    def download_upload(self, upload_id: str, dest: str | os.PathLike[str], *,
                        progress: ProgressCallback | None = None) -> Path:
        return self._drive(flows.download(self, f"/uploads/{upload_id}/content", dest, fallback=f"{upload_id}.bin",
                                          progress=progress))

    # -- groups, export, results -------------------------------------------------------------

    def groups(self, pool: str, *, status: str | None = None) -> list[Group]:
        return cast(list[Group], flows.results(self._json(flows.groups(pool, status))))

    def get_group(self, group_id: str) -> Group:
        return cast(Group, self._json(flows.get_group(group_id)))

    def close_group(self, group_id: str) -> Group:
        """The trigger event: close the group now."""
        return cast(Group, self._json(flows.close_group(group_id)))

    def claim_group(self, group_id: str) -> Lease:
        return cast(Lease, self._json(flows.claim_group(group_id)))

    def download_archive(self, group_id: str, lease_id: str, dest: str | os.PathLike[str], *,
                         progress: ProgressCallback | None = None) -> Path:
        """The group's archive, resumed with Range after a cut."""
        return self._drive(flows.download(self, f"/groups/{group_id}/archive", dest,
                                          fallback=f"group-{group_id}.archive", params={"lease": lease_id},
                                          progress=progress))

    def post_result(self, group_id: str, lease_id: str, file: FileInput, *, filename: str | None = None,
                    progress: ProgressCallback | None = None) -> Result:
        return self._drive(flows.post_result(self, group_id, lease_id, file, filename=filename, progress=progress))

    def latest_result(self, pool: str) -> Result:
        return cast(Result, self._json(flows.latest_result(pool)))

    def download_result(self, result_id: str, dest: str | os.PathLike[str], *, sha256: str | None = None,
                        progress: ProgressCallback | None = None) -> Path:
        return self._drive(flows.download(self, f"/results/{result_id}/content", dest,
                                          fallback=f"result-{result_id}.bin", sha256=sha256, progress=progress))

    def download_latest_result(self, pool: str, dest: str | os.PathLike[str], *,
                               progress: ProgressCallback | None = None) -> tuple[Result, Path]:
        """Fetch the pool's latest result to disk, verified against its sha256."""
        return self._drive(flows.download_latest_result(self, pool, dest, progress=progress))

    # -- notifications -----------------------------------------------------------------------

    def async_twin(self) -> Any:
        """An AsyncPoolhubClient sharing this client's tokens (rotation is seen by both)."""
        from poolhub_client.aio import AsyncPoolhubClient

        return AsyncPoolhubClient(self.base_url, token_state=self.state, max_retries=self.max_retries)

    def listen(self, *, after: int | None = None, reconnect: bool = True) -> Iterator[dict[str, Any]]:
        """Notifications as a blocking iterator (see AsyncPoolhubClient.listen)."""
        import asyncio

        with asyncio.Runner() as runner:
            twin = self.async_twin()
            stream = twin.listen(after=after, reconnect=reconnect)
            try:
                while True:
                    try:
                        yield runner.run(stream.__anext__())
                    except StopAsyncIteration:
                        return
            finally:
                runner.run(stream.aclose())
                runner.run(twin.aclose())

