"""The customer's session history page: keyset pagination in a fixed number of queries.

A page costs the same queries whatever its size: the sessions (with their agents), their last
messages in one query, and, only when the page holds a waiting session (a customer has at most
one live session), its position and the wait estimate.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import F, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from chat.errors import InvalidInput
from chat.models import ChatSession, Message, SessionStatus
from chat.payloads import queue_position, session_payload


@dataclass(frozen=True)
class Cursor:
    """Position after the last row of a page: (created_at, id) of that row."""

    created_at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        raw = f"{self.created_at.isoformat()}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            moment, _, ident = raw.partition("|")
            created_at = parse_datetime(moment)
            if created_at is None:
                raise ValueError(moment)
            return cls(created_at=created_at, id=uuid.UUID(ident))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise InvalidInput("invalid_cursor", "This cursor is not one we gave out.") from None


@dataclass(frozen=True)
class SessionPage:
    results: list[dict[str, Any]]
    next_cursor: Cursor | None


def session_history_page(
    *, user: AbstractBaseUser, cursor: Cursor | None, limit: int, now: datetime | None = None
) -> SessionPage:
    """The caller's sessions created in the last HISTORY_DAYS, newest first."""
    now = now or timezone.now()
    queryset = (
        ChatSession.objects.filter(
            customer=user, created_at__gte=now - timedelta(days=settings.HISTORY_DAYS)
        )
        .select_related("agent")
        .order_by("-created_at", "-id")
    )
    if cursor is not None:
        queryset = queryset.filter(
            Q(created_at__lt=cursor.created_at) | Q(created_at=cursor.created_at, id__lt=cursor.id)
        )
    rows = list(queryset[: limit + 1])
    has_more = len(rows) > limit
    sessions = rows[:limit]

    with_messages = [s.id for s in sessions if s.last_seq]
    last_messages: dict[uuid.UUID, Message] = {}
    if with_messages:
        last_messages = {
            m.session_id: m
            for m in Message.objects.filter(
                session_id__in=with_messages, seq=F("session__last_seq")
            )
        }
    seconds_per_position: float | None = None
    waiting = [s for s in sessions if s.status in (SessionStatus.WAITING, SessionStatus.OFFERED)]
    if waiting:
        from matching.selectors import seconds_per_queue_position

        seconds_per_position = seconds_per_queue_position()

    results = []
    for session in sessions:
        position = queue_position(session) if session in waiting else None
        payload = session_payload(
            session,
            last_message=last_messages.get(session.id),
            position=position,
            seconds_per_position=seconds_per_position,
        )
        # seq is contiguous per session and messages are only ever purged with their session.
        payload["message_count"] = session.last_seq
        results.append(payload)
    next_cursor = (
        Cursor(created_at=sessions[-1].created_at, id=sessions[-1].id) if has_more else None
    )
    return SessionPage(results=results, next_cursor=next_cursor)
