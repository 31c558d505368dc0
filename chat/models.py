"""Chat sessions and their messages.

Every status change goes through ``chat.services`` (one transition function with its table of
allowed transitions); nothing here changes state by itself. PostgreSQL enforces what it can:
one live session per customer, one live session per seat, a live session always on a seat,
``seq`` and ``client_msg_id`` unique per session.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class SessionStatus(models.TextChoices):
    WAITING = "waiting", "Waiting"
    OFFERED = "offered", "Offered"
    ACTIVE = "active", "Active"
    INCOMPLETE = "incomplete", "Incomplete"
    ENDED = "ended", "Ended"


LIVE_STATUSES = (SessionStatus.WAITING, SessionStatus.OFFERED, SessionStatus.ACTIVE)
SEATED_STATUSES = (SessionStatus.OFFERED, SessionStatus.ACTIVE)


class EndReason(models.TextChoices):
    MUTUAL = "mutual", "Ended by mutual agreement"
    IDLE_CLOSED = "idle_closed", "Closed by the agent after customer silence"
    EXPIRED = "expired", "Incomplete for too long"
    CLOSED_BY_LEAD = "closed_by_lead", "Closed by a support lead"
    CANCELLED = "cancelled", "The customer left the queue before an agent joined"


class Role(models.TextChoices):
    CUSTOMER = "customer", "Customer"
    AGENT = "agent", "Agent"
    SYSTEM = "system", "System"


class ChatSession(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_sessions"
    )
    status = models.CharField(max_length=16, choices=SessionStatus.choices)
    topic = models.CharField(max_length=200, blank=True, default="")
    # Queue ticket: a value of the PostgreSQL sequence ``chat_queue_ticket`` taken on arrival.
    # Kept after matching (the assignment log and a decline/timeout reuse it).
    ticket = models.BigIntegerField(null=True, blank=True)
    agent = models.ForeignKey(
        "agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions"
    )
    seat = models.ForeignKey(
        "agents.Seat", null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions"
    )

    created_at = models.DateTimeField()
    enqueued_at = models.DateTimeField(null=True, blank=True)  # start of the current wait
    offered_at = models.DateTimeField(null=True, blank=True)
    offer_expires_at = models.DateTimeField(null=True, blank=True)
    accepted_at = models.DateTimeField(null=True, blank=True)
    incomplete_at = models.DateTimeField(null=True, blank=True)  # also: when it lost its place
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=16, choices=EndReason.choices, blank=True, default="")
    end_requested_by = models.CharField(max_length=8, choices=Role.choices, blank=True, default="")

    # Presence: null while at least one customer socket is open (or none ever opened).
    customer_left_at = models.DateTimeField(null=True, blank=True)
    last_customer_activity_at = models.DateTimeField(null=True, blank=True)
    last_seq = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["customer"],
                condition=Q(status__in=LIVE_STATUSES),
                name="chat_one_live_session_per_customer",
            ),
            models.UniqueConstraint(
                fields=["seat"],
                condition=Q(status__in=SEATED_STATUSES),
                name="chat_one_live_session_per_seat",
            ),
            models.CheckConstraint(
                condition=~Q(status__in=SEATED_STATUSES)
                | Q(seat__isnull=False, agent__isnull=False),
                name="chat_seated_session_has_seat",
            ),
            models.CheckConstraint(
                condition=~Q(status=SessionStatus.WAITING) | Q(ticket__isnull=False),
                name="chat_waiting_session_has_ticket",
            ),
        ]
        indexes = [
            models.Index(fields=["ticket"], condition=Q(status="waiting"), name="chat_queue_idx"),
            models.Index(fields=["customer", "-created_at"], name="chat_customer_history_idx"),
            models.Index(fields=["created_at"], name="chat_created_idx"),
            models.Index(fields=["status"], name="chat_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_STATUSES


class Message(models.Model):
    id = models.BigAutoField(primary_key=True)
    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="messages")
    seq = models.PositiveIntegerField()
    sender = models.CharField(max_length=8, choices=Role.choices)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    body = models.TextField()
    client_msg_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["session", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["session", "seq"], name="chat_message_seq_unique"),
            models.UniqueConstraint(
                fields=["session", "client_msg_id"], name="chat_message_client_id_unique"
            ),
        ]
        indexes = [models.Index(fields=["created_at"], name="chat_message_created_idx")]

    def __str__(self) -> str:
        return f"{self.session_id}#{self.seq}"


class Connection(models.Model):
    """One open socket, so presence survives a daphne process that dies without saying goodbye.

    Consumers register on connect and remove the row on disconnect; their process refreshes
    ``last_seen_at`` of all its rows every ``PRESENCE_HEARTBEAT_S`` (chat.consumers.Presence);
    a sweep treats rows not refreshed for three heartbeats as closed.
    """

    channel_name = models.CharField(max_length=200, unique=True)
    role = models.CharField(max_length=8, choices=Role.choices)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    session = models.ForeignKey(
        ChatSession, null=True, blank=True, on_delete=models.CASCADE, related_name="connections"
    )
    agent = models.ForeignKey(
        "agents.Agent", null=True, blank=True, on_delete=models.CASCADE, related_name="connections"
    )
    connected_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["last_seen_at"], name="chat_connection_seen_idx")]

    def __str__(self) -> str:
        return f"{self.role} socket {self.channel_name}"
