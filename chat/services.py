"""The session state machine, messages and customer presence.

Every session status change goes through :func:`_session_transition` and its table
``SESSION_TRANSITIONS``; the named operations below lock, decide and call it. It works on a list
of sessions so the matcher can pair a whole batch with the same code path.

Locks (see matching/locking.py): the shared queue lock first, then the customer lock, then
session rows, then agent rows (seats are written under their agent's lock).
"""

from __future__ import annotations

import copy
import functools
from collections import defaultdict
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from agents import services as agent_services
from agents.models import Agent, Seat
from chat.errors import DomainError, Forbidden, InvalidInput, NotFound
from chat.events import (
    END_DECLINED,
    END_REQUESTED,
    MESSAGE,
    QUEUE_CHANGED,
    QUEUE_GROUP,
    SESSION_ENDED,
    SESSION_STATE,
    Event,
    agent_group,
    publish_built_on_commit,
    publish_on_commit,
    session_group,
)
from chat.models import (
    LIVE_STATUSES,
    SEATED_STATUSES,
    ChatSession,
    Connection,
    EndReason,
    Message,
    Role,
    SessionStatus,
)
from chat.payloads import is_resumable, message_payload, session_payload
from matching.locking import lock_customer, queue_transaction, request_match_on_commit
from matching.models import Assignment, Outcome, WaitSpan

St = SessionStatus

SESSION_TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    St.WAITING: frozenset({St.OFFERED, St.ACTIVE, St.INCOMPLETE, St.ENDED}),
    St.OFFERED: frozenset({St.ACTIVE, St.WAITING, St.INCOMPLETE, St.ENDED}),
    St.ACTIVE: frozenset({St.ENDED, St.INCOMPLETE, St.WAITING}),
    St.INCOMPLETE: frozenset({St.WAITING, St.ENDED}),
    St.ENDED: frozenset(),
}


@dataclass(frozen=True)
class MessagePost:
    message: Message
    created: bool


# --- events ------------------------------------------------------------------------------------


class _Estimate:
    """The queue's seconds-per-position, computed at most once for all the payloads built after
    one commit (a matcher batch builds two per pair)."""

    def __init__(self) -> None:
        self._value: float | None = None
        self._known = False

    def __call__(self) -> float | None:
        if not self._known:
            from matching.selectors import seconds_per_queue_position

            self._value = seconds_per_queue_position()
            self._known = True
        return self._value


def publish_session_state(
    session: ChatSession, *, agent_ids: Sequence[int] = (), estimate: _Estimate | None = None
) -> None:
    """``session.state`` after commit to the session group and the consoles of ``agent_ids``
    (the session's agent and, when it just left one, the previous agent)."""
    snapshot = copy.copy(session)
    shared = estimate or _Estimate()

    def payload(*, for_agent: bool) -> dict[str, object]:
        per = shared() if snapshot.status in (St.WAITING, St.OFFERED) else None
        return session_payload(snapshot, seconds_per_position=per, for_agent=for_agent)

    def for_customer() -> Event:
        return {
            "type": SESSION_STATE,
            "session_id": str(snapshot.id),
            "session": payload(for_agent=False),
        }

    publish_built_on_commit([session_group(snapshot.id)], for_customer)
    targets = sorted({a for a in (*agent_ids, snapshot.agent_id) if a is not None})
    if not targets:
        return

    def for_agent() -> Event:
        return {
            "type": SESSION_STATE,
            "session_id": str(snapshot.id),
            "session": payload(for_agent=True),
        }

    publish_built_on_commit([agent_group(a) for a in targets], for_agent)


def _publish_queue_changed(
    *, joined: Sequence[int] = (), left: Sequence[int] = (), estimate: _Estimate | None = None
) -> None:
    if not joined and not left:
        return
    shared = estimate or _Estimate()

    def deliver() -> None:
        from chat.events import send_after_commit

        per = shared()
        for ticket in joined:
            send_after_commit(
                QUEUE_GROUP,
                {"type": QUEUE_CHANGED, "joined_ticket": ticket, "seconds_per_position": per},
            )
        for ticket in left:
            send_after_commit(
                QUEUE_GROUP,
                {"type": QUEUE_CHANGED, "left_ticket": ticket, "seconds_per_position": per},
            )

    transaction.on_commit(deliver, robust=True)


# --- the transition function -------------------------------------------------------------------


def _next_ticket() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval('chat_queue_ticket')")
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def check_session_transition(frm: str, to: str) -> None:
    if to not in SESSION_TRANSITIONS[frm]:
        raise DomainError(
            "invalid_transition",
            f"A session cannot go from {frm} to {to}.",
            from_status=str(frm),
            to_status=str(to),
        )


def _session_transition(
    sessions: Sequence[ChatSession],
    to: str,
    *,
    now: datetime,
    end_reason: str = "",
    seats: Sequence[Seat] | None = None,
    new_ticket: bool = False,
    offer_outcome: str = Outcome.CANCELLED,
) -> None:
    """The one place a session's status changes (for one session or a batch).

    Caller: inside :func:`queue_transaction` (or the matcher's exclusive lock), holding the row
    locks of ``sessions``; when seating them (OFFERED/ACTIVE from WAITING), ``seats`` is the
    parallel list of seats and the caller holds their agents' locks. Leaving a seat locks the
    agent here (sessions before agents). Closes or opens the queue spans, settles a pending
    offer in the assignment log, frees seats, saves, and publishes after commit.
    """
    if seats is not None and len(seats) != len(sessions):
        raise ValueError("one seat per session")
    for session in sessions:
        check_session_transition(session.status, to)

    fields = {"status", "agent", "seat"}
    left_wait: list[ChatSession] = []
    joined_wait: list[ChatSession] = []
    released: dict[int, list[int]] = defaultdict(list)
    previous_agent: dict[UUID, int | None] = {}
    settle_offer: list[UUID] = []
    accept_offer: list[UUID] = []

    for i, session in enumerate(sessions):
        frm = session.status
        previous_agent[session.id] = session.agent_id
        if frm == St.WAITING:
            left_wait.append(session)
        if frm in SEATED_STATUSES and to not in SEATED_STATUSES:
            assert session.agent_id is not None
            assert session.seat_id is not None
            released[session.agent_id].append(session.seat_id)
        if frm == St.OFFERED:
            (accept_offer if to == St.ACTIVE else settle_offer).append(session.id)

        if to == St.WAITING:
            if new_ticket or session.ticket is None:
                session.ticket = _next_ticket()
            session.enqueued_at = now
            session.agent = None
            session.seat = None
            session.offered_at = None
            session.offer_expires_at = None
            session.accepted_at = None
            session.end_requested_by = ""
            fields |= {"ticket", "enqueued_at", "offered_at", "offer_expires_at", "accepted_at"}
            fields.add("end_requested_by")
            joined_wait.append(session)
        elif to in SEATED_STATUSES and frm == St.WAITING:
            assert seats is not None
            seat = seats[i]
            session.seat = seat
            session.agent = seat.agent  # loaded with the seat: the payloads need its name
            session.offered_at = now
            fields.add("offered_at")
            if to == St.OFFERED:
                session.offer_expires_at = now + timedelta(seconds=settings.OFFER_TIMEOUT_S)
                fields.add("offer_expires_at")
            else:
                session.accepted_at = now
                fields.add("accepted_at")
        elif to == St.ACTIVE:  # accepting an offer
            session.accepted_at = now
            session.offer_expires_at = None
            fields |= {"accepted_at", "offer_expires_at"}
        elif to == St.INCOMPLETE:
            session.incomplete_at = now
            session.seat = None
            session.end_requested_by = ""
            fields |= {"incomplete_at", "end_requested_by"}
        elif to == St.ENDED:
            session.ended_at = now
            session.end_reason = end_reason
            session.seat = None
            fields |= {"ended_at", "end_reason"}
        session.status = to

    if len(sessions) == 1:
        sessions[0].save(update_fields=sorted(fields))
    elif sessions:
        _bulk_write(sessions, sorted(fields))

    if left_wait:
        WaitSpan.objects.filter(session_id__in=[s.id for s in left_wait], ended_at=None).update(
            ended_at=now
        )
    if joined_wait:
        WaitSpan.objects.bulk_create(
            [WaitSpan(session=s, ticket=s.ticket, started_at=now) for s in joined_wait]
        )
        request_match_on_commit()
    if accept_offer:
        Assignment.objects.filter(session_id__in=accept_offer, outcome=Outcome.OFFERED).update(
            outcome=Outcome.ACCEPTED, accepted_at=now
        )
    if settle_offer:
        stamp = {
            Outcome.DECLINED: "declined_at",
            Outcome.EXPIRED: "expired_at",
        }.get(offer_outcome, "cancelled_at")
        Assignment.objects.filter(session_id__in=settle_offer, outcome=Outcome.OFFERED).update(
            outcome=offer_outcome, **{stamp: now}
        )
    for agent_id in sorted(released):
        agent = Agent.objects.select_for_update().get(pk=agent_id)
        agent_services.seats_released(agent=agent, seat_ids=released[agent_id], now=now)

    estimate = _Estimate()
    _publish_queue_changed(
        joined=[s.ticket for s in joined_wait if s.ticket is not None],
        left=[s.ticket for s in left_wait if s.ticket is not None],
        estimate=estimate,
    )
    for session in sessions:
        prev = previous_agent[session.id]
        publish_session_state(
            session, agent_ids=[prev] if prev is not None else [], estimate=estimate
        )
        if to == St.ENDED:
            publish_on_commit(
                session_group(session.id),
                {"type": SESSION_ENDED, "session_id": str(session.id), "reason": end_reason},
            )
            if prev is not None:
                publish_on_commit(
                    agent_group(prev),
                    {"type": SESSION_ENDED, "session_id": str(session.id), "reason": end_reason},
                )


def _bulk_write(sessions: Sequence[ChatSession], names: Sequence[str]) -> None:
    """One UPDATE for a batch: columns equal across the batch are set once, the others come
    from parallel arrays (Django's bulk_update builds a CASE per row and column, which cost the
    matcher more CPU than all its queries together)."""
    meta = ChatSession._meta
    sets: list[str] = []
    params: list[object] = []
    arrays: list[tuple[str, str, list[object]]] = []
    for name in names:
        model_field = meta.get_field(name)
        column = model_field.column
        values = [
            model_field.get_db_prep_save(getattr(s, model_field.attname), connection)
            for s in sessions
        ]
        if all(v == values[0] for v in values):
            sets.append(f'"{column}" = %s')
            params.append(values[0])
        else:
            arrays.append(
                (
                    column,
                    model_field.rel_db_type(connection)
                    if model_field.is_relation
                    else model_field.db_type(connection) or "text",
                    values,
                )
            )
            sets.append(f'"{column}" = v."{column}"')
    ids = [s.pk for s in sessions]
    unnest = ", ".join(
        ["unnest(%s::uuid[]) AS id"] + [f'unnest(%s::{t}[]) AS "{c}"' for c, t, _ in arrays]
    )
    # Identifiers come from the model's metadata, values are all parameters.
    sql = (
        f"UPDATE {meta.db_table} AS s SET {', '.join(sets)} "  # noqa: S608
        f"FROM (SELECT {unnest}) AS v WHERE s.id = v.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, ids, *[values for _, _, values in arrays]])


def _lock_session(session_id: UUID | str) -> ChatSession:
    session = ChatSession.objects.select_for_update().filter(pk=session_id).first()
    if session is None:
        raise NotFound()
    return session


def _check_party(session: ChatSession, *, user: AbstractBaseUser, role: str) -> None:
    if role == Role.CUSTOMER:
        if session.customer_id != user.pk:
            raise NotFound()
    elif role == Role.AGENT:
        if session.agent_id is None or session.agent_id != _agent_id_of(user):
            raise NotFound()
    else:
        raise Forbidden("Only the customer or the session's agent may do this.")


def _agent_id_of(user: AbstractBaseUser) -> int | None:
    return Agent.objects.filter(user_id=user.pk).values_list("pk", flat=True).first()


def _live_session_error(customer_id: int) -> DomainError | None:
    live = (
        ChatSession.objects.filter(customer_id=customer_id, status__in=LIVE_STATUSES)
        .values_list("id", flat=True)
        .first()
    )
    if live is None:
        return None
    return DomainError(
        "live_session_exists",
        "You already have an open chat.",
        http_status=409,
        session_id=str(live),
    )


# --- named operations --------------------------------------------------------------------------


def session_create(*, customer: AbstractBaseUser, topic: str = "") -> ChatSession:
    """A new session, WAITING with a new ticket; the matcher runs after commit."""
    topic = (topic or "").strip()
    if len(topic) > 200:
        raise InvalidInput("topic_too_long", "The topic is at most 200 characters.")
    with queue_transaction() as now:
        lock_customer(customer.pk)
        error = _live_session_error(customer.pk)
        if error is not None:
            raise error
        ticket = _next_ticket()
        session = ChatSession.objects.create(
            customer_id=customer.pk,
            status=St.WAITING,
            topic=topic,
            ticket=ticket,
            created_at=now,
            enqueued_at=now,
            last_customer_activity_at=now,
        )
        WaitSpan.objects.create(session=session, ticket=ticket, started_at=now)
        request_match_on_commit()
        _publish_queue_changed(joined=[ticket])
        publish_session_state(session)
    return session


def message_post(
    *, session_id: UUID, author: AbstractBaseUser, role: str, client_msg_id: UUID, body: str
) -> MessagePost:
    """Store a message with the next ``seq`` of its session; idempotent on ``client_msg_id``.

    The common case (a valid body, the author is the session's party, the status allows it, a
    new ``client_msg_id``) is ONE statement in autocommit (:func:`_message_insert`). Anything
    else takes the locking path, which finds the exact answer: the stored message of a repeated
    ``client_msg_id`` or the same errors as before.
    """
    text = (body or "").strip()
    if text and len(text) <= settings.MAX_MESSAGE_CHARS and role in (Role.CUSTOMER, Role.AGENT):
        message = _message_insert(
            session_id=session_id, author=author, role=role, client_msg_id=client_msg_id, text=text
        )
        if message is not None:
            _publish_message(message)
            return MessagePost(message=message, created=True)
    return _message_post_locked(
        session_id=session_id, author=author, role=role, client_msg_id=client_msg_id, text=text
    )


def _publish_message(message: Message) -> None:
    # The session group only: the agent console joins the group of every session offered to or
    # seated with it before it relays the state that seats it (agents/consumers.py).
    event = {
        "type": MESSAGE,
        "session_id": str(message.session_id),
        "message": message_payload(message),
    }
    publish_on_commit(session_group(message.session_id), event)


@functools.cache
def _message_insert_sql(role: str) -> str:
    """The statement of :func:`_message_insert`, with the models' table and column names."""
    q = connection.ops.quote_name
    s, m, a = ChatSession._meta, Message._meta, Agent._meta

    def sc(name: str) -> str:
        return q(s.get_field(name).column)

    sets = [f"{sc('last_seq')} = {sc('last_seq')} + 1"]
    if role == Role.CUSTOMER:
        sets.append(f"{sc('last_customer_activity_at')} = %(now)s")
        party = f"{sc('customer')} = %(user_id)s"
    else:
        agent_of_user = (
            f"SELECT {q(a.pk.column)} FROM {q(a.db_table)} "  # noqa: S608
            f"WHERE {q(a.get_field('user').column)} = %(user_id)s"
        )
        party = f"{sc('agent')} = ({agent_of_user})"
    columns = ", ".join(
        q(m.get_field(name).column)
        for name in ("session", "seq", "sender", "author", "body", "client_msg_id", "created_at")
    )
    # Identifiers come from the models' metadata, values are all parameters.
    return (
        f"WITH bumped AS (UPDATE {q(s.db_table)} SET {', '.join(sets)} "  # noqa: S608
        f"WHERE {sc('id')} = %(session_id)s AND {sc('status')} = ANY(%(statuses)s) AND {party} "
        f"RETURNING {sc('id')} AS session_id, {sc('last_seq')} AS seq) "
        f"INSERT INTO {q(m.db_table)} ({columns}) "
        "SELECT session_id, seq, %(sender)s, %(user_id)s, %(body)s, %(client_msg_id)s, %(now)s "
        f"FROM bumped RETURNING {q(m.pk.column)}, {q(m.get_field('seq').column)}"
    )


def _message_insert(
    *, session_id: UUID, author: AbstractBaseUser, role: str, client_msg_id: UUID, text: str
) -> Message | None:
    """The common path: bump ``last_seq`` and insert the message in one statement.

    The UPDATE only matches when the author is the session's party for ``role`` and the status
    allows posting; its row lock serialises ``seq`` (a concurrent post waits and then reads the
    bumped value). None when it stored nothing: no such session, not a party, closed, or the
    ``client_msg_id`` is already stored (the unique constraint fails the statement, which rolls
    back its UPDATE too; see docs/architecture.md).
    """
    sql = _message_insert_sql(role)
    now = timezone.now()
    params = {
        "session_id": session_id,
        "user_id": author.pk,
        "statuses": [str(s) for s in (LIVE_STATUSES if role == Role.CUSTOMER else (St.ACTIVE,))],
        "sender": str(role),
        "body": text,
        "client_msg_id": client_msg_id,
        "now": now,
    }
    try:
        # Inside a caller's transaction a failed statement would break it: a savepoint there.
        # In autocommit (every request, socket frame and task) the statement is its own
        # transaction: no BEGIN, no COMMIT.
        savepoint = transaction.atomic() if connection.in_atomic_block else nullcontext()
        with savepoint, connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
    except IntegrityError:
        return None  # the same client_msg_id, stored by an earlier or concurrent post
    if row is None:
        return None
    return Message(
        id=row[0],
        session_id=session_id,
        seq=row[1],
        sender=role,
        author_id=author.pk,
        body=text,
        client_msg_id=client_msg_id,
        created_at=now,
    )


def _message_post_locked(
    *, session_id: UUID, author: AbstractBaseUser, role: str, client_msg_id: UUID, text: str
) -> MessagePost:
    """The locking path: the exact reason a post was not stored by :func:`_message_insert`
    (and a post that is valid after all, e.g. when the session changed in between)."""
    with transaction.atomic():
        session = _lock_session(session_id)
        _check_party(session, user=author, role=role)
        existing = Message.objects.filter(session=session, client_msg_id=client_msg_id).first()
        if existing is not None:
            return MessagePost(message=existing, created=False)
        if role == Role.CUSTOMER and session.status not in LIVE_STATUSES:
            raise DomainError("session_closed", "This chat is closed.")
        if role == Role.AGENT and session.status != St.ACTIVE:
            raise DomainError("not_active", "This chat is not active.")
        if not text:
            raise InvalidInput("body_empty", "The message is empty.")
        if len(text) > settings.MAX_MESSAGE_CHARS:
            raise InvalidInput(
                "body_too_long",
                f"A message is at most {settings.MAX_MESSAGE_CHARS} characters.",
                max_chars=settings.MAX_MESSAGE_CHARS,
            )
        now = timezone.now()
        session.last_seq += 1
        fields = ["last_seq"]
        if role == Role.CUSTOMER:
            session.last_customer_activity_at = now
            fields.append("last_customer_activity_at")
        session.save(update_fields=fields)
        message = Message.objects.create(
            session=session,
            seq=session.last_seq,
            sender=role,
            author_id=author.pk,
            body=text,
            client_msg_id=client_msg_id,
            created_at=now,
        )
        _publish_message(message)
    return MessagePost(message=message, created=True)


def _other(role: str) -> str:
    return Role.AGENT if role == Role.CUSTOMER else Role.CUSTOMER


def _end_request_locked(session: ChatSession, *, role: str, now: datetime) -> ChatSession:
    if session.status == St.ENDED:
        return session
    if role == Role.CUSTOMER and session.status in (St.WAITING, St.OFFERED, St.INCOMPLETE):
        _session_transition([session], St.ENDED, now=now, end_reason=EndReason.CANCELLED)
        return session
    if session.status != St.ACTIVE:
        raise DomainError("not_active", "Only an active chat can be ended this way.")
    if session.end_requested_by == _other(role):
        _session_transition([session], St.ENDED, now=now, end_reason=EndReason.MUTUAL)
        return session
    if session.end_requested_by == role:
        return session
    session.end_requested_by = role
    session.save(update_fields=["end_requested_by"])
    event = {"type": END_REQUESTED, "session_id": str(session.id), "by": role}
    publish_on_commit(session_group(session.id), event)
    if session.agent_id is not None:
        publish_on_commit(agent_group(session.agent_id), event)
    publish_session_state(session)
    return session


def session_end_request(*, session_id: UUID, user: AbstractBaseUser, role: str) -> ChatSession:
    """Ask to end. A customer's WAITING/OFFERED (or INCOMPLETE) session ends at once
    ("cancelled"); an ACTIVE one waits for the other side (or ends, if they asked first)."""
    with queue_transaction() as now:
        session = _lock_session(session_id)
        _check_party(session, user=user, role=role)
        return _end_request_locked(session, role=role, now=now)


def session_end_confirm(*, session_id: UUID, user: AbstractBaseUser, role: str) -> ChatSession:
    """Confirm the other side's end request: ENDED ("mutual"), the seat frees."""
    with queue_transaction() as now:
        session = _lock_session(session_id)
        _check_party(session, user=user, role=role)
        if session.status == St.ENDED:
            return session
        if session.status != St.ACTIVE or session.end_requested_by != _other(role):
            raise DomainError("no_end_request", "The other side has not asked to end.")
        _session_transition([session], St.ENDED, now=now, end_reason=EndReason.MUTUAL)
        return session


def session_end_decline(*, session_id: UUID, user: AbstractBaseUser, role: str) -> ChatSession:
    """Decline the other side's end request: the chat goes on."""
    with transaction.atomic():
        session = _lock_session(session_id)
        _check_party(session, user=user, role=role)
        if session.status != St.ACTIVE or session.end_requested_by != _other(role):
            raise DomainError("no_end_request", "The other side has not asked to end.")
        session.end_requested_by = ""
        session.save(update_fields=["end_requested_by"])
        event = {"type": END_DECLINED, "session_id": str(session.id), "by": role}
        publish_on_commit(session_group(session.id), event)
        if session.agent_id is not None:
            publish_on_commit(agent_group(session.agent_id), event)
        publish_session_state(session)
        return session


def session_end(*, session_id: UUID, user: AbstractBaseUser, role: str) -> ChatSession:
    """REST's one end call: requests the end, or confirms the other side's request."""
    return session_end_request(session_id=session_id, user=user, role=role)


def session_close_idle(*, session_id: UUID, agent: Agent) -> ChatSession:
    """The agent closes an ACTIVE chat after the customer was silent for IDLE_CLOSE_S."""
    with queue_transaction() as now:
        session = _lock_session(session_id)
        if session.agent_id != agent.pk:
            raise NotFound()
        if session.status == St.ENDED:
            return session
        if session.status != St.ACTIVE:
            raise DomainError("not_active", "Only an active chat can be closed.")
        last = session.last_customer_activity_at or session.accepted_at or session.created_at
        idle = (now - last).total_seconds()
        if idle < settings.IDLE_CLOSE_S:
            raise DomainError(
                "customer_not_idle",
                "The customer has not been silent long enough.",
                idle_s=int(idle),
                idle_close_s=settings.IDLE_CLOSE_S,
            )
        _session_transition([session], St.ENDED, now=now, end_reason=EndReason.IDLE_CLOSED)
        return session


def session_close_by_lead(*, session_id: UUID, lead: AbstractBaseUser) -> ChatSession:
    """A lead closes any live or incomplete session ("closed_by_lead")."""
    agent_services._require_lead(lead, agent_services.INTERVENE_SESSION)
    with queue_transaction() as now:
        session = _lock_session(session_id)
        if session.status == St.ENDED:
            return session
        _session_transition([session], St.ENDED, now=now, end_reason=EndReason.CLOSED_BY_LEAD)
        return session


def session_requeue_by_lead(*, session_id: UUID, lead: AbstractBaseUser) -> ChatSession:
    """A lead puts an OFFERED/ACTIVE session back in the queue with its old ticket."""
    agent_services._require_lead(lead, agent_services.INTERVENE_SESSION)
    with queue_transaction() as now:
        session = _lock_session(session_id)
        if session.status not in SEATED_STATUSES:
            raise DomainError("not_seated", "Only an offered or active chat can be requeued.")
        _session_transition([session], St.WAITING, now=now)
        return session


def sessions_requeue_locked(*, sessions: Sequence[ChatSession], now: datetime) -> None:
    """Back to WAITING with their old tickets (agent gone, agent forced offline).

    Caller: inside a queue transaction holding the sessions' locks (and possibly their agent's).
    """
    _session_transition(list(sessions), St.WAITING, now=now)


def session_resume(*, session_id: UUID, customer: AbstractBaseUser) -> ChatSession:
    """INCOMPLETE -> WAITING (old ticket within RESUME_KEEP_PLACE_S of losing it, else a new
    one); a live session is returned unchanged; ENDED or too old -> ``not_resumable``."""
    with queue_transaction() as now:
        lock_customer(customer.pk)
        session = _lock_session(session_id)
        if session.customer_id != customer.pk:
            raise NotFound()
        if session.status in LIVE_STATUSES:
            return session
        if not is_resumable(session, now=now):
            raise DomainError("not_resumable", "This chat can no longer be resumed.")
        error = _live_session_error(customer.pk)
        if error is not None:
            raise error
        lost = session.incomplete_at or now
        keep = (now - lost).total_seconds() <= settings.RESUME_KEEP_PLACE_S
        session.customer_left_at = None
        session.last_customer_activity_at = now
        session.save(update_fields=["customer_left_at", "last_customer_activity_at"])
        _session_transition([session], St.WAITING, now=now, new_ticket=not keep)
        return session


# --- presence ----------------------------------------------------------------------------------


def customer_connected(
    *, session_id: UUID, user: AbstractBaseUser, channel_name: str
) -> ChatSession:
    """A customer socket opened on the session: presence is back (the grace clock stops)."""
    with transaction.atomic():
        session = _lock_session(session_id)
        if session.customer_id != user.pk:
            raise NotFound()
        now = timezone.now()
        Connection.objects.update_or_create(
            channel_name=channel_name,
            defaults={
                "role": Role.CUSTOMER,
                "user_id": user.pk,
                "session": session,
                "agent": None,
                "connected_at": now,
                "last_seen_at": now,
            },
        )
        if session.customer_left_at is not None:
            session.customer_left_at = None
            session.save(update_fields=["customer_left_at"])
            if session.status in LIVE_STATUSES:
                publish_session_state(session)
    return session


def customer_disconnected(*, channel_name: str, at: datetime | None = None) -> None:
    """A customer socket closed (or went stale): the last one starts the grace clock."""
    with transaction.atomic():
        conn = Connection.objects.filter(channel_name=channel_name, role=Role.CUSTOMER).first()
        if conn is None:
            return
        session_id = conn.session_id
        if session_id is None:
            conn.delete()
            return
        session = _lock_session(session_id)
        conn.delete()
        if Connection.objects.filter(session_id=session_id, role=Role.CUSTOMER).exists():
            return
        if session.customer_left_at is None:
            session.customer_left_at = at or timezone.now()
            session.save(update_fields=["customer_left_at"])
            if session.status in LIVE_STATUSES:
                publish_session_state(session)


def connections_heartbeat(*, channel_names: Sequence[str]) -> int:
    """All these sockets are alive: one UPDATE for a whole process's sockets, every
    PRESENCE_HEARTBEAT_S (chat.consumers.Presence). Returns how many rows it refreshed.

    The timestamp is this process's clock, like the cutoff of matching's
    ``sweep_stale_connections`` and the ``at`` it hands on as the time they left.
    """
    if not channel_names:
        return 0
    return Connection.objects.filter(channel_name__in=channel_names).update(
        last_seen_at=timezone.now()
    )


def session_customer_gone(*, session_id: UUID, gone_before: datetime) -> bool:
    """Customer grace: gone since before ``gone_before`` -> INCOMPLETE (seat frees).

    Rechecked under the lock, so two beats do no harm.
    """
    with queue_transaction() as now:
        session = (
            ChatSession.objects.select_for_update(skip_locked=True).filter(pk=session_id).first()
        )
        if (
            session is None
            or session.status not in LIVE_STATUSES
            or session.customer_left_at is None
            or session.customer_left_at > gone_before
        ):
            return False
        _session_transition([session], St.INCOMPLETE, now=now)
        return True


def session_expire_incomplete(*, session_id: UUID, created_before: datetime) -> bool:
    """An INCOMPLETE session older than HISTORY_DAYS can no longer be resumed: ENDED "expired"."""
    with queue_transaction() as now:
        session = (
            ChatSession.objects.select_for_update(skip_locked=True).filter(pk=session_id).first()
        )
        if (
            session is None
            or session.status != St.INCOMPLETE
            or session.created_at > created_before
        ):
            return False
        _session_transition([session], St.ENDED, now=now, end_reason=EndReason.EXPIRED)
        return True
