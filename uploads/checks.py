"""Upload checks shared by every way bytes come in (REST multipart, websocket chunks).

Each check raises an `ApiError` carrying the contract's status and code, so a caller only has to
clean up (discard the staged bytes) and let the error propagate.

Content types are decided from the bytes, never from the file name or the client's header:
`filetype` recognises binary formats by their magic numbers, and `content_type_detect` adds what
it does not know: Mach-O executables and text that a browser or a shell would run (shebang
scripts, PHP, HTML, JavaScript, Python, batch files). Script markers are looked for whatever
signature comes first (`GIF89a<?php ...` is PHP, not an image: a polyglot is refused by the same
rules as the script it carries), and for files with no binary signature the name decides too:
a `.vbs`, `.ps1`, `.bat` or `.js` file is a script even where its text cannot tell.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import filetype
from django.conf import settings
from django.utils import timezone

from accounts.models import Pool
from poolhub.errors import ApiError, BadRequest, Unavailable

# How many leading bytes type detection looks at; writers keep this much of each file.
HEAD_BYTES = 8192

EXECUTABLE_TYPES = frozenset({
    "application/x-msdownload",  # PE: .exe, .dll
    "application/x-executable",  # ELF
    "application/x-mach-binary",  # Mach-O
    "application/x-sharedlib",
    "application/wasm",
})
SCRIPT_TYPES = frozenset({
    "text/x-shellscript",  # anything with a shebang
    "application/x-php",
    "text/html",
    "image/svg+xml",  # can carry scripts that run when the file is opened in a browser
    "application/javascript",
    "text/x-python",
    "application/x-bat",
    "application/x-vbscript",
    "application/x-powershell",
    "application/x-wsh",  # Windows Script Host: JScript or VBScript driving WScript.Shell
})
REFUSED_BY_DEFAULT = EXECUTABLE_TYPES | SCRIPT_TYPES

_MACHO_MAGIC = (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe")
_FAT_MACHO = b"\xca\xfe\xba\xbe"  # also Java class files; refused either way
_HTML_MARKERS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<script", b"<iframe", b"<object", b"<embed",
                 b"<meta", b"<frameset", b"<link", b"<style", b"<img", b"<a ", b"<div", b"<form", b"<title")
_JS_START = re.compile(
    rb"^(?:'use strict'|\"use strict\"|function[\s*(]|(?:var|let|const)\s+[\w$\[{]|import\s*[\w{*'\"(]|"
    rb"export\s+|require\s*\(|module\.exports|exports\.|\(\s*function|\(\s*\(\)\s*=>|!function|"
    rb"(?:window|document|self|globalThis)\.|async\s+function|class\s+\w+\s*(?:extends\s+[\w.]+\s*)?\{)"
)
_PY_START = re.compile(rb"^(?:from\s+[\w.]+\s+import\s|import\s+[\w.]+\s*(?:$|\n|,|as\s)|def\s+\w+\s*\(|"
                       rb"class\s+\w+\s*[(:]|if\s+__name__\s*==)")
_COMMENT_LINES = re.compile(rb"^(?:#[^\n]*\n\s*)+")
_BAT_START = re.compile(rb"^(?:@?echo\s+off|::|rem\s)", re.IGNORECASE)
# Markers that make a file a script wherever they appear in its head, after any signature.
_EMBEDDED_SCRIPTS = (
    (b"<?php", "application/x-php"),
    (b"<script", "text/html"),
    (b"wscript.", "application/x-wsh"),
    (b"activexobject", "application/x-wsh"),
    (b"createobject(", "application/x-wsh"),
    (b"invoke-expression", "application/x-powershell"),
    (b"downloadstring(", "application/x-powershell"),
    (b"-encodedcommand", "application/x-powershell"),
)
# Script types by name, for text the content alone cannot tell from prose.
_SCRIPT_EXTENSIONS = {
    **dict.fromkeys(["js", "mjs", "cjs", "jse"], "application/javascript"),
    **dict.fromkeys(["vbs", "vbe", "vb"], "application/x-vbscript"),
    **dict.fromkeys(["wsf", "wsh", "wsc", "sct"], "application/x-wsh"),
    **dict.fromkeys(["ps1", "psm1", "psd1", "ps1xml"], "application/x-powershell"),
    **dict.fromkeys(["bat", "cmd"], "application/x-bat"),
    **dict.fromkeys(["py", "pyw"], "text/x-python"),
    **dict.fromkeys(["sh", "bash", "zsh", "ksh", "csh", "command"], "text/x-shellscript"),
    **dict.fromkeys(["php", "phtml", "php3", "php4", "php5", "phar"], "application/x-php"),
    **dict.fromkeys(["html", "htm", "xhtml", "hta", "shtml"], "text/html"),
    "svg": "image/svg+xml",
}


class FileTooLarge(ApiError):
    status_code = 413
    default_code = "file_too_large"
    default_detail = "the file is larger than this pool accepts"


class ForbiddenType(ApiError):
    status_code = 415
    default_code = "forbidden_type"
    default_detail = "this type of file is refused"


class EmptyFile(BadRequest):
    default_code = "empty_file"
    default_detail = "the file has no bytes"


class ChecksumMismatch(BadRequest):
    default_code = "checksum_mismatch"
    default_detail = "the file's sha256 is not the one declared"


class InvalidTimestamp(BadRequest):
    default_code = "invalid_timestamp"
    default_detail = "timestamp must be an ISO-8601 time with an offset, not in the future"


class StagingFull(Unavailable):
    default_code = "staging_full"
    default_detail = "the server is busy storing earlier uploads; try again shortly"


def max_bytes_for(*, pool: Pool) -> int:
    """The size limit for one file: the pool's, capped by the server's."""
    return min(int(pool.max_file_bytes), int(settings.POOLHUB_MAX_FILE_BYTES))


def max_result_bytes_for(*, pool: Pool) -> int:
    """The size limit for a result: the pool's, capped by the server's."""
    return min(int(pool.max_result_bytes), int(settings.POOLHUB_MAX_RESULT_BYTES))


def size_check(*, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise FileTooLarge(f"the file is larger than {max_bytes} bytes", details={"max_bytes": max_bytes})


def _text_head(head: bytes) -> bytes | None:
    """The head, lower-cased and stripped of a BOM and leading blanks, if it looks like text."""
    if b"\x00" in head:
        return None
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # a multi-byte character cut at the end of the head is fine
            return None
    return head.removeprefix(b"\xef\xbb\xbf").lstrip().lower()


def _script_type(text: bytes) -> str | None:
    if text.startswith(b"#!"):
        return "text/x-shellscript"
    if b"<?php" in text or text.startswith(b"<?="):
        return "application/x-php"
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "image/svg+xml"
    if any(marker in text for marker in _HTML_MARKERS) and text.startswith(b"<"):
        return "text/html"
    if _JS_START.match(text):
        return "application/javascript"
    if _PY_START.match(_COMMENT_LINES.sub(b"", text)):
        return "text/x-python"
    if _BAT_START.match(text):
        return "application/x-bat"
    return None


def _embedded_script(head: bytes) -> str | None:
    lowered = head.lower()
    return next((kind for marker, kind in _EMBEDDED_SCRIPTS if marker in lowered), None)


def _script_by_name(filename: str | None) -> str | None:
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip().rstrip(".").lower()
    return _SCRIPT_EXTENSIONS.get(name.rsplit(".", 1)[-1]) if "." in name else None


def content_type_detect(head: bytes, *, filename: str | None = None) -> str:
    """The content type of a file, from its first bytes (up to HEAD_BYTES) and, for files with no
    binary signature, its name when that names a script."""
    head = head[:HEAD_BYTES]
    if head[:4] in _MACHO_MAGIC or head[:4] == _FAT_MACHO:
        return "application/x-mach-binary"
    kind = filetype.guess(head) if head else None
    if kind is not None and kind.mime in EXECUTABLE_TYPES:
        return str(kind.mime)
    embedded = _embedded_script(head)
    if embedded is not None:
        return embedded
    if kind is not None:
        return str(kind.mime)
    text = _text_head(head)
    script = _script_type(text) if text is not None else None
    if script is None:
        script = _script_by_name(filename)
    if script is not None:
        return script
    if text is None:
        return "application/octet-stream"
    if text[:1] in (b"{", b"["):
        return "application/json"
    if text.startswith(b"<?xml") or text.startswith(b"<"):
        return "application/xml"
    return "text/plain"


def content_type_allowed(*, content_type: str, allowed_types: Sequence[str]) -> bool:
    """A pool's `allowed_types` (patterns such as `image/*`) decide when set; else no executables or scripts."""
    if allowed_types:
        return any(fnmatch.fnmatchcase(content_type, pattern.strip().lower()) for pattern in allowed_types)
    return content_type not in REFUSED_BY_DEFAULT


def content_type_check(*, content_type: str, allowed_types: Sequence[str]) -> None:
    if not content_type_allowed(content_type=content_type, allowed_types=allowed_types):
        raise ForbiddenType(f"files of type {content_type} are refused in this pool",
                            details={"content_type": content_type, "allowed_types": list(allowed_types)})


# Windows are counted from the epoch: nothing before it is a time a client produced a file at.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp_parse(value: object, *, now: datetime | None = None) -> datetime:
    """A client's `timestamp`: ISO-8601 with an offset, not further ahead than the allowed clock skew."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidTimestamp("timestamp is required", details={"field": "timestamp"})
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise InvalidTimestamp("timestamp is not an ISO-8601 time", details={"field": "timestamp"}) from exc
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidTimestamp("timestamp must carry a UTC offset, such as Z or +02:00",
                               details={"field": "timestamp"})
    try:
        parsed = parsed.astimezone(UTC)  # 0001-01-01T00:00:00+01:00 has no UTC time: OverflowError
    except OverflowError as exc:
        raise InvalidTimestamp("timestamp is out of range", details={"field": "timestamp"}) from exc
    if parsed < _EARLIEST:
        raise InvalidTimestamp("timestamp is before 1970", details={"field": "timestamp"})
    skew = timedelta(seconds=int(settings.POOLHUB_TIMESTAMP_MAX_FUTURE_SECONDS))
    if parsed > (now or timezone.now()) + skew:
        raise InvalidTimestamp("timestamp is in the future", details={"field": "timestamp"})
    return parsed


def timestamp_age_check(*, timestamp: datetime, pool: Pool, now: datetime | None = None) -> None:
    """Older than the pool's `max_timestamp_age_seconds`: 400, rather than an ancient window."""
    oldest = (now or timezone.now()) - timedelta(seconds=int(pool.max_timestamp_age_seconds))
    if timestamp < oldest:
        raise InvalidTimestamp("timestamp is older than this pool accepts",
                               details={"field": "timestamp", "oldest": oldest.isoformat(),
                                        "max_age_seconds": int(pool.max_timestamp_age_seconds)})


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def sha256_parse(value: object) -> str | None:
    """A declared sha256 (hex, any case), or None when the client did not declare one."""
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    if not _SHA256.match(text):
        raise BadRequest("sha256 must be 64 hexadecimal characters", code="invalid", details={"field": "sha256"})
    return text


def checksum_check(*, declared: str | None, actual: str) -> None:
    if declared is not None and declared != actual:
        raise ChecksumMismatch(details={"declared": declared, "actual": actual})
