"""Create N client accounts in a pool and write their credentials to a file (mode 0600)."""

from __future__ import annotations

import os
from typing import Any, TextIO

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from accounts.models import Pool, Role
from accounts.services import members_csv_write, pool_members_provision
from poolhub.errors import ApiError


class Command(BaseCommand):
    help = "Provision client accounts for a pool; credentials go to a CSV file, never to the log."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--pool", required=True, help="pool name or id")
        parser.add_argument("--count", type=int, required=True)
        parser.add_argument("--role", choices=[r.value for r in Role], default=Role.CONTRIBUTOR.value)
        parser.add_argument("--prefix", default="client-")
        parser.add_argument("--out", required=True,
                            help="CSV file to write username,password,role,pool,url to (mode 0600)")
        parser.add_argument("--url", default="", help="the server's base URL for the file's url column (default blank)")
        parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    def handle(self, *args: Any, **options: Any) -> None:
        pool = Pool.objects.filter(name=options["pool"]).first()
        if pool is None:
            try:
                pool = Pool.objects.filter(id=options["pool"]).first()
            except Exception:  # not a UUID either
                pool = None
        if pool is None:
            raise CommandError(f"no pool named {options['pool']!r}")
        handle = self._open_private(options["out"], overwrite=options["overwrite"])
        # The file is open before any account exists, and the accounts are committed only once
        # their passwords are on disk: no account is ever created whose password nobody has.
        with handle, transaction.atomic():
            try:
                members = pool_members_provision(pool=pool, count=options["count"], prefix=options["prefix"],
                                                 role=options["role"])
            except ApiError as exc:
                raise CommandError(exc.message) from exc
            members_csv_write(handle, members=members, pool=pool, url=options["url"])
            handle.flush()
            os.fsync(handle.fileno())
        self.stdout.write(f"provisioned {len(members)} {options['role']} account(s) in {pool.name}; "
                          f"credentials in {options['out']}")

    @staticmethod
    def _open_private(path: str, *, overwrite: bool) -> TextIO:
        """Open `path` for writing, readable by its owner only, even if it existed before."""
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError as exc:
            raise CommandError(f"{path} exists; choose another --out or pass --overwrite") from exc
        except OSError as exc:
            raise CommandError(f"cannot write {path}: {exc.strerror}") from exc
        os.fchmod(fd, 0o600)  # O_CREAT's mode applies only to new files
        return os.fdopen(fd, "w", newline="")
