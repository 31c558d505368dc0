"""``manage.py purge_expired [--dry-run] [--batch-size N]``: the retention purge, by hand."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from history.services import DEFAULT_BATCH_SIZE, PurgeAlreadyRunning, purge_expired

PROGRESS_EVERY_S = 2.0


class Command(BaseCommand):
    help = (
        "Delete sessions (with their messages and connections), assignment log and access log "
        "rows older than RETENTION_DAYS, in bounded batches, and write a purge record."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would go; delete nothing."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH_SIZE,
            help=f"Rows per DELETE statement (default {DEFAULT_BATCH_SIZE}).",
        )
        parser.add_argument(
            "--retention-days",
            type=int,
            default=None,
            help=f"Override RETENTION_DAYS (now {settings.RETENTION_DAYS}).",
        )
        parser.add_argument(
            "--pause",
            type=float,
            default=0.0,
            help="Seconds to sleep between batches, to go easier on a busy database.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size: int = options["batch_size"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        retention_days: int | None = options["retention_days"]
        if retention_days is not None and retention_days < 1:
            raise CommandError("--retention-days must be at least 1.")
        dry_run: bool = options["dry_run"]
        last_print = 0.0
        verbose = options["verbosity"] >= 2

        def progress(label: str, total: int) -> None:
            nonlocal last_print
            now = time.monotonic()
            if verbose or now - last_print >= PROGRESS_EVERY_S:
                last_print = now
                self.stdout.write(f"  {label}: {total} deleted so far")
                self.stdout.flush()

        self.stdout.write(
            ("Counting" if dry_run else "Purging")
            + f" everything older than {retention_days or settings.RETENTION_DAYS} days"
            + f" (batches of {batch_size})..."
        )
        try:
            record = purge_expired(
                batch_size=batch_size,
                dry_run=dry_run,
                retention_days=retention_days,
                pause_s=options["pause"],
                progress=progress,
            )
        except PurgeAlreadyRunning as exc:
            raise CommandError(str(exc)) from None
        verb = "would delete" if dry_run else "deleted"
        self.stdout.write(f"Cutoff {record.cutoff.isoformat()}; {verb}:")
        for label, count in record.counts["deleted"].items():
            self.stdout.write(f"  {label}: {count}")
        for label, count in record.counts["detached"].items():
            self.stdout.write(f"  {label}: {count} set to null")
        if record.counts["live_sessions_kept"]:
            self.stdout.write(
                self.style.WARNING(
                    f"  kept {record.counts['live_sessions_kept']} live sessions past the window"
                )
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"Purge record {record.pk}: {record.statements} statements in "
                f"{record.duration_s:.1f} s" + (" (dry run: nothing deleted)" if dry_run else "")
            )
        )
