"""Compliance records of the retention purge."""

from __future__ import annotations

from django.db import models


class PurgeRecord(models.Model):
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    cutoff = models.DateTimeField(help_text="Everything created before this moment was purged.")
    dry_run = models.BooleanField(default=False)
    sessions = models.PositiveBigIntegerField(default=0)
    messages = models.PositiveBigIntegerField(default=0)
    assignments = models.PositiveBigIntegerField(default=0)
    accesses = models.PositiveBigIntegerField(default=0)
    duration_s = models.FloatField(default=0)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"purge before {self.cutoff:%Y-%m-%d %H:%M}"
