"""The agent state machine, seats and presence.

Every agent status change goes through :func:`_agent_transition` and its table; the named
operations below decide the target and call it. Seats (``agent.capacity`` rows of
:class:`agents.models.Seat`) are written only while the agent's row is locked, so the agent row
is the lock of its seats. ``Seat.free_since`` is non-null exactly while the seat holds no
OFFERED/ACTIVE session and its agent is AVAILABLE: that is the seat queue of the matcher.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from agents.models import AfterChats, Agent, AgentStatus, Seat, Shift
from chat.errors import DomainError, Forbidden
from chat.events import AGENT_STATE, Event, agent_group, publish_built_on_commit
from chat.models import SEATED_STATUSES, ChatSession, Connection, Role
from matching.locking import queue_transaction, request_match_on_commit
from matching.models import FreeSpan

S = AgentStatus

# The allowed transitions (from -> to). BREAK_PENDING -> BREAK_PENDING changes only what the
# agent becomes after the last chat (break or end of shift).
AGENT_TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    S.OFFLINE: frozenset({S.AVAILABLE}),
    S.AVAILABLE: frozenset({S.BREAK_PENDING, S.ON_BREAK, S.OFFLINE, S.AWAY}),
    S.BREAK_PENDING: frozenset({S.BREAK_PENDING, S.AVAILABLE, S.ON_BREAK, S.OFFLINE}),
    S.ON_BREAK: frozenset({S.AVAILABLE, S.OFFLINE}),
    S.AWAY: frozenset({S.AVAILABLE, S.BREAK_PENDING, S.ON_BREAK, S.OFFLINE}),
}

# A planned shift may be started this much before its scheduled start.
EARLY_START: Final = timedelta(hours=1)

# States an agent may only enter without OFFERED/ACTIVE sessions.
_EMPTY_HANDED: Final = frozenset({S.ON_BREAK, S.OFFLINE})


# --- helpers (callers hold the locks named in their docstrings) -------------------------------


def _lock_agent(agent_id: int) -> Agent:
    return Agent.objects.select_for_update().get(pk=agent_id)


def _held_seat_ids(agent_id: int) -> set[int]:
    return set(
        ChatSession.objects.filter(agent_id=agent_id, status__in=SEATED_STATUSES)
        .exclude(seat_id=None)
        .values_list("seat_id", flat=True)
    )


def _seated_count(agent_id: int) -> int:
    return ChatSession.objects.filter(agent_id=agent_id, status__in=SEATED_STATUSES).count()


def _ensure_seats(agent: Agent) -> None:
    """Make the seat rows match ``agent.capacity``. Caller holds the agent's row lock.

    Only free seats are removed when the capacity shrinks; a seat in use stays until its session
    leaves it (``agent_set_capacity`` refuses a capacity below the seats in use).
    """
    seats = list(Seat.objects.filter(agent_id=agent.pk).order_by("index"))
    if len(seats) < agent.capacity:
        have = {seat.index for seat in seats}
        free_since = timezone.now() if agent.status == S.AVAILABLE else None
        new = [
            Seat(agent=agent, index=index, free_since=free_since)
            for index in range(agent.capacity)
            if index not in have
        ][: agent.capacity - len(seats)]
        Seat.objects.bulk_create(new)
        if free_since is not None:
            _open_free_spans(agent, [seat for seat in new], free_since)
    elif len(seats) > agent.capacity:
        held = _held_seat_ids(agent.pk)
        surplus = [seat for seat in reversed(seats) if seat.pk not in held]
        surplus = surplus[: len(seats) - agent.capacity]
        ids = [seat.pk for seat in surplus]
        FreeSpan.objects.filter(seat_id__in=ids, ended_at=None).update(ended_at=timezone.now())
        Seat.objects.filter(pk__in=ids).delete()


def _open_free_spans(agent: Agent, seats: Iterable[Seat], now: datetime) -> None:
    FreeSpan.objects.bulk_create(
        [FreeSpan(seat=seat, agent=agent, started_at=now) for seat in seats]
    )


def _seats_into_queue(agent: Agent, now: datetime) -> None:
    """The agent became AVAILABLE: each free seat joins the seat queue at ``now``."""
    held = _held_seat_ids(agent.pk)
    free = [
        seat
        for seat in Seat.objects.filter(agent_id=agent.pk, free_since=None)
        if seat.pk not in held
    ]
    if not free:
        return
    Seat.objects.filter(pk__in=[seat.pk for seat in free]).update(free_since=now)
    _open_free_spans(agent, free, now)


def _seats_out_of_queue(agent: Agent, now: datetime) -> None:
    """The agent stopped being AVAILABLE: its free seats leave the seat queue."""
    ids = list(
        Seat.objects.filter(agent_id=agent.pk).exclude(free_since=None).values_list("pk", flat=True)
    )
    if not ids:
        return
    Seat.objects.filter(pk__in=ids).update(free_since=None)
    FreeSpan.objects.filter(seat_id__in=ids, ended_at=None).update(ended_at=now)


def publish_agent_state(agent_id: int) -> None:
    """``agent.state`` to the agent's consoles after commit (built then, from the database)."""

    def build() -> Event | None:
        from agents.selectors import agent_state_payload

        agent = Agent.objects.filter(pk=agent_id).first()
        if agent is None:
            return None
        return {"type": AGENT_STATE, **agent_state_payload(agent=agent)}

    publish_built_on_commit([agent_group(agent_id)], build)


def _agent_transition(agent: Agent, to: str, *, now: datetime, after_chats: str = "") -> Agent:
    """The one place an agent's status changes.

    Caller: inside :func:`queue_transaction`, holding the agent's row lock (``agent`` is the
    locked instance). Checks the table, moves the seats in or out of the seat queue, opens or
    closes the shift, saves, publishes ``agent.state`` after commit and, when the agent became
    AVAILABLE, asks for a matcher run after commit.
    """
    frm = agent.status
    if to not in AGENT_TRANSITIONS[frm]:
        raise DomainError(
            "invalid_transition",
            f"An agent cannot go from {frm} to {to}.",
            from_status=str(frm),
            to_status=str(to),
        )
    if to in _EMPTY_HANDED and _seated_count(agent.pk):
        raise DomainError(
            "agent_has_chats", f"The agent still has chats and cannot go {to}.", to_status=str(to)
        )
    if to == S.BREAK_PENDING and after_chats not in (AfterChats.BREAK, AfterChats.OFFLINE):
        raise DomainError("invalid_transition", "A pending break needs what comes after it.")
    if frm == S.AVAILABLE and to != S.AVAILABLE:
        _seats_out_of_queue(agent, now)
    if to == S.AVAILABLE and frm != S.AVAILABLE:
        _ensure_seats(agent)
        _seats_into_queue(agent, now)
        request_match_on_commit()
    if to == S.OFFLINE:
        Shift.objects.filter(agent_id=agent.pk, started_at__isnull=False, ended_at=None).update(
            ended_at=now
        )
    if frm != to:
        agent.status_changed_at = now
    agent.status = to
    agent.after_chats = after_chats if to == S.BREAK_PENDING else ""
    agent.save(update_fields=["status", "after_chats", "status_changed_at"])
    publish_agent_state(agent.pk)
    return agent


def seats_released(*, agent: Agent, seat_ids: Iterable[int], now: datetime) -> None:
    """Sessions left these seats (ended, incomplete, requeued, declined, expired).

    Caller: inside a queue transaction, holding the agent's row lock and the sessions' locks,
    after the sessions' new status is saved. A seat of an AVAILABLE agent joins the seat queue
    at ``now``; a BREAK_PENDING agent whose last chat this was goes on break (or offline).
    """
    ids = list(seat_ids)
    if agent.status == S.AVAILABLE and ids:
        Seat.objects.filter(pk__in=ids, free_since=None).update(free_since=now)
        _open_free_spans(agent, Seat.objects.filter(pk__in=ids), now)
        request_match_on_commit()
    elif agent.status == S.BREAK_PENDING and not _seated_count(agent.pk):
        _agent_transition(agent, agent.after_chats or AfterChats.BREAK, now=now)
    publish_agent_state(agent.pk)


def seats_taken(*, seats: Iterable[Seat], now: datetime) -> None:
    """The matcher put sessions on these seats. Caller: the matcher, holding the agents' locks."""
    ids = [seat.pk for seat in seats]
    Seat.objects.filter(pk__in=ids).update(free_since=None)
    FreeSpan.objects.filter(seat_id__in=ids, ended_at=None).update(ended_at=now)


INTERVENE_SESSION: Final = "history.intervene_session"
FORCE_AGENT_STATUS: Final = "history.force_agent_status"


def _require_lead(lead: AbstractBaseUser, permission: str) -> None:
    # Agents are staff too (they log in to the console), so staff alone proves nothing: the
    # Support lead group's permission does. Checked here so every interface gets the same rule.
    if not lead.is_active or not lead.has_perm(permission):
        raise Forbidden("Only support leads may do this.")


# --- named operations --------------------------------------------------------------------------


def agent_create(
    *, user: AbstractBaseUser, display_name: str = "", capacity: int | None = None
) -> Agent:
    """An agent profile for ``user`` (OFFLINE) with one seat per unit of capacity."""
    with queue_transaction():
        agent = Agent.objects.create(
            user_id=user.pk,
            display_name=display_name or user.get_username(),
            **({"capacity": capacity} if capacity is not None else {}),
        )
        agent = _lock_agent(agent.pk)
        _ensure_seats(agent)
    return agent


def agent_set_capacity(*, agent: Agent, capacity: int) -> Agent:
    """Change how many chats the agent can hold at once; seats follow."""
    if capacity < 1:
        raise DomainError("invalid_capacity", "Capacity must be at least 1.", http_status=400)
    with queue_transaction():
        agent = _lock_agent(agent.pk)
        if _seated_count(agent.pk) > capacity:
            raise DomainError(
                "seats_in_use", "The agent holds more chats than that; try again later."
            )
        agent.capacity = capacity
        agent.save(update_fields=["capacity"])
        _ensure_seats(agent)
        if agent.status == S.AVAILABLE:
            request_match_on_commit()
        publish_agent_state(agent.pk)
    return agent


def agent_shift_start(*, agent: Agent) -> Agent:
    """OFFLINE -> AVAILABLE (opens the shift: a scheduled one if due, else a new one).

    Also accepted from AWAY ("I am here"); a no-op when already AVAILABLE.
    """
    with queue_transaction() as now:
        agent = _lock_agent(agent.pk)
        if agent.status == S.AVAILABLE:
            return agent
        if agent.status == S.OFFLINE:
            scheduled = (
                Shift.objects.filter(
                    agent_id=agent.pk,
                    started_at=None,
                    ended_at=None,
                    scheduled_end__gt=now,
                    scheduled_start__lte=now + EARLY_START,
                )
                .order_by("scheduled_start")
                .first()
            )
            if scheduled is not None:
                scheduled.started_at = now
                scheduled.save(update_fields=["started_at"])
            else:
                Shift.objects.create(agent=agent, started_at=now)
            if agent.disconnected_at is not None:
                # A console that closed during an earlier shift must not count against this
                # one: the agent-grace clock starts again now.
                agent.disconnected_at = now
                agent.save(update_fields=["disconnected_at"])
        elif agent.status != S.AWAY:
            raise DomainError(
                "invalid_transition",
                "The shift has already started; end the break instead.",
                from_status=str(agent.status),
                to_status=str(S.AVAILABLE),
            )
        return _agent_transition(agent, S.AVAILABLE, now=now)


def _to_break_or_pending(agent: Agent, *, now: datetime, after: str) -> Agent:
    if _seated_count(agent.pk):
        return _agent_transition(agent, S.BREAK_PENDING, now=now, after_chats=after)
    return _agent_transition(agent, after, now=now)


def agent_break_request(*, agent: Agent) -> Agent:
    """No new offers; ON_BREAK now if no chats, else BREAK_PENDING until the last one ends."""
    with queue_transaction() as now:
        agent = _lock_agent(agent.pk)
        if agent.status == S.ON_BREAK:
            return agent
        if agent.status == S.OFFLINE:
            raise DomainError(
                "invalid_transition",
                "Start the shift first.",
                from_status=str(agent.status),
                to_status=str(S.ON_BREAK),
            )
        return _to_break_or_pending(agent, now=now, after=AfterChats.BREAK)


def agent_break_end(*, agent: Agent) -> Agent:
    """ON_BREAK -> AVAILABLE; from BREAK_PENDING it cancels the pending break; AWAY -> AVAILABLE."""
    with queue_transaction() as now:
        agent = _lock_agent(agent.pk)
        if agent.status == S.AVAILABLE:
            return agent
        if agent.status == S.OFFLINE:
            raise DomainError(
                "invalid_transition",
                "Start the shift first.",
                from_status=str(agent.status),
                to_status=str(S.AVAILABLE),
            )
        return _agent_transition(agent, S.AVAILABLE, now=now)


def agent_set_available(*, agent: Agent) -> Agent:
    """Back to AVAILABLE from AWAY (a missed offer), a break, or a pending break."""
    return agent_break_end(agent=agent)


def agent_shift_end(*, agent: Agent) -> Agent:
    """End of shift: OFFLINE now if no chats, else BREAK_PENDING (then OFFLINE by itself)."""
    with queue_transaction() as now:
        agent = _lock_agent(agent.pk)
        return _shift_end_locked(agent, now=now)


def _shift_end_locked(agent: Agent, *, now: datetime) -> Agent:
    if agent.status == S.OFFLINE:
        return agent
    if agent.status == S.ON_BREAK:
        return _agent_transition(agent, S.OFFLINE, now=now)
    return _to_break_or_pending(agent, now=now, after=AfterChats.OFFLINE)


def agent_force_break(*, agent: Agent, lead: AbstractBaseUser) -> Agent:
    """A lead sends the agent on break (after the current chats, like the agent's own request)."""
    _require_lead(lead, FORCE_AGENT_STATUS)
    return agent_break_request(agent=agent)


def agent_force_offline(*, agent: Agent, lead: AbstractBaseUser) -> Agent:
    """A lead takes the agent offline now: their sessions go back to the queue (old tickets)."""
    _require_lead(lead, FORCE_AGENT_STATUS)
    return _agent_offline_now(agent_id=agent.pk, only_if_gone_before=None)


def _agent_offline_now(*, agent_id: int, only_if_gone_before: datetime | None) -> Agent:
    """Requeue the agent's sessions and set them OFFLINE.

    With ``only_if_gone_before``, only if the console has been gone since before that moment
    (the agent-grace sweep; rechecked under the lock, so two beats do no harm).
    """
    from chat import services as chat_services

    with queue_transaction() as now:
        # Lock order: sessions before the agent. The matcher cannot add sessions meanwhile
        # (our shared queue lock excludes it), so the set can only shrink.
        ids = list(
            ChatSession.objects.filter(agent_id=agent_id, status__in=SEATED_STATUSES)
            .order_by("id")
            .values_list("id", flat=True)
        )
        sessions = list(
            ChatSession.objects.select_for_update()
            .filter(pk__in=ids, agent_id=agent_id, status__in=SEATED_STATUSES)
            .order_by("id")
        )
        agent = _lock_agent(agent_id)
        if only_if_gone_before is not None and (
            agent.status == S.OFFLINE
            or agent.disconnected_at is None
            or agent.disconnected_at > only_if_gone_before
        ):
            return agent
        if sessions:
            chat_services.sessions_requeue_locked(sessions=sessions, now=now)
            agent.refresh_from_db()
        if agent.status != S.OFFLINE:
            _agent_transition(agent, S.OFFLINE, now=now)
        return agent


def agent_presence_expire(*, agent_id: int, gone_before: datetime) -> bool:
    """Agent grace: the console gone since before ``gone_before`` -> sessions back, OFFLINE."""
    before = Agent.objects.filter(pk=agent_id).values_list("status", flat=True).first()
    agent = _agent_offline_now(agent_id=agent_id, only_if_gone_before=gone_before)
    return before not in (None, S.OFFLINE) and agent.status == S.OFFLINE


def agent_scheduled_shift_end(*, shift_id: int) -> bool:
    """The shift's scheduled end passed: end it like the agent would (idempotent)."""
    with queue_transaction() as now:
        shift = Shift.objects.filter(pk=shift_id).first()
        if shift is None:
            return False
        agent = _lock_agent(shift.agent_id)
        shift.refresh_from_db()
        if shift.ended_at is not None or shift.scheduled_end is None or shift.scheduled_end > now:
            return False
        if agent.status == S.OFFLINE:
            shift.ended_at = now
            shift.save(update_fields=["ended_at"])
            return False
        if agent.status == S.BREAK_PENDING and agent.after_chats == AfterChats.OFFLINE:
            return False
        _shift_end_locked(agent, now=now)
        return True


# --- presence ----------------------------------------------------------------------------------


def agent_connected(*, agent: Agent, channel_name: str) -> Agent:
    """A console socket opened: presence is back (the agent-grace clock stops)."""
    now = timezone.now()
    Connection.objects.update_or_create(
        channel_name=channel_name,
        defaults={
            "role": Role.AGENT,
            "user_id": agent.user_id,
            "agent_id": agent.pk,
            "session": None,
            "connected_at": now,
            "last_seen_at": now,
        },
    )
    Agent.objects.filter(pk=agent.pk).exclude(disconnected_at=None).update(disconnected_at=None)
    agent.refresh_from_db()
    return agent


def agent_disconnected(*, channel_name: str, at: datetime | None = None) -> None:
    """A console socket closed (or went stale): the last one starts the agent-grace clock."""
    at = at or timezone.now()
    connection = Connection.objects.filter(channel_name=channel_name, role=Role.AGENT).first()
    if connection is None:
        return
    connection.delete()
    agent_id = connection.agent_id
    if agent_id is None:
        return
    still_open = Connection.objects.filter(agent_id=agent_id, role=Role.AGENT).exists()
    if not still_open:
        Agent.objects.filter(pk=agent_id, disconnected_at=None).update(disconnected_at=at)
