"""`manage.py rebuild_projections [--check]`: rebuild upload status columns from the event log."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from uploads.projections import projections_rebuild


class Command(BaseCommand):
    help = "Rebuild upload projections (status, attempts, group, version) from the append-only event log."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--check", action="store_true",
                            help="only report differences; exit with status 1 if there are any")

    def handle(self, *args: Any, **options: Any) -> None:
        differences = projections_rebuild(fix=not options["check"])
        for difference in differences:
            self.stdout.write(str(difference))
        if options["check"] and differences:
            raise CommandError(f"{len(differences)} projection(s) differ from the event log")
        verb = "fixed" if differences else "found"
        self.stdout.write(self.style.SUCCESS(f"{verb} {len(differences)} difference(s)"))
