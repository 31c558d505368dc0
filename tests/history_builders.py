"""Rows as the services leave them, for the history and admin tests (created at ``timezone.now()``,
so time-machine places them in the past)."""

from __future__ import annotations

import itertools
import uuid

from django.contrib.auth.models import Group, User
from django.db import connection
from django.utils import timezone

from agents.models import Agent, AgentStatus, CustomerDataAccess, Seat
from chat.models import ChatSession, Connection, Message, Role, SessionStatus
from history.services import SUPPORT_LEAD_GROUP, ensure_support_lead_group
from matching.models import Assignment, Outcome

_names = itertools.count(1)


def user(prefix: str = "customer", *, staff: bool = False) -> User:
    return User.objects.create_user(
        username=f"{prefix}_h{next(_names)}", password="pw", is_staff=staff
    )


def lead() -> User:
    person = user("lead", staff=True)
    ensure_support_lead_group()
    person.groups.add(Group.objects.get(name=SUPPORT_LEAD_GROUP))
    return person


def agent(*, status: str = AgentStatus.OFFLINE, capacity: int = 2, name: str = "") -> Agent:
    person = user("agent", staff=True)
    now = timezone.now()
    made = Agent.objects.create(
        user=person,
        display_name=name or person.username.title(),
        status=status,
        capacity=capacity,
        status_changed_at=now,
    )
    for index in range(capacity):
        Seat.objects.create(
            agent=made,
            index=index,
            free_since=now if status == AgentStatus.AVAILABLE else None,
        )
    return made


def next_ticket() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval('chat_queue_ticket')")
        return cursor.fetchone()[0]


def session(
    *,
    customer: User | None = None,
    status: str = SessionStatus.ENDED,
    on: Agent | None = None,
    messages: int = 0,
    topic: str = "",
) -> ChatSession:
    """A session in ``status``; seated statuses take ``on``'s first free seat."""
    now = timezone.now()
    seat = None
    if on is not None:
        seat = (
            Seat.objects.filter(agent=on)
            .exclude(sessions__status__in=(SessionStatus.OFFERED, SessionStatus.ACTIVE))
            .order_by("index")
            .first()
        )
        if status in (SessionStatus.OFFERED, SessionStatus.ACTIVE):
            Seat.objects.filter(pk=seat.pk).update(free_since=None)
    made = ChatSession.objects.create(
        customer=customer or user(),
        status=status,
        topic=topic,
        ticket=next_ticket(),
        agent=on,
        seat=seat,
        created_at=now,
        enqueued_at=now,
        offered_at=now if on else None,
        accepted_at=now if on and status != SessionStatus.OFFERED else None,
        ended_at=now if status == SessionStatus.ENDED else None,
        end_reason="mutual" if status == SessionStatus.ENDED else "",
        incomplete_at=now if status == SessionStatus.INCOMPLETE else None,
    )
    for _ in range(messages):
        message(made)
    return made


def message(chat: ChatSession, *, body: str = "hello", sender: str = Role.CUSTOMER) -> Message:
    chat.last_seq += 1
    ChatSession.objects.filter(pk=chat.pk).update(last_seq=chat.last_seq)
    return Message.objects.create(
        session=chat,
        seq=chat.last_seq,
        sender=sender,
        author=chat.customer if sender == Role.CUSTOMER else None,
        body=body,
        client_msg_id=uuid.uuid4(),
        created_at=timezone.now(),
    )


def socket(chat: ChatSession) -> Connection:
    now = timezone.now()
    return Connection.objects.create(
        channel_name=f"specific.{uuid.uuid4().hex}",
        role=Role.CUSTOMER,
        user=chat.customer,
        session=chat,
        connected_at=now,
        last_seen_at=now,
    )


def assignment(chat: ChatSession, on: Agent, *, outcome: str = Outcome.ACCEPTED) -> Assignment:
    now = timezone.now()
    return Assignment.objects.create(
        session=chat,
        agent=on,
        seat=on.seats.first(),
        ticket=chat.ticket or 0,
        enqueued_at=chat.enqueued_at or now,
        free_since=now,
        offered_at=now,
        accepted_at=now if outcome == Outcome.ACCEPTED else None,
        outcome=outcome,
    )


def access(chat: ChatSession, on: Agent, *, what: str = "profile") -> CustomerDataAccess:
    return CustomerDataAccess.objects.create(
        agent=on, customer=chat.customer, session=chat, what=what, at=timezone.now()
    )
