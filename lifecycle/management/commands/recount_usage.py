"""Recount what pools hold from their rows (the counter is kept in step by every change; this is
for after someone edited the database by hand)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.models import Pool
from lifecycle.services import pool_usage_recount


class Command(BaseCommand):
    help = "Recount each pool's stored bytes (uploads and results not purged) from the database rows."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--pool", action="append", default=[], help="pool name (repeatable); default: all")

    def handle(self, *args: Any, **options: Any) -> None:
        pools = Pool.objects.order_by("name")
        if options["pool"]:
            pools = pools.filter(name__in=options["pool"])
        for pool in pools:
            before, after = pool_usage_recount(pool_id=pool.id)
            note = "" if before == after else f" (was {before})"
            self.stdout.write(f"{pool.name}: {after} bytes{note}")
