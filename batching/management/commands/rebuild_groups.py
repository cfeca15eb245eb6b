from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from batching.models import Group
from batching.projections import group_rebuild


class Command(BaseCommand):
    help = "Rebuild group projections (status, version, closed_at) from the append-only event log."

    def handle(self, *args: Any, **options: Any) -> None:
        changed = sum(group_rebuild(group_id=group_id) for group_id in
                      Group.objects.values_list("id", flat=True).iterator())
        self.stdout.write(f"{changed} group(s) rebuilt")
