"""Reads about agents: who is an agent, what the console shows, which sessions an agent holds."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from agents.models import Agent, Seat
from chat.models import SEATED_STATUSES, ChatSession
from chat.payloads import iso


def agent_for_user(*, user: AbstractBaseUser | AnonymousUser | None) -> Agent | None:
    """The agent profile of ``user``, or None for customers, leads and anonymous users."""
    if user is None or not user.is_authenticated:
        return None
    return Agent.objects.filter(user_id=user.pk).first()


def sessions_of_agent(*, agent: Agent) -> list[ChatSession]:
    """The agent's OFFERED and ACTIVE sessions, oldest offer first."""
    return list(
        ChatSession.objects.filter(agent=agent, status__in=SEATED_STATUSES)
        .select_related("customer", "agent")
        .order_by("offered_at", "id")
    )


def agent_state_payload(*, agent: Agent) -> dict[str, Any]:
    """The ``agent.state`` object of PROTOCOL.md (plus display_name, after_chats: additive)."""
    seats = list(Seat.objects.filter(agent_id=agent.pk).order_by("index"))
    held = dict(
        ChatSession.objects.filter(agent_id=agent.pk, status__in=SEATED_STATUSES).values_list(
            "seat_id", "id"
        )
    )
    return {
        "status": agent.status,
        "capacity": agent.capacity,
        "seats": [
            {
                "session_id": str(held[seat.pk]) if seat.pk in held else None,
                "free_since": iso(seat.free_since),
            }
            for seat in seats
        ],
        "display_name": agent.display_name,
        "after_chats": agent.after_chats or None,
        "status_changed_at": iso(agent.status_changed_at),
    }
