"""A Django upload handler that streams multipart files into staging.

Django's multipart parser hands each file to the handler in 64 KB pieces; the handler passes
them to a `StagingWriter`, which hashes them, checks size and type and pushes bounded chunks to
Redis. Nothing is buffered on disk or in memory beyond one staging chunk per file.

A file over the size limit, a full staging budget or Redis being down stop the request at once
(the error propagates out of `request.data`). A file refused for its type or empty is remembered
and the rest of the body is still read, so a batch can name every bad item. Whatever happens,
the view calls `discard_all()` for the files it did not hand over to an upload.
"""

from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO
from typing import Any

from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler

from poolhub.errors import ApiError, BadRequest
from uploads.checks import FileTooLarge
from uploads.staging import StagedFile, StagingWriter


class StagedUpload(UploadedFile):
    """What `request.FILES[field]` holds: the staged file's facts, or why it was refused."""

    def __init__(self, *, field: str, name: str, writer: StagingWriter, staged: StagedFile | None,
                 error: ApiError | None) -> None:
        super().__init__(file=BytesIO(), name=name, content_type="application/octet-stream",
                         size=writer.size)
        self.field = field
        self.writer = writer
        self.staged = staged
        self.error = error


class StagingUploadHandler(FileUploadHandler):
    chunk_size = 64 * 1024

    def __init__(self, *, max_bytes: int, allowed_types: Sequence[str], stage: bool = True,
                 request: Any = None) -> None:
        super().__init__(request)
        self.max_bytes = max_bytes
        self.allowed_types = list(allowed_types)
        self.stage = stage
        self.writers: list[StagingWriter] = []
        self.errors: dict[str, ApiError] = {}
        self.fields: set[str] = set()
        self.writer: StagingWriter | None = None

    def new_file(self, field_name: str, file_name: str, content_type: str, content_length: int | None,
                 charset: str | None = None, content_type_extra: dict[str, bytes] | None = None) -> None:
        super().new_file(field_name, file_name, content_type, content_length, charset, content_type_extra)
        if field_name in self.fields:
            raise BadRequest(f"the form has more than one file in field {field_name!r}",
                             details={"field": field_name})
        self.fields.add(field_name)
        self.writer = StagingWriter(max_bytes=self.max_bytes, allowed_types=self.allowed_types,
                                    filename=file_name or "", stage=self.stage)
        self.writers.append(self.writer)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        assert self.writer is not None
        if self.field_name in self.errors:
            return None  # refused already: read past the rest of this file
        try:
            self.writer.write(raw_data)
        except FileTooLarge as exc:
            exc.details = {**exc.details, "field": self.field_name}
            raise
        except ApiError as exc:
            if exc.status_code >= 500:
                raise
            self._refuse(exc)
        return None

    def _refuse(self, exc: ApiError) -> None:
        assert self.writer is not None
        self.errors[str(self.field_name)] = exc
        self.writer.discard()

    def file_complete(self, file_size: int) -> StagedUpload:
        assert self.writer is not None
        field = str(self.field_name)
        staged: StagedFile | None = None
        if field not in self.errors:
            try:
                staged = self.writer.finish()
            except ApiError as exc:
                if exc.status_code >= 500:
                    raise
                self._refuse(exc)
        return StagedUpload(field=field, name=self.file_name or "", writer=self.writer, staged=staged,
                            error=self.errors.get(field))

    def discard_all(self, *, keep: set[str] | None = None) -> None:
        """Drop every staged file except the keys in `keep` (those now belong to uploads)."""
        for writer in self.writers:
            if keep is None or writer.key not in keep:
                writer.discard()
