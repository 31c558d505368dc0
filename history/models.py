"""Compliance records of the retention purge, and the minute-by-minute samples of the queue.

``QueueSample`` also carries the support leads' operational permissions (``view_queue`` and the
interventions): Django attaches custom permissions to a model, and this app is the one that owns
the leads' tools. ``history.services.SUPPORT_LEAD_PERMISSIONS`` lists what the group gets.
"""

from __future__ import annotations

from django.db import models


class PurgeRecord(models.Model):
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    cutoff = models.DateTimeField(help_text="Everything created before this moment was purged.")
    retention_days = models.PositiveIntegerField(default=0)
    dry_run = models.BooleanField(default=False)
    batch_size = models.PositiveIntegerField(default=0)
    sessions = models.PositiveBigIntegerField(default=0)
    messages = models.PositiveBigIntegerField(default=0)
    connections = models.PositiveBigIntegerField(default=0)
    assignments = models.PositiveBigIntegerField(default=0)
    accesses = models.PositiveBigIntegerField(default=0)
    queue_samples = models.PositiveBigIntegerField(default=0)
    # Every table touched, by model label ("chat.Message": n), including rows detached (SET NULL)
    # and tables added after this record's fields were chosen.
    counts = models.JSONField(default=dict, blank=True)
    statements = models.PositiveIntegerField(default=0, help_text="DELETE/UPDATE batches run.")
    duration_s = models.FloatField(default=0)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        kind = "dry run" if self.dry_run else "purge"
        return f"{kind} before {self.cutoff:%Y-%m-%d %H:%M}"

    @property
    def completed(self) -> bool:
        return self.finished_at is not None and not self.error


class QueueSample(models.Model):
    """The queue and the floor at one moment (a beat task takes one a minute for the charts)."""

    at = models.DateTimeField(db_index=True)
    waiting = models.PositiveIntegerField(default=0)  # WAITING + OFFERED: not yet talking
    offered = models.PositiveIntegerField(default=0)
    active = models.PositiveIntegerField(default=0)
    longest_wait_s = models.PositiveIntegerField(default=0)
    agents = models.JSONField(default=dict, blank=True)  # {status: count}
    free_seats = models.PositiveIntegerField(default=0)
    matches_last_hour = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-at"]
        permissions = [
            ("view_queue", "Can view the live queue and the dashboard"),
            ("intervene_session", "Can close a session or send it back to the queue"),
            ("force_agent_status", "Can force an agent on break or offline"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} waiting {self.waiting}"
