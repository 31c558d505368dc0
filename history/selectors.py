"""Reads for the support leads: the queue and the floor now, and the samples behind the charts.

``queue_overview`` runs a fixed number of queries (six) whatever the size of the floor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TypedDict

from django.db.models import Count, Min, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from agents.models import Agent, AgentStatus, Seat
from chat.models import ChatSession, SessionStatus
from chat.payloads import iso
from history.models import QueueSample
from matching.models import Assignment
from matching.selectors import seconds_per_queue_position

MATCH_WINDOW = timedelta(hours=1)
MAX_SERIES_HOURS = 48


class AgentLoad(TypedDict):
    id: int
    display_name: str
    status: str
    capacity: int
    active: int
    offered: int


@dataclass(frozen=True)
class QueueOverview:
    at: datetime
    waiting: int  # customers not yet talking to an agent: WAITING + OFFERED
    offered: int
    longest_wait_s: int
    sessions_active: int
    agents: dict[str, int]
    free_seats: int
    seconds_per_position: float | None
    estimated_wait_s: int | None  # for a customer arriving now
    matches_last_hour: int  # offers accepted
    offers_last_hour: int
    chats_per_agent: list[AgentLoad] = field(default_factory=list)

    def as_wire(self) -> dict[str, object]:
        """The ``GET /api/ops/queue`` body: PROTOCOL.md's four fields, then the extras."""
        body = asdict(self)
        body["at"] = iso(self.at)
        if self.seconds_per_position is not None:
            body["seconds_per_position"] = round(self.seconds_per_position, 1)
        return {
            "waiting": body.pop("waiting"),
            "longest_wait_s": body.pop("longest_wait_s"),
            "agents": body.pop("agents"),
            "sessions_active": body.pop("sessions_active"),
            **body,
        }


def queue_summary(*, now: datetime | None = None) -> dict[str, int]:
    """What an agent's console shows of the queue: how many wait and the longest wait so far."""
    now = now or timezone.now()
    waiting_q = Q(status__in=(SessionStatus.WAITING, SessionStatus.OFFERED))
    row = ChatSession.objects.filter(waiting_q).aggregate(
        waiting=Count("id"), since=Min(Coalesce("enqueued_at", "created_at"))
    )
    since = row["since"]
    longest = max(0, int((now - since).total_seconds())) if since else 0
    return {"waiting": row["waiting"], "longest_wait_s": longest}


def queue_overview(*, now: datetime | None = None) -> QueueOverview:
    now = now or timezone.now()
    waiting_q = Q(status__in=(SessionStatus.WAITING, SessionStatus.OFFERED))
    sessions = ChatSession.objects.filter(
        status__in=(SessionStatus.WAITING, SessionStatus.OFFERED, SessionStatus.ACTIVE)
    ).aggregate(
        waiting=Count("id", filter=waiting_q),
        offered=Count("id", filter=Q(status=SessionStatus.OFFERED)),
        active=Count("id", filter=Q(status=SessionStatus.ACTIVE)),
        # The current wait began at enqueued_at (a requeued session keeps its ticket but its
        # customer has been waiting since they were put back).
        since=Min(Coalesce("enqueued_at", "created_at"), filter=waiting_q),
    )
    since = sessions["since"]
    longest = max(0, int((now - since).total_seconds())) if since else 0

    agents = {status.value: 0 for status in AgentStatus}
    for row in Agent.objects.values("status").annotate(n=Count("id")).order_by():
        agents[row["status"]] = row["n"]

    free_seats = Seat.objects.filter(
        free_since__isnull=False, agent__status=AgentStatus.AVAILABLE
    ).count()

    matches = Assignment.objects.filter(offered_at__gte=now - MATCH_WINDOW).aggregate(
        offers=Count("id"), accepted=Count("id", filter=Q(accepted_at__isnull=False))
    )

    per_position = seconds_per_queue_position()
    estimate = round((sessions["waiting"] + 1) * per_position) if per_position is not None else None

    loads = (
        Agent.objects.annotate(
            active=Count("sessions", filter=Q(sessions__status=SessionStatus.ACTIVE)),
            offered=Count("sessions", filter=Q(sessions__status=SessionStatus.OFFERED)),
        )
        .filter(~Q(status=AgentStatus.OFFLINE) | Q(active__gt=0) | Q(offered__gt=0))
        .order_by("display_name", "id")
        .values("id", "display_name", "status", "capacity", "active", "offered")
    )
    return QueueOverview(
        at=now,
        waiting=sessions["waiting"],
        offered=sessions["offered"],
        longest_wait_s=longest,
        sessions_active=sessions["active"],
        agents=agents,
        free_seats=free_seats,
        seconds_per_position=per_position,
        estimated_wait_s=estimate,
        matches_last_hour=matches["accepted"],
        offers_last_hour=matches["offers"],
        chats_per_agent=[AgentLoad(**row) for row in loads],
    )


class SamplePoint(TypedDict):
    at: str | None
    waiting: int
    active: int
    longest_wait_s: int


def queue_series(*, hours: int, now: datetime | None = None) -> list[SamplePoint]:
    """The samples of the last ``hours`` (at most MAX_SERIES_HOURS), oldest first."""
    now = now or timezone.now()
    hours = max(1, min(hours, MAX_SERIES_HOURS))
    rows = (
        QueueSample.objects.filter(at__gte=now - timedelta(hours=hours), at__lte=now)
        .order_by("at")
        .values_list("at", "waiting", "active", "longest_wait_s")
    )
    return [
        SamplePoint(at=iso(at), waiting=waiting, active=active, longest_wait_s=longest)
        for at, waiting, active, longest in rows
    ]
