"""Where the command line keeps its state: tokens (0600), the outbox, the last notification seq."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from poolhub_client._core import Tokens

DEFAULT_URL = "http://127.0.0.1:8000"


def config_dir() -> Path:
    configured = os.environ.get("POOLHUB_CONFIG_DIR")
    base = Path(configured) if configured else Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    path = base if configured else base / "poolhub"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically (never a moment with wider permissions)."""
    partial = path.with_name(path.name + ".tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(partial, 0o600)
    os.replace(partial, path)


class CredentialStore:
    """`credentials.json`: the server URL, the username and the token pair, mode 0600."""

    def __init__(self, directory: Path | None = None) -> None:
        self.path = (directory or config_dir()) / "credentials.json"

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def tokens(self) -> Tokens | None:
        data = self.load()
        if not data.get("access"):
            return None
        return Tokens(access=data["access"], refresh=data.get("refresh"), user=data.get("user"))

    def save(self, *, url: str, tokens: Tokens | None) -> None:
        data = self.load()
        data["url"] = url
        if tokens is None:
            for key in ("access", "refresh", "user"):
                data.pop(key, None)
        else:
            data.update(access=tokens.access, refresh=tokens.refresh, user=tokens.user)
        _write_private(self.path, json.dumps(data, indent=1))

    def url(self) -> str | None:
        value = self.load().get("url")
        return str(value) if value else None


def read_seq(directory: Path | None = None) -> int | None:
    try:
        return int(((directory or config_dir()) / "last-seq").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def write_seq(seq: int, directory: Path | None = None) -> None:
    _write_private((directory or config_dir()) / "last-seq", str(seq))
