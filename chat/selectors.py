"""Reads of sessions and messages, with the permission check in one place."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection

from agents.models import Agent
from chat.errors import NotFound
from chat.models import ChatSession, Message, Role, SessionStatus


def _get(session_id: UUID | str) -> ChatSession:
    try:
        return ChatSession.objects.select_related("agent", "customer").get(pk=session_id)
    except (ChatSession.DoesNotExist, ValueError) as exc:
        raise NotFound() from exc


def session_get_for_customer(*, session_id: UUID | str, user: AbstractBaseUser) -> ChatSession:
    """The customer's own session (NotFound for anyone else's: the two look the same)."""
    session = _get(session_id)
    if session.customer_id != user.pk:
        raise NotFound()
    return session


def session_get_for_agent(*, session_id: UUID | str, agent: Agent) -> ChatSession:
    """A session currently or last assigned to ``agent`` (NotFound otherwise)."""
    session = _get(session_id)
    if session.agent_id is None or session.agent_id != agent.pk:
        raise NotFound()
    return session


def session_get_for_user(
    *, session_id: UUID | str, user: AbstractBaseUser
) -> tuple[ChatSession, Role]:
    """The session and the caller's role in it: its customer, or its assigned agent."""
    session = _get(session_id)
    if session.customer_id == user.pk:
        return session, Role.CUSTOMER
    agent_id = Agent.objects.filter(user_id=user.pk).values_list("pk", flat=True).first()
    if agent_id is not None and session.agent_id == agent_id:
        return session, Role.AGENT
    raise NotFound()


def messages_after(*, session_id: UUID | str, after_seq: int, limit: int) -> list[Message]:
    """Messages with ``seq > after_seq`` in seq order, at most ``limit`` (caller checked access)."""
    return list(
        Message.objects.filter(session_id=session_id, seq__gt=max(0, after_seq)).order_by("seq")[
            : max(0, limit)
        ]
    )


@dataclass(frozen=True)
class QueueSpot:
    """A session's queue ticket and its position (as chat.payloads.queue_position counts it)."""

    ticket: int | None
    position: int | None


# rank() is 1 + the number of waiting sessions with a smaller ticket: exactly the COUNT(*) of
# chat.payloads.queue_position, computed for the whole queue in one pass of chat_queue_idx.
_QUEUE_SPOTS = """
WITH queue AS (
    SELECT id, rank() OVER (ORDER BY ticket) AS position
    FROM chat_chatsession
    WHERE status = %(waiting)s AND ticket IS NOT NULL
)
SELECT s.id, s.ticket,
       CASE WHEN s.status = %(offered)s THEN 1 ELSE q.position END
FROM chat_chatsession s
LEFT JOIN queue q ON q.id = s.id
WHERE s.id = ANY(%(ids)s)
"""


def queue_spots(*, session_ids: Sequence[UUID]) -> dict[UUID, QueueSpot]:
    """Ticket and queue position of each of ``session_ids`` in one query (sessions that do not
    exist are left out). The position equals ``queue_position(session)``: 1 for an offered
    session, 1 + the waiting sessions ahead for a waiting one, None otherwise.

    The presence beat heals the positions its waiting sockets keep from queue.changed events
    with it (no permission check: each socket checked its session when it opened).
    """
    if not session_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            _QUEUE_SPOTS,
            {
                "waiting": SessionStatus.WAITING.value,
                "offered": SessionStatus.OFFERED.value,
                "ids": list(session_ids),
            },
        )
        return {
            session_id: QueueSpot(ticket=ticket, position=position)
            for session_id, ticket, position in cursor.fetchall()
        }
