"""Celery: the daily retention purge and the queue sample taken every minute."""

from __future__ import annotations

from celery import shared_task

from history import services


@shared_task(name="history.tasks.purge", ignore_result=True)
def purge() -> int:
    """Run the retention purge; returns the id of its PurgeRecord."""
    return services.purge_expired().pk


@shared_task(name="history.tasks.sample_queue", ignore_result=True)
def sample_queue() -> int:
    return services.queue_sample_take().pk
