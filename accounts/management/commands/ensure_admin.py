"""Make sure an admin account exists (used by `make run`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from accounts.services import admin_ensure

logger = logging.getLogger(__name__)
PASSWORD_FILE = "admin-password"  # under POOLHUB_VAR_DIR, with LOG_FORMAT=json


class Command(BaseCommand):
    help = "Create the admin from POOLHUB_ADMIN_USERNAME/POOLHUB_ADMIN_PASSWORD, or with a generated password."

    def handle(self, *args: Any, **options: Any) -> None:
        username = os.environ.get("POOLHUB_ADMIN_USERNAME") or "admin"
        password = os.environ.get("POOLHUB_ADMIN_PASSWORD") or None
        _, generated = admin_ensure(username=username, password=password)
        if not generated:
            logger.info("admin account %r is ready", username)
        elif settings.LOG_FORMAT == "json":
            # Log lines are collected and kept: the password goes to a file of this account's only.
            path = _write_private(Path(settings.VAR_DIR) / PASSWORD_FILE, generated)
            logger.warning("admin account %r created; its generated password is in %s (mode 0600), "
                           "shown nowhere else", username, path)
        else:
            # Printed once, on the terminal of whoever started the stack; never logged.
            logger.info("admin account %r created", username)
            self.stdout.write(f"admin account created: username {username!r}, password {generated!r} (shown once)")


def _write_private(path: Path, secret: str) -> Path:
    """`secret` into `path`, readable by its owner only (replacing an older file of a former admin)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode applies only to new files
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    return path
