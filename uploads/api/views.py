"""Upload endpoints: check access before reading a byte, stream the body into staging, accept, answer.

Order of checks on a POST: authentication, then the pool role (404 for non-members, 403 for a
role that may not upload) before the body is read; then, while the body streams, size (413),
type (415) and emptiness; then the form: timestamp, declared sha256, the batch manifest. Any
refusal drops every byte staged for the request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

import redis
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent, TooManyFilesSent
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponseBase
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from accounts.models import WRITER_ROLES, Pool, User
from accounts.selectors import pool_access
from poolhub.downloads import ranged_download
from poolhub.errors import ApiError, BadRequest, Unavailable
from poolhub.filestore import FileStoreError
from poolhub.pagination import Pagination
from poolhub.throttling import process_cache
from uploads import selectors
from uploads.api.handlers import StagedUpload, StagingUploadHandler
from uploads.api.serializers import UploadDetailOutput, UploadListFilters, UploadOutput
from uploads.checks import REFUSED_BY_DEFAULT, checksum_check, max_bytes_for, sha256_parse, timestamp_parse
from uploads.idempotency import Outcome, fingerprint_of, idempotency_key_parse, idempotent
from uploads.services import BatchItem, batch_refused, upload_accept, upload_batch_accept
from uploads.staging import StagingMissing


class UploadRateThrottle(ScopedRateThrottle):
    """DRF's scoped throttle on the process-wide throttle cache (poolhub/throttling.py)."""

    cache = process_cache


def _user(request: Request) -> User:
    return cast(User, request.user)


@dataclass
class Form:
    fields: dict[str, list[str]]
    files: dict[str, StagedUpload]
    handler: StagingUploadHandler

    def field(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None


def _read_form(request: Request, *, pool: Pool, stage: bool) -> Form:
    """Stream the multipart body through the staging handler; on any error nothing stays staged."""
    handler = StagingUploadHandler(max_bytes=max_bytes_for(pool=pool),
                                   allowed_types=pool.allowed_types if stage else ["*"], stage=stage)
    request._request.upload_handlers = [handler]
    try:
        post, files = request.POST, request.FILES
    except (TooManyFilesSent, TooManyFieldsSent, RequestDataTooBig) as exc:
        handler.discard_all()
        raise BadRequest(str(exc) or "the form has too many parts") from exc
    except SuspiciousOperation as exc:
        handler.discard_all()
        raise BadRequest("the multipart body is malformed") from exc
    except BaseException:
        handler.discard_all()
        raise
    return Form(fields={key: post.getlist(key) for key in post},
                files={key: cast(StagedUpload, files[key]) for key in files}, handler=handler)


def _fingerprint(form: Form, *, endpoint: str, pool: Pool) -> str:
    facts = {name: (f.name or "", f.writer.size, f.writer.sha256) for name, f in form.files.items()}
    return fingerprint_of(endpoint=endpoint, pool_id=pool.id, fields=form.fields, files=facts)


Accept = Callable[[Form, Pool, User], tuple[Any, set[str]]]


def _upload_response(request: Request, *, pool: Pool, endpoint: str, accept: Accept) -> Response:
    """Run one upload request, once per Idempotency-Key when the client sends one."""
    user = _user(request)

    def run() -> Outcome:
        form = _read_form(request, pool=pool, stage=True)
        kept: set[str] = set()
        try:
            body, kept = accept(form, pool, user)
        finally:
            form.handler.discard_all(keep=kept)
        body = json.loads(json.dumps(body, cls=DjangoJSONEncoder))
        return Outcome(_fingerprint(form, endpoint=endpoint, pool=pool), 202, body)

    def fingerprint() -> str:
        return _fingerprint(_read_form(request, pool=pool, stage=False), endpoint=endpoint, pool=pool)

    key = idempotency_key_parse(request.headers.get("Idempotency-Key"))
    try:
        if key is None:
            outcome, replayed = run(), False
        else:
            outcome, replayed = idempotent(user_id=user.id, key=key, run=run, fingerprint=fingerprint)
    except redis.RedisError as exc:
        raise Unavailable("staging is unavailable; try again shortly") from exc
    response = Response(outcome.body, status=outcome.status)
    if replayed:
        response["Idempotent-Replayed"] = "true"
    return response


def _staged_item(upload: StagedUpload | None, *, field: str) -> StagedUpload:
    if upload is None:
        raise BadRequest(f"the form has no file in field {field!r}", details={"field": field})
    if upload.error is not None:
        raise upload.error
    return upload


def _accept_single(form: Form, pool: Pool, user: User) -> tuple[Any, set[str]]:
    item = _staged_item(form.files.get("file"), field="file")
    timestamp = timestamp_parse(form.field("timestamp"))
    assert item.staged is not None
    checksum_check(declared=sha256_parse(form.field("sha256")), actual=item.staged.sha256)
    upload = upload_accept(pool=pool, uploader=user, staged=item.staged, timestamp=timestamp,
                           filename=item.name or "upload.bin")
    return UploadOutput(upload).data, {item.staged.key}


@dataclass(frozen=True)
class ManifestItem:
    file: str
    timestamp: Any
    sha256: Any


def _invalid_manifest(message: str) -> BadRequest:
    return BadRequest(message, code="invalid_manifest", details={"field": "manifest"})


def manifest_parse(raw: str | None, *, max_items: int = 500) -> list[ManifestItem]:
    """`{"items": [{"file": "<form field>", "timestamp": "...", "sha256": "..."}]}`, one item per file."""
    if not raw:
        raise _invalid_manifest("the batch has no manifest field")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # deep nesting too: 400, never 500
        raise _invalid_manifest("the manifest is not JSON") from exc
    entries = document.get("items") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise _invalid_manifest('the manifest must be {"items": [...]} with at least one item')
    if len(entries) > max_items:
        raise _invalid_manifest(f"a batch holds at most {max_items} items")
    items: list[ManifestItem] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or not entry["file"]:
            raise _invalid_manifest(f"item {index} must be an object naming its form field in 'file'")
        items.append(ManifestItem(file=entry["file"], timestamp=entry.get("timestamp"), sha256=entry.get("sha256")))
    names = [item.file for item in items]
    if len(set(names)) != len(names):
        raise _invalid_manifest("two manifest items name the same file field")
    return items


def _accept_batch(form: Form, pool: Pool, user: User) -> tuple[Any, set[str]]:
    manifest = manifest_parse(form.field("manifest"), max_items=int(settings.DATA_UPLOAD_MAX_NUMBER_FILES))
    unlisted = sorted(set(form.files) - {item.file for item in manifest})
    if unlisted:
        raise _invalid_manifest(f"file field(s) not in the manifest: {', '.join(unlisted)}")
    items: list[BatchItem] = []
    refused: list[tuple[int, str, ApiError]] = []
    for index, entry in enumerate(manifest):
        try:
            staged_upload = _staged_item(form.files.get(entry.file), field=entry.file)
            assert staged_upload.staged is not None
            timestamp = timestamp_parse(entry.timestamp)
            checksum_check(declared=sha256_parse(entry.sha256), actual=staged_upload.staged.sha256)
            items.append(BatchItem(staged=staged_upload.staged, timestamp=timestamp,
                                   filename=staged_upload.name or entry.file, field=entry.file))
        except ApiError as exc:
            refused.append((index, entry.file, exc))
    if refused:
        raise batch_refused(refused=refused)
    batch_id, uploads = upload_batch_accept(pool=pool, uploader=user, items=items)
    body = {"id": str(batch_id), "uploads": [UploadOutput(upload).data for upload in uploads]}
    return body, {item.staged.key for item in items}


class PoolUploadCreateApi(APIView):
    throttle_classes = [UploadRateThrottle]
    throttle_scope = "uploads"

    def post(self, request: Request, pool_id: UUID) -> Response:
        pool = pool_access(user=_user(request), pool_id=pool_id, roles=WRITER_ROLES)
        return _upload_response(request, pool=pool, endpoint="upload", accept=_accept_single)


class PoolBatchCreateApi(APIView):
    throttle_classes = [UploadRateThrottle]
    throttle_scope = "uploads"

    def post(self, request: Request, pool_id: UUID) -> Response:
        pool = pool_access(user=_user(request), pool_id=pool_id, roles=WRITER_ROLES)
        return _upload_response(request, pool=pool, endpoint="batch", accept=_accept_batch)


class UploadListApi(APIView):
    def get(self, request: Request) -> Response:
        filters = UploadListFilters(data=request.query_params)
        filters.is_valid(raise_exception=True)
        uploads = selectors.upload_list(user=_user(request), filters=dict(filters.validated_data))
        paginator = Pagination()  # limit and offset bounded: never a 64-bit overflow in the database
        page = paginator.paginate_queryset(uploads, request, view=self)
        return paginator.get_paginated_response([UploadOutput(upload).data for upload in page or []])


class UploadDetailApi(APIView):
    def get(self, request: Request, upload_id: UUID) -> Response:
        upload = selectors.upload_get(user=_user(request), upload_id=upload_id)
        events = selectors.upload_events(upload=upload)
        return Response(UploadDetailOutput(upload, context={"events": events}).data)


STORE_ERRORS = (FileStoreError, redis.RedisError, StagingMissing)


class UploadContentApi(APIView):
    def get(self, request: Request, upload_id: UUID) -> HttpResponseBase:
        upload = selectors.upload_get(user=_user(request), upload_id=upload_id)

        def read(start: int, stop: int) -> Iterator[bytes]:
            try:
                return selectors.upload_content(upload=upload, start=start, end=stop)
            except STORE_ERRORS as exc:
                raise Unavailable("the file store is unavailable; try again later") from exc

        content_type = upload.content_type
        if content_type in REFUSED_BY_DEFAULT or not content_type:
            content_type = "application/octet-stream"
        # The upload's sha256 is its bytes' strong validator, staged or stored.
        return ranged_download(request=request, length=upload.size, etag=upload.sha256, read=read,
                               filename=upload.filename, content_type=content_type,
                               headers={"X-Upload-Sha256": upload.sha256})
