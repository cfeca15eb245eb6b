"""The synchronous client: `PoolhubClient(url).login(username, password)`, then call the contract."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import httpx

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
from poolhub_client.errors import RETRYABLE_STATUS, AuthError, PoolhubError, TransportError
from poolhub_client.types import Batch, Group, Lease, Member, Page, Pool, Result, Session, Upload, User

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def upload_filters(pool: str | None, user: str | None, status: str | None, group: str | None,
                   limit: int | None, offset: int | None) -> dict[str, Any]:
    params = {"pool": pool, "user": user, "status": status, "group": group, "limit": limit, "offset": offset}
    return {key: value for key, value in params.items() if value is not None}


class PoolhubClient(_core.ClientSettings):
    """Synchronous poolhub client. Tokens refresh by themselves; errors are typed `PoolhubError`s.

    Requests that are safe to repeat (GETs, and uploads, which always carry an Idempotency-Key)
    are retried on network errors; every request is retried on 429/503, honouring Retry-After,
    up to `max_retries` times.
    """

    def __init__(self, base_url: str, *, tokens: Tokens | None = None, token_state: TokenState | None = None,
                 on_tokens: Any = None, timeout: httpx.Timeout | float = DEFAULT_TIMEOUT, max_retries: int = 4,
                 max_retry_wait: float = 120.0, transport: httpx.BaseTransport | None = None,
                 verify: bool = True, refresh_early: bool = True) -> None:
        super().__init__(base_url, tokens=tokens, token_state=token_state, on_tokens=on_tokens,
                         max_retries=max_retries, max_retry_wait=max_retry_wait, refresh_early=refresh_early)
        self._http = httpx.Client(timeout=timeout, transport=transport, verify=verify)

    # -- plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PoolhubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait_or_raise(self, attempt: int, error: PoolhubError) -> None:
        time.sleep(self._retry_delay(attempt, error))

    def _send(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
              body: MultipartBody | None = None, headers: dict[str, str] | None = None, auth: bool = True,
              stream: bool = False, progress: ProgressCallback | None = None) -> httpx.Response:
        repeatable = method == "GET" or bool(headers and "Idempotency-Key" in headers)
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            if auth and self.refresh_early and self.state.needs_refresh():
                self.refresh(if_generation=self.state.generation)
            request_headers = self._headers(auth, headers)
            content = None
            if body is not None:
                request_headers["Content-Type"] = body.content_type
                request_headers["Content-Length"] = str(len(body))
                content = body.iter_chunks(progress)
            request = self._http.build_request(method, _core.api_url(self.base_url, path), json=json,
                                               params=params, content=content, headers=request_headers)
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                unreachable = TransportError(f"cannot reach {self.base_url}: {exc.__class__.__name__} {exc}")
                if not repeatable:
                    raise unreachable from exc
                self._wait_or_raise(attempt, unreachable)
                continue
            if response.status_code < 400:
                return response
            response.read()
            response.close()
            error = _core.response_error(response)
            if (response.status_code == 401 and auth and error.code in AUTH_RETRY_CODES and not refreshed
                    and self.state.tokens is not None and self.state.tokens.refresh):
                refreshed = True
                self.refresh(if_generation=self.state.generation)
                continue
            if response.status_code in RETRYABLE_STATUS:
                self._wait_or_raise(attempt, error)
                continue
            raise error

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return _core.json_or_none(self._send(method, path, **kwargs))

    # -- authentication ---------------------------------------------------------------------

    def _store_login(self, body: dict[str, Any]) -> User:
        self.state.set(Tokens(access=body["access"], refresh=body.get("refresh"), user=body.get("user")))
        return cast(User, body["user"])

    def signup(self, username: str, password: str) -> User:
        body = self._json("POST", "/auth/signup", json={"username": username, "password": password}, auth=False)
        return self._store_login(body)

    def login(self, username: str, password: str) -> User:
        body = self._json("POST", "/auth/login", json={"username": username, "password": password}, auth=False)
        return self._store_login(body)

    def refresh(self, *, if_generation: int | None = None) -> None:
        """Rotate the token pair (the old refresh token is spent; the new one is stored)."""
        with self.state.lock:
            if if_generation is not None and self.state.generation != if_generation:
                return  # another thread refreshed while this one waited
            tokens = self.state.tokens
            if tokens is None or not tokens.refresh:
                raise AuthError("not logged in", code="not_authenticated")
            generation = self.state.generation
            try:
                body = self._json("POST", "/auth/refresh", json={"refresh": tokens.refresh}, auth=False)
            except AuthError:
                if self.state.generation != generation:
                    return  # the async twin rotated the pair meanwhile: the spent token was its old one
                raise
            self.state.set(Tokens(access=body["access"], refresh=body.get("refresh") or tokens.refresh,
                                  user=tokens.user))

    def logout(self) -> None:
        tokens = self.state.tokens
        if tokens is None:
            return
        self._send("POST", "/auth/logout", json={"refresh": tokens.refresh or ""})
        self.state.set(None)

    def validate(self) -> Session:
        return cast(Session, self._json("GET", "/auth/validate"))

    # -- pools and members -------------------------------------------------------------------

    def create_pool(self, name: str, **fields: Any) -> Pool:
        return cast(Pool, self._json("POST", "/pools", json={"name": name, **fields}))

    def list_pools(self) -> list[Pool]:
        return cast(list[Pool], _results(self._json("GET", "/pools")))

    def get_pool(self, pool: str) -> Pool:
        return cast(Pool, self._json("GET", f"/pools/{pool}"))

    def update_pool(self, pool: str, **fields: Any) -> Pool:
        return cast(Pool, self._json("PATCH", f"/pools/{pool}", json=fields))

    def members(self, pool: str) -> list[Member]:
        return cast(list[Member], _results(self._json("GET", f"/pools/{pool}/members")))

    def add_member(self, pool: str, username: str, role: str) -> Member:
        return cast(Member, self._json("POST", f"/pools/{pool}/members", json={"username": username, "role": role}))

    def remove_member(self, pool: str, username: str) -> None:
        self._send("DELETE", f"/pools/{pool}/members/{username}")

    # -- uploads -----------------------------------------------------------------------------

    def upload(self, pool: str, file: FileInput, *, timestamp: datetime | str | None = None,
               filename: str | None = None, sha256: str | None = None, idempotency_key: str | None = None,
               progress: ProgressCallback | None = None) -> Upload:
        """Stream one file (path, bytes or file object); its sha256 is computed while it is read."""
        source = FileSource(file, filename)
        try:
            body = _core.single_upload_body(source, _core.iso(timestamp), sha256)
            headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
            return cast(Upload, self._json("POST", f"/pools/{pool}/uploads", body=body, headers=headers,
                                           progress=progress))
        finally:
            source.close()

    def upload_batch(self, pool: str, items: list[BatchItem], *, idempotency_key: str | None = None,
                     progress: ProgressCallback | None = None) -> Batch:
        """Several updates with their own timestamps, accepted whole or not at all."""
        body, sources = _core.batch_body(items)
        try:
            headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
            return cast(Batch, self._json("POST", f"/pools/{pool}/batches", body=body, headers=headers,
                                          progress=progress))
        finally:
            for source in sources:
                source.close()

    def uploads(self, *, pool: str | None = None, user: str | None = None, status: str | None = None,
                group: str | None = None, limit: int | None = None, offset: int | None = None) -> Page:
        """One page of the caller's uploads (admin: everyone's)."""
        body = self._json("GET", "/uploads", params=upload_filters(pool, user, status, group, limit, offset))
        return _page(body)

    def iter_uploads(self, *, pool: str | None = None, user: str | None = None, status: str | None = None,
                     group: str | None = None, page_size: int = 100) -> Iterator[Upload]:
        offset = 0
        while True:
            page = self.uploads(pool=pool, user=user, status=status, group=group, limit=page_size, offset=offset)
            yield from page["results"]
            offset += len(page["results"])
            if not page["next"] or not page["results"]:
                return

    def get_upload(self, upload_id: str) -> Upload:
        return cast(Upload, self._json("GET", f"/uploads/{upload_id}"))

    def download_upload(self, upload_id: str, dest: str | os.PathLike[str], *,
                        progress: ProgressCallback | None = None) -> Path:
        return self._download(f"/uploads/{upload_id}/content", dest, fallback=f"{upload_id}.bin", progress=progress)

    # -- groups, export, results -------------------------------------------------------------

    def groups(self, pool: str, *, status: str | None = None) -> list[Group]:
        params = {"status": status} if status else None
        return cast(list[Group], _results(self._json("GET", f"/pools/{pool}/groups", params=params)))

    def get_group(self, group_id: str) -> Group:
        return cast(Group, self._json("GET", f"/groups/{group_id}"))

    def close_group(self, group_id: str) -> Group:
        """The trigger event: close the group now."""
        return cast(Group, self._json("POST", f"/groups/{group_id}/close"))

    def claim_group(self, group_id: str) -> Lease:
        return cast(Lease, self._json("POST", f"/groups/{group_id}/claim"))

    def download_archive(self, group_id: str, lease_id: str, dest: str | os.PathLike[str], *,
                         progress: ProgressCallback | None = None) -> Path:
        return self._download(f"/groups/{group_id}/archive", dest, fallback=f"group-{group_id}.archive",
                              params={"lease": lease_id}, progress=progress)

    def post_result(self, group_id: str, lease_id: str, file: FileInput, *, filename: str | None = None,
                    progress: ProgressCallback | None = None) -> Result:
        source = FileSource(file, filename or "result.bin")
        try:
            body = _core.result_body(source, lease_id)
            return cast(Result, self._json("POST", f"/groups/{group_id}/result", body=body, progress=progress))
        finally:
            source.close()

    def latest_result(self, pool: str) -> Result:
        return cast(Result, self._json("GET", f"/pools/{pool}/results/latest"))

    def download_result(self, result_id: str, dest: str | os.PathLike[str], *, sha256: str | None = None,
                        progress: ProgressCallback | None = None) -> Path:
        return self._download(f"/results/{result_id}/content", dest, fallback=f"result-{result_id}.bin",
                              sha256=sha256, progress=progress)

    def download_latest_result(self, pool: str, dest: str | os.PathLike[str], *,
                               progress: ProgressCallback | None = None) -> tuple[Result, Path]:
        """Fetch the pool's latest result to disk, verified against its sha256."""
        result = self.latest_result(pool)
        path = self.download_result(result["id"], dest, sha256=result.get("sha256"), progress=progress)
        return result, path

    def _download(self, path: str, dest: str | os.PathLike[str], *, fallback: str,
                  params: dict[str, Any] | None = None, sha256: str | None = None,
                  progress: ProgressCallback | None = None) -> Path:
        attempt = 0
        while True:
            attempt += 1
            response = self._send("GET", path, params=params, stream=True)
            target = _core.download_target(dest, response, fallback)
            download = Download(target, sha256, _core.content_length(response), progress)
            try:
                for chunk in response.iter_bytes(_core.CHUNK):
                    download.write(chunk)
            except httpx.TransportError as exc:
                download.abort()
                self._wait_or_raise(attempt, TransportError(f"download of {target.name} broke off: {exc}"))
                continue
            except BaseException:
                download.abort()
                raise
            finally:
                response.close()
            return download.finish()

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


def _results(body: Any) -> list[Any]:
    """A plain list, or the `results` of a DRF page."""
    if isinstance(body, dict) and "results" in body:
        return list(body["results"])
    return list(body or [])


def _page(body: Any) -> Page:
    if isinstance(body, list):
        return {"count": len(body), "next": None, "previous": None, "results": body}
    return cast(Page, body)
