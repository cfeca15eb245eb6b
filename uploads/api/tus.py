"""tus 1.0.0 endpoints: `/api/v1/pools/{pool}/tus` (discovery, creation) and `/api/v1/tus/{id}`.

Core protocol plus the creation, creation-with-upload, termination, expiration and checksum
extensions (https://tus.io/protocols/resumable-upload). The rules live in uploads/tus.py; these
views read the protocol's headers, call one service, and answer in its headers. Every answer
carries `Tus-Resumable: 1.0.0`; errors carry the contract's JSON body. `X-HTTP-Method-Override`
on a POST is honoured (clients behind proxies that drop PATCH or DELETE), and cross-origin
requests from the origins in POOLHUB_TUS_CORS_ORIGINS get CORS headers (the page served by this
server itself is same-origin and needs none).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast
from uuid import UUID

from django.conf import settings
from django.http import HttpResponse, HttpResponseBase
from django.urls import reverse
from django.utils.http import http_date
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from accounts.models import User
from accounts.selectors import pool_access
from poolhub.errors import ApiError, BadRequest
from uploads import tus
from uploads.api.views import UploadRateThrottle
from uploads.checks import max_bytes_for

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,expiration,checksum"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
OVERRIDABLE = {"PATCH", "DELETE", "HEAD", "OPTIONS", "GET"}
CORS_REQUEST_HEADERS = ("Authorization, Content-Type, Tus-Resumable, Upload-Length, Upload-Metadata, "
                        "Upload-Offset, Upload-Checksum, Upload-Defer-Length, X-HTTP-Method-Override, "
                        "X-Requested-With")
CORS_EXPOSED_HEADERS = ("Location, Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, "
                        "Tus-Checksum-Algorithm, Upload-Offset, Upload-Length, Upload-Metadata, Upload-Expires, "
                        "Poolhub-Upload-Id, Retry-After")


class TusVersionUnsupported(ApiError):
    status_code = 412
    default_code = "unsupported_tus_version"
    default_detail = f"this server speaks tus {TUS_VERSION}: send Tus-Resumable: {TUS_VERSION}"


class NotOffsetStream(ApiError):
    status_code = 415
    default_code = "unsupported_media_type"
    default_detail = f"a tus request body is sent as Content-Type: {OFFSET_CONTENT_TYPE}"


def _content_type(request: Request) -> str:
    return str(request.content_type or "").split(";")[0].strip().lower()


def _user(request: Request) -> User:
    return cast(User, request.user)


def _preflight(request: Any) -> bool:
    return bool(request.method == "OPTIONS" and request.headers.get("Origin")
                and request.headers.get("Access-Control-Request-Method"))


def _int_header(request: Request, name: str) -> int | None:
    value = request.headers.get(name)
    if value is None:
        return None
    if not value.strip().isdigit():
        raise BadRequest(f"{name} must be a whole number >= 0", details={"field": name})
    return int(value)


def _upload_headers(response: HttpResponseBase, upload: tus.TusUpload) -> HttpResponseBase:
    response["Upload-Offset"] = str(upload.offset)
    if upload.expires_at:  # complete: when HEAD stops answering for it
        response["Upload-Expires"] = http_date(upload.expires_at)
    if upload.complete:
        response["Poolhub-Upload-Id"] = upload.upload_id
    return response


def _body_reader(request: Request) -> tus.Reader:
    raw = request._request
    return lambda size: raw.read(size)


def _header(name: str, description: str, required: bool = False) -> OpenApiParameter:
    return OpenApiParameter(name, str, OpenApiParameter.HEADER, required=required, description=description)


VERSION_HEADER = _header("Tus-Resumable", "1.0.0", required=True)
BODY = {OFFSET_CONTENT_TYPE: OpenApiTypes.BINARY}
ERRORS = {status: OpenApiResponse(description="the contract's error body") for status in
          (400, 401, 403, 404, 409, 412, 413, 415, 460, 503)}


class TusApi(APIView):
    """What both tus endpoints share: method override, version check, CORS, Tus-Resumable."""

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponseBase:
        override = request.headers.get("X-HTTP-Method-Override", "").strip().upper()
        if request.method == "POST" and override in OVERRIDABLE:
            request.method = override
        return super().dispatch(request, *args, **kwargs)

    def get_permissions(self) -> Sequence[Any]:
        if _preflight(self.request):
            return [AllowAny()]  # a browser's preflight carries no credentials
        return super().get_permissions()

    def get_authenticators(self) -> list[Any]:
        request = getattr(self, "request", None)
        return [] if request is not None and _preflight(request) else super().get_authenticators()

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if request.method != "OPTIONS" and request.headers.get("Tus-Resumable") != TUS_VERSION:
            raise TusVersionUnsupported()

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        # (the tus views answer with plain HttpResponses: no body to render)
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Tus-Resumable"] = TUS_VERSION
        if response.status_code == 412:
            response["Tus-Version"] = TUS_VERSION
        if response.status_code == 460:
            response.reason_phrase = "Checksum Mismatch"
        response["Cache-Control"] = "no-store"
        origin = request.headers.get("Origin")
        if origin and origin in settings.POOLHUB_TUS_CORS_ORIGINS:
            response["Access-Control-Allow-Origin"] = origin
            response["Access-Control-Expose-Headers"] = CORS_EXPOSED_HEADERS
            response["Vary"] = "Origin"
            if _preflight(request):
                response["Access-Control-Allow-Methods"] = "POST, HEAD, PATCH, DELETE, OPTIONS"
                response["Access-Control-Allow-Headers"] = CORS_REQUEST_HEADERS
                response["Access-Control-Max-Age"] = "86400"
        return response

    def _discovery(self, max_size: int) -> HttpResponse:
        response = HttpResponse(status=204)
        response["Tus-Version"] = TUS_VERSION
        response["Tus-Extension"] = EXTENSIONS
        response["Tus-Max-Size"] = str(max_size)
        response["Tus-Checksum-Algorithm"] = ",".join(sorted(tus.CHECKSUMS))
        return response


class TusCreateApi(TusApi):
    """`OPTIONS` (discovery, with the pool's Tus-Max-Size) and `POST` (creation, with a body:
    creation-with-upload) on `/api/v1/pools/{pool}/tus`."""

    def get_throttles(self) -> list[BaseThrottle]:
        if self.request.method == "POST":
            return [UploadRateThrottle()]
        return []

    throttle_scope = "uploads"

    def options(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponse:  # type: ignore[override]
        if _preflight(request):
            return self._discovery(int(settings.POOLHUB_MAX_FILE_BYTES))
        pool = pool_access(user=_user(request), pool_id=kwargs["pool_id"])
        return self._discovery(max_bytes_for(pool=pool))

    @extend_schema(
        request=BODY, parameters=[VERSION_HEADER, _header("Upload-Length", "the file's size", required=True),
                                  _header("Upload-Metadata", "filename, timestamp (required), sha256 (base64 values)",
                                          required=True),
                                  _header("Upload-Checksum", "sha1|sha256 <base64> of a creation-with-upload body")],
        responses={201: OpenApiResponse(description="created: Location, Upload-Expires (Upload-Offset, "
                                                    "Poolhub-Upload-Id with a body)"), **ERRORS})
    def post(self, request: Request, pool_id: UUID) -> HttpResponse:
        if request.headers.get("Upload-Defer-Length"):
            raise BadRequest("Upload-Defer-Length is not supported: send Upload-Length",
                             details={"field": "Upload-Defer-Length"})
        length = _int_header(request, "Upload-Length")
        if length is None:
            raise BadRequest("Upload-Length is required", details={"field": "Upload-Length"})
        content_length = _int_header(request, "Content-Length") or 0
        if content_length and _content_type(request) != OFFSET_CONTENT_TYPE:
            raise NotOffsetStream()
        checksum = tus.checksum_parse(request.headers.get("Upload-Checksum"))
        user = _user(request)
        upload = tus.tus_create(user=user, pool_id=pool_id, length=length,
                                metadata_header=request.headers.get("Upload-Metadata"))
        if content_length:  # creation-with-upload
            try:
                upload = tus.tus_write(user=user, tus_id=upload.id, offset=0, read=_body_reader(request),
                                       content_length=content_length, checksum=checksum)
            except ApiError as exc:
                if exc.status_code < 500:  # refused: the client never learns this upload's URL
                    tus.tus_drop(tus_id=upload.id)
                    raise
                upload = tus.tus_get(user=user, tus_id=upload.id)  # kept: the client resumes it
        response = HttpResponse(status=201)
        response["Location"] = request.build_absolute_uri(reverse("tus-upload", args=[upload.id]))
        return cast(HttpResponse, _upload_headers(response, upload))


class TusUploadApi(TusApi):
    """`HEAD`, `PATCH`, `DELETE` and `OPTIONS` on `/api/v1/tus/{id}`."""

    def options(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponse:  # type: ignore[override]
        if _preflight(request):
            return self._discovery(int(settings.POOLHUB_MAX_FILE_BYTES))
        upload = tus.tus_get(user=_user(request), tus_id=kwargs["tus_id"])
        pool = pool_access(user=_user(request), pool_id=upload.pool_id)
        return self._discovery(max_bytes_for(pool=pool))

    @extend_schema(parameters=[VERSION_HEADER],
                   responses={200: OpenApiResponse(description="Upload-Offset, Upload-Length, Upload-Expires"),
                              **ERRORS})
    def head(self, request: Request, tus_id: str) -> HttpResponseBase:
        upload = tus.tus_get(user=_user(request), tus_id=tus_id)
        response = HttpResponse(status=200)
        response["Upload-Length"] = str(upload.length)
        if upload.metadata:
            response["Upload-Metadata"] = upload.metadata
        return _upload_headers(response, upload)

    @extend_schema(
        request=BODY, parameters=[VERSION_HEADER, _header("Upload-Offset", "where these bytes go", required=True),
                                  _header("Upload-Checksum", "sha1|sha256 <base64> of this request's bytes")],
        responses={204: OpenApiResponse(description="Upload-Offset (and Poolhub-Upload-Id when complete)"),
                   **ERRORS})
    def patch(self, request: Request, tus_id: str) -> HttpResponseBase:
        if _content_type(request) != OFFSET_CONTENT_TYPE:
            raise NotOffsetStream()
        offset = _int_header(request, "Upload-Offset")
        if offset is None:
            raise BadRequest("Upload-Offset is required", details={"field": "Upload-Offset"})
        upload = tus.tus_write(user=_user(request), tus_id=tus_id, offset=offset, read=_body_reader(request),
                               content_length=_int_header(request, "Content-Length"),
                               checksum=tus.checksum_parse(request.headers.get("Upload-Checksum")))
        return _upload_headers(HttpResponse(status=204), upload)

    @extend_schema(parameters=[VERSION_HEADER], responses={204: None, **ERRORS})
    def delete(self, request: Request, tus_id: str) -> HttpResponse:
        tus.tus_terminate(user=_user(request), tus_id=tus_id)
        return HttpResponse(status=204)
