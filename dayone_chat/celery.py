"""The Celery app: Redis broker, beat schedule (the matcher's safety-net tick, the daily purge)."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_process_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dayone_chat.settings.local")

app = Celery("dayone_chat")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_finalize.connect
def _schedule(sender: Celery, **_: object) -> None:
    from celery.schedules import crontab
    from django.conf import settings

    sender.add_periodic_task(
        float(settings.MATCH_TICK_S), sender.signature("matching.tasks.tick"), name="match tick"
    )
    sender.add_periodic_task(
        crontab(hour=3, minute=17), sender.signature("history.tasks.purge"), name="daily purge"
    )
    sender.add_periodic_task(60.0, sender.signature("history.tasks.sample_queue"), name="sample")


@worker_process_shutdown.connect
def _flush_events(**_: object) -> None:
    """A prefork child may leave with os._exit (no atexit): send its queued events first."""
    from chat import events

    events.flush()
