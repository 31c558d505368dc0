"""Reads about the queue and the assignment log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connection
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


@dataclass(frozen=True)
class Violation:
    """One assignment that broke a fairness rule, and the earlier party it passed over."""

    assignment_id: int
    rule: str  # "customer" or "seat"
    offered_at: datetime
    detail: str


# An earlier party "still stood in its queue" at the pairing if its span was open then; a span
# closed at the very same instant was closed by the same matcher run, so it stood there only if
# its own pairing came later in that run (a higher assignment id).
_CUSTOMER_RULE = """
SELECT a.id, a.offered_at, a.session_id, a.ticket, w.session_id, w.ticket
FROM matching_assignment a
JOIN matching_waitspan w
  ON w.ticket < a.ticket
 AND w.session_id <> a.session_id
 AND w.started_at < a.offered_at
 AND (w.ended_at IS NULL OR w.ended_at > a.offered_at
      OR (w.ended_at = a.offered_at AND EXISTS (
            SELECT 1 FROM matching_assignment b
            WHERE b.session_id = w.session_id AND b.offered_at = a.offered_at AND b.id > a.id)))
WHERE a.offered_at >= %s
ORDER BY a.id, w.ticket
"""

_SEAT_RULE = """
SELECT a.id, a.offered_at, a.seat_id, a.free_since, f.seat_id, f.started_at
FROM matching_assignment a
JOIN matching_freespan f
  ON f.seat_id <> a.seat_id
 AND (f.started_at < a.free_since OR (f.started_at = a.free_since AND f.seat_id < a.seat_id))
 AND f.started_at < a.offered_at
 AND (f.ended_at IS NULL OR f.ended_at > a.offered_at
      OR (f.ended_at = a.offered_at AND EXISTS (
            SELECT 1 FROM matching_assignment b
            WHERE b.seat_id = f.seat_id AND b.offered_at = a.offered_at AND b.id > a.id)))
WHERE a.offered_at >= %s AND a.seat_id IS NOT NULL
ORDER BY a.id, f.started_at
"""


def fairness_violations(*, since: datetime | None = None) -> list[Violation]:
    """Every assignment since ``since`` that served a customer while one with an earlier ticket
    was waiting, or used a seat while an earlier-freed seat of an available agent stood free.

    Judged from the assignment log and the queue spans alone (matching.models.WaitSpan,
    FreeSpan), which the services write in the same transactions as the queue changes.
    """
    since = since or datetime(1970, 1, 1, tzinfo=UTC)
    found: list[Violation] = []
    with connection.cursor() as cursor:
        cursor.execute(_CUSTOMER_RULE, [since])
        for aid, at, session_id, ticket, other_id, other_ticket in cursor.fetchall():
            found.append(
                Violation(
                    assignment_id=aid,
                    rule="customer",
                    offered_at=at,
                    detail=(
                        f"session {session_id} (ticket {ticket}) served while session "
                        f"{other_id} (ticket {other_ticket}) was waiting"
                    ),
                )
            )
        cursor.execute(_SEAT_RULE, [since])
        for aid, at, seat_id, free_since, other_seat, other_since in cursor.fetchall():
            found.append(
                Violation(
                    assignment_id=aid,
                    rule="seat",
                    offered_at=at,
                    detail=(
                        f"seat {seat_id} (free since {free_since.isoformat()}) used while seat "
                        f"{other_seat} (free since {other_since.isoformat()}) stood free"
                    ),
                )
            )
    found.sort(key=lambda v: (v.assignment_id, v.rule))
    return found
