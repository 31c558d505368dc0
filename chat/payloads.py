"""The wire shapes of PROTOCOL.md: the session object and the message object.

One place builds them, for REST answers, socket frames and events alike.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from chat.models import ChatSession, Message, SessionStatus


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def message_payload(message: Message) -> dict[str, Any]:
    return {
        "seq": message.seq,
        "sender": message.sender,
        "body": message.body,
        "created_at": iso(message.created_at),
        "client_msg_id": str(message.client_msg_id) if message.client_msg_id else None,
    }


def is_resumable(session: ChatSession, *, now: datetime | None = None) -> bool:
    """An incomplete session can be resumed while it is younger than HISTORY_DAYS."""
    if session.status != SessionStatus.INCOMPLETE:
        return False
    now = now or timezone.now()
    return session.created_at > now - timedelta(days=settings.HISTORY_DAYS)


def queue_position(session: ChatSession) -> int | None:
    """1 for the head of the queue (an offered session is at the head); None unless waiting."""
    if session.status == SessionStatus.OFFERED:
        return 1
    if session.status != SessionStatus.WAITING or session.ticket is None:
        return None
    ahead = ChatSession.objects.filter(
        status=SessionStatus.WAITING, ticket__lt=session.ticket
    ).count()
    return ahead + 1


def session_payload(
    session: ChatSession,
    *,
    last_message: Message | None = None,
    position: int | None = None,
    seconds_per_position: float | None = None,
    for_agent: bool = False,
) -> dict[str, Any]:
    """The session object. Callers that list many sessions pass ``last_message`` and
    ``position`` they fetched in bulk; otherwise they are looked up here."""
    if position is None and session.status in (SessionStatus.WAITING, SessionStatus.OFFERED):
        position = queue_position(session)
    if last_message is None and session.last_seq:
        last_message = session.messages.filter(seq=session.last_seq).first()
    if seconds_per_position is None and position is not None:
        from matching.selectors import seconds_per_queue_position

        seconds_per_position = seconds_per_queue_position()
    estimated = (
        round(position * seconds_per_position)
        if position is not None and seconds_per_position is not None
        else None
    )
    payload: dict[str, Any] = {
        "id": str(session.id),
        "status": session.status,
        "topic": session.topic,
        "created_at": iso(session.created_at),
        "ended_at": iso(session.ended_at),
        "end_reason": session.end_reason or None,
        "agent": {"display_name": session.agent.display_name}
        if session.agent_id and session.agent
        else None,
        "position": position,
        "estimated_wait_s": estimated,
        "last_seq": session.last_seq,
        "last_message": message_payload(last_message) if last_message else None,
        "resumable": is_resumable(session),
        # Extensions of v1 (additive): who asked to end, and whether the customer is connected.
        "end_requested_by": session.end_requested_by or None,
        "customer_connected": session.customer_left_at is None,
    }
    if for_agent:
        customer = session.customer
        payload["customer"] = {"display_name": customer.get_full_name() or customer.username}
    return payload
