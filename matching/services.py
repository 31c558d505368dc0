"""The matcher, offers, and the sweeps of the beat tick.

The matcher pairs the head of the customer queue (WAITING sessions by ticket) with the head of
the seat queue (free seats of AVAILABLE agents by ``free_since``, then seat id), again and again,
in one transaction under the exclusive queue lock (matching/locking.py), and writes every pairing
to the assignment log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from agents import services as agent_services
from agents.models import Agent, AgentStatus, Seat, Shift
from chat import services as chat_services
from chat.errors import DomainError, NotFound
from chat.events import OFFER, OFFER_EXPIRED, agent_group, publish_on_commit
from chat.models import LIVE_STATUSES, ChatSession, Connection, Role, SessionStatus
from chat.payloads import iso
from matching.locking import lock_queue_exclusive, matcher_pending, queue_transaction
from matching.models import Assignment, Outcome

logger = logging.getLogger(__name__)

# Pairs per round trip: big enough that a burst is a few statements, small enough that the
# UPDATE ... CASE of a batch stays cheap.
BATCH: Final = 200
# Items a sweep handles per tick (the next tick takes the rest).
SWEEP_LIMIT: Final = 500


# --- the matcher -------------------------------------------------------------------------------


def match_run(*, wait: bool = True) -> list[Assignment]:
    """Pair the two queues head to head until one is empty; returns the new assignments.

    With ``wait=False`` it returns [] at once if another matcher (or a queue change) holds the
    queue lock.
    """
    with transaction.atomic():
        if not lock_queue_exclusive(wait=wait):
            return []
        return _match_locked(now=timezone.now())


def match_run_after_commit() -> list[Assignment]:
    """The run that follows a committed queue change (and the tick's run).

    If a matcher already runs or waits for the lock, it was (or will be) granted the lock after
    our commit and sees our change: skip. Otherwise wait for the lock, so a pair never waits for
    the tick however busy the queues are.
    """
    if not pair_possible():
        return []
    with transaction.atomic():
        if not lock_queue_exclusive(wait=False):
            if matcher_pending():
                return []
            lock_queue_exclusive(wait=True)
        return _match_locked(now=timezone.now())


def pair_possible() -> bool:
    """Is someone waiting while a seat stands free? One statement, so one snapshot, no lock.

    Run after our commit: if it says no, any change that makes a pair commits later and runs
    its own check after that commit, which sees ours. So skipping here loses no pairing, and
    spares the exclusive lock (which stalls every queue change) when one queue is empty.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM chat_chatsession WHERE status = %s) "
            "AND EXISTS (SELECT 1 FROM agents_seat s JOIN agents_agent a ON a.id = s.agent_id "
            "WHERE s.free_since IS NOT NULL AND a.status = %s)",
            [SessionStatus.WAITING.value, AgentStatus.AVAILABLE.value],
        )
        row = cursor.fetchone()
    return bool(row and row[0])


def _match_locked(*, now: datetime) -> list[Assignment]:
    """Caller holds the exclusive queue lock, so no queue changes under our feet: every
    WAITING session and every free seat we read stays so until we commit."""
    auto = bool(settings.AUTO_ACCEPT)
    made: list[Assignment] = []
    while True:
        # Seats first: when every seat is busy (the usual backlog) the run ends after one cheap
        # query, without touching the waiting rows. Row locks are taken only on what is paired.
        seats = list(
            Seat.objects.select_for_update(of=("agent",))
            .select_related("agent")
            .filter(free_since__isnull=False, agent__status=AgentStatus.AVAILABLE)
            .order_by("free_since", "id")[:BATCH]
        )
        if not seats:
            break
        sessions = list(
            ChatSession.objects.select_for_update(of=("self",))
            .select_related("customer")
            .filter(status=SessionStatus.WAITING)
            .order_by("ticket")[: len(seats)]
        )
        if not sessions:
            break
        seats = seats[: len(sessions)]
        queued = [(s.ticket, s.enqueued_at) for s in sessions]
        free_since = [seat.free_since for seat in seats]
        chat_services._session_transition(
            sessions,
            SessionStatus.ACTIVE if auto else SessionStatus.OFFERED,
            now=now,
            seats=seats,
        )
        agent_services.seats_taken(seats=seats, now=now)
        batch = Assignment.objects.bulk_create(
            [
                Assignment(
                    session=session,
                    agent_id=seat.agent_id,
                    seat=seat,
                    ticket=ticket,
                    enqueued_at=enqueued_at or now,
                    free_since=since,
                    offered_at=now,
                    accepted_at=now if auto else None,
                    outcome=Outcome.ACCEPTED if auto else Outcome.OFFERED,
                )
                for session, seat, (ticket, enqueued_at), since in zip(
                    sessions, seats, queued, free_since, strict=True
                )
                if ticket is not None and since is not None
            ]
        )
        made.extend(batch)
        for session in sessions:
            if not auto:
                _publish_offer(session)
        for agent_id in sorted({seat.agent_id for seat in seats}):
            agent_services.publish_agent_state(agent_id)
        if len(sessions) < BATCH:
            break  # one queue ran dry in this round
    return made


def _publish_offer(session: ChatSession) -> None:
    assert session.agent_id is not None
    customer = session.customer
    publish_on_commit(
        agent_group(session.agent_id),
        {
            "type": OFFER,
            "session_id": str(session.id),
            "customer": {"display_name": customer.get_full_name() or customer.get_username()},
            "topic": session.topic,
            "expires_at": iso(session.offer_expires_at),
        },
    )


# --- offers ------------------------------------------------------------------------------------


def _lock_offered(session_id: UUID, agent: Agent) -> ChatSession:
    session = ChatSession.objects.select_for_update().filter(pk=session_id).first()
    if session is None:
        raise NotFound()
    if session.agent_id != agent.pk:
        raise DomainError("no_offer", "This chat is not offered to you (any more).")
    return session


def offer_accept(*, session_id: UUID, agent: Agent) -> ChatSession:
    """OFFERED -> ACTIVE. After the deadline the offer expires instead ("offer_expired")."""
    with queue_transaction() as now:
        session = _lock_offered(session_id, agent)
        if session.status == SessionStatus.ACTIVE:
            return session
        if session.status != SessionStatus.OFFERED:
            raise DomainError("no_offer", "This chat is not offered to you (any more).")
        expired = session.offer_expires_at is not None and session.offer_expires_at <= now
        if not expired:
            chat_services._session_transition([session], SessionStatus.ACTIVE, now=now)
            return session
        _expire_offer_locked(session, now=now)
    raise DomainError("offer_expired", "The offer expired before it was accepted.")


def offer_decline(*, session_id: UUID, agent: Agent) -> ChatSession:
    """OFFERED -> WAITING with the same ticket (head of the queue); the seat goes to the back."""
    with queue_transaction() as now:
        session = _lock_offered(session_id, agent)
        if session.status != SessionStatus.OFFERED:
            raise DomainError("no_offer", "This chat is not offered to you (any more).")
        chat_services._session_transition(
            [session], SessionStatus.WAITING, now=now, offer_outcome=Outcome.DECLINED
        )
        return session


def _expire_offer_locked(session: ChatSession, *, now: datetime) -> None:
    """Caller: queue transaction, session locked. The agent goes AWAY first (so the seat does
    not rejoin the seat queue), then the session goes back with its ticket."""
    agent_id = session.agent_id
    assert agent_id is not None
    agent = Agent.objects.select_for_update().get(pk=agent_id)
    if agent.status == AgentStatus.AVAILABLE:
        agent_services._agent_transition(agent, AgentStatus.AWAY, now=now)
    chat_services._session_transition(
        [session], SessionStatus.WAITING, now=now, offer_outcome=Outcome.EXPIRED
    )
    publish_on_commit(agent_group(agent_id), {"type": OFFER_EXPIRED, "session_id": str(session.id)})


def offer_expire(*, session_id: UUID) -> bool:
    """The sweep's per-offer step: expire it if still OFFERED past its deadline (idempotent)."""
    with queue_transaction() as now:
        session = (
            ChatSession.objects.select_for_update(skip_locked=True).filter(pk=session_id).first()
        )
        if (
            session is None
            or session.status != SessionStatus.OFFERED
            or session.offer_expires_at is None
            or session.offer_expires_at > now
        ):
            return False
        _expire_offer_locked(session, now=now)
        return True


# --- the sweeps of the tick --------------------------------------------------------------------


def _each(ids: list[UUID] | list[int], step: Callable[[UUID | int], bool]) -> int:
    done = 0
    for item in ids:
        try:
            done += bool(step(item))
        except DomainError as exc:  # a concurrent change made it moot; the next tick rechecks
            logger.info("sweep step on %s refused: %s", item, exc.code)
    return done


def sweep_stale_connections() -> int:
    """Sockets not refreshed for three heartbeats count as closed (their process died)."""
    cutoff = timezone.now() - timedelta(seconds=3 * settings.PRESENCE_HEARTBEAT_S)
    stale = list(
        Connection.objects.filter(last_seen_at__lt=cutoff)
        .order_by("last_seen_at")  # the last one of a session or agent sets when they left
        .values_list("channel_name", "role", "last_seen_at")[:SWEEP_LIMIT]
    )
    for channel_name, role, seen in stale:
        if role == Role.AGENT:
            agent_services.agent_disconnected(channel_name=channel_name, at=seen)
        else:
            chat_services.customer_disconnected(channel_name=channel_name, at=seen)
    return len(stale)


def sweep_offer_expiry() -> int:
    now = timezone.now()
    ids = list(
        ChatSession.objects.filter(status=SessionStatus.OFFERED, offer_expires_at__lte=now)
        .order_by("offer_expires_at")
        .values_list("id", flat=True)[:SWEEP_LIMIT]
    )
    return _each(ids, lambda sid: offer_expire(session_id=sid))


def sweep_customer_grace() -> int:
    gone_before = timezone.now() - timedelta(seconds=settings.CUSTOMER_GRACE_S)
    ids = list(
        ChatSession.objects.filter(status__in=LIVE_STATUSES, customer_left_at__lte=gone_before)
        .order_by("customer_left_at")
        .values_list("id", flat=True)[:SWEEP_LIMIT]
    )
    return _each(
        ids,
        lambda sid: chat_services.session_customer_gone(session_id=sid, gone_before=gone_before),
    )


def sweep_agent_grace() -> int:
    gone_before = timezone.now() - timedelta(seconds=settings.AGENT_GRACE_S)
    ids = list(
        Agent.objects.exclude(status=AgentStatus.OFFLINE)
        .filter(disconnected_at__lte=gone_before)
        .values_list("id", flat=True)[:SWEEP_LIMIT]
    )
    return _each(
        ids,
        lambda aid: agent_services.agent_presence_expire(agent_id=aid, gone_before=gone_before),
    )


def sweep_incomplete_expiry() -> int:
    created_before = timezone.now() - timedelta(days=settings.HISTORY_DAYS)
    ids = list(
        ChatSession.objects.filter(
            status=SessionStatus.INCOMPLETE, created_at__lte=created_before
        ).values_list("id", flat=True)[:SWEEP_LIMIT]
    )
    return _each(
        ids,
        lambda sid: chat_services.session_expire_incomplete(
            session_id=sid, created_before=created_before
        ),
    )


def sweep_scheduled_shift_end() -> int:
    now = timezone.now()
    ids = list(
        Shift.objects.filter(
            started_at__isnull=False, ended_at=None, scheduled_end__lte=now
        ).values_list("id", flat=True)[:SWEEP_LIMIT]
    )
    return _each(ids, lambda shift_id: agent_services.agent_scheduled_shift_end(shift_id=shift_id))


def tick() -> dict[str, int]:
    """Every sweep, then the matcher. Idempotent: each step rechecks under its locks."""
    counts = {
        "stale_connections": sweep_stale_connections(),
        "offers_expired": sweep_offer_expiry(),
        "customers_gone": sweep_customer_grace(),
        "agents_gone": sweep_agent_grace(),
        "incomplete_expired": sweep_incomplete_expiry(),
        "shifts_ended": sweep_scheduled_shift_end(),
    }
    counts["matched"] = len(match_run_after_commit())
    return counts
