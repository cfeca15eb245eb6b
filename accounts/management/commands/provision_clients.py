"""Create N client accounts in a pool and write their credentials to a file (mode 0600)."""

from __future__ import annotations

import csv
import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Pool, Role
from accounts.services import clients_provision


class Command(BaseCommand):
    help = "Provision client accounts for a pool; credentials go to a CSV file, never to the log."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--pool", required=True, help="pool name or id")
        parser.add_argument("--count", type=int, required=True)
        parser.add_argument("--role", choices=[r.value for r in Role], default=Role.CONTRIBUTOR.value)
        parser.add_argument("--prefix", default="client-")
        parser.add_argument("--out", required=True, help="CSV file to write username,password to")

    def handle(self, *args: Any, **options: Any) -> None:
        pool = Pool.objects.filter(name=options["pool"]).first()
        if pool is None:
            try:
                pool = Pool.objects.filter(id=options["pool"]).first()
            except Exception:  # not a UUID either
                pool = None
        if pool is None:
            raise CommandError(f"no pool named {options['pool']!r}")
        if options["count"] < 1:
            raise CommandError("--count must be at least 1")
        credentials = clients_provision(pool=pool, count=options["count"], prefix=options["prefix"],
                                        role=options["role"])
        fd = os.open(options["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["username", "password", "pool", "role"])
            for username, password in credentials:
                writer.writerow([username, password, str(pool.id), options["role"]])
        self.stdout.write(f"provisioned {len(credentials)} {options['role']} account(s) in {pool.name}; "
                          f"credentials in {options['out']}")
