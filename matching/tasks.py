"""Celery tasks of the matcher: ids in (none here), one service call out."""

from __future__ import annotations

from celery import shared_task

from matching import services


@shared_task(name="matching.tasks.tick", ignore_result=True)
def tick() -> dict[str, int]:
    """The beat's safety net (every MATCH_TICK_S): sweeps, then the matcher."""
    return services.tick()


@shared_task(name="matching.tasks.match", ignore_result=True)
def match() -> int:
    """A matcher run after a queue change, when MATCH_AFTER_COMMIT=celery."""
    return len(services.match_run_after_commit())
