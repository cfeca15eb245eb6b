"""Make sure an admin account exists (used by `make run`)."""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand

from accounts.services import admin_ensure


class Command(BaseCommand):
    help = "Create the admin from POOLHUB_ADMIN_USERNAME/POOLHUB_ADMIN_PASSWORD, or with a generated password."

    def handle(self, *args: Any, **options: Any) -> None:
        username = os.environ.get("POOLHUB_ADMIN_USERNAME") or "admin"
        password = os.environ.get("POOLHUB_ADMIN_PASSWORD") or None
        _, generated = admin_ensure(username=username, password=password)
        if generated:
            # Printed once, on the terminal of whoever started the stack; never logged again.
            self.stdout.write(f"admin account created: username {username!r}, password {generated!r} (shown once)")
        else:
            self.stdout.write(f"admin account {username!r} is ready")
