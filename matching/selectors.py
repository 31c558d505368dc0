"""Reads about the queue and the assignment log."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from matching.models import Assignment

# The estimate looks at how fast customers left the queue lately.
ESTIMATE_WINDOW = timedelta(minutes=30)


def seconds_per_queue_position() -> float | None:
    """Average time between accepted matches in the last half hour (None without data).

    A customer at position ``p`` waits about ``p`` times this. It is deliberately simple and
    conservative; docs/architecture.md explains the choice.
    """
    since = timezone.now() - ESTIMATE_WINDOW
    matches = Assignment.objects.filter(offered_at__gte=since, accepted_at__isnull=False).count()
    if matches == 0:
        return None
    return ESTIMATE_WINDOW.total_seconds() / matches
