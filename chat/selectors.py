"""Reads of sessions and messages, with the permission check in one place."""

from __future__ import annotations

from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser

from agents.models import Agent
from chat.errors import NotFound
from chat.models import ChatSession, Message, Role


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
