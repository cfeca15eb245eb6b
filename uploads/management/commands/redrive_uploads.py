"""`manage.py redrive_uploads`: send failed (or stuck) uploads back to storage."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from poolhub.errors import ApiError
from uploads.models import Upload, UploadStatus
from uploads.services import upload_redrive, uploads_stuck_redrive


class Command(BaseCommand):
    help = "Re-drive failed uploads (by id, or --failed for all) and/or uploads stuck in cached (--stuck)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("ids", nargs="*", help="ids of failed uploads")
        parser.add_argument("--failed", action="store_true", help="every failed upload")
        parser.add_argument("--stuck", action="store_true", help="re-send the store task for stuck cached uploads")
        parser.add_argument("--older-than", type=int, default=900,
                            help="with --stuck: cached for at least this many seconds (default 900)")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["ids"] and not options["failed"] and not options["stuck"]:
            raise CommandError("name upload ids, or use --failed or --stuck")
        ids = [str(i) for i in options["ids"]]
        if options["failed"]:
            ids += [str(i) for i in Upload.objects.filter(status=UploadStatus.FAILED).values_list("id", flat=True)]
        problems = 0
        for upload_id in ids:
            try:
                upload_redrive(upload_id=upload_id)
                self.stdout.write(f"re-driven: {upload_id}")
            except ApiError as exc:
                problems += 1
                self.stderr.write(f"not re-driven: {upload_id}: {exc.message}")
        if options["stuck"]:
            count = uploads_stuck_redrive(older_than=timedelta(seconds=options["older_than"]))
            self.stdout.write(f"store task re-sent for {count} stuck upload(s)")
        if problems:
            raise CommandError(f"{problems} upload(s) could not be re-driven")
