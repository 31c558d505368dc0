"""The assignment log: every offer the matcher made and what became of it."""

from __future__ import annotations

from django.db import models


class Outcome(models.TextChoices):
    OFFERED = "offered", "Offered (pending)"
    ACCEPTED = "accepted", "Accepted"
    DECLINED = "declined", "Declined"
    EXPIRED = "expired", "Expired"
    CANCELLED = "cancelled", "Cancelled (customer left or lead intervened)"


class Assignment(models.Model):
    session = models.ForeignKey(
        "chat.ChatSession", on_delete=models.CASCADE, related_name="assignments"
    )
    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="assignments")
    seat = models.ForeignKey(
        "agents.Seat", null=True, on_delete=models.SET_NULL, related_name="assignments"
    )
    ticket = models.BigIntegerField()
    enqueued_at = models.DateTimeField()  # when the customer's current wait began
    free_since = models.DateTimeField()  # the seat's place in the seat queue
    offered_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    declined_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=12, choices=Outcome.choices, default=Outcome.OFFERED)

    class Meta:
        ordering = ["-offered_at", "-id"]
        indexes = [
            models.Index(fields=["offered_at"], name="matching_offered_idx"),
            models.Index(fields=["session", "-offered_at"], name="matching_session_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.session_id} → {self.agent_id} ({self.outcome})"


class WaitSpan(models.Model):
    """One stretch of time a session spent in the customer queue (WAITING), with its ticket.

    Evidence for ``verify_fairness``: together with the assignment log it tells who was waiting
    at the moment of every pairing. Opened when a session enters WAITING, closed when it leaves.
    """

    session = models.ForeignKey(
        "chat.ChatSession", on_delete=models.CASCADE, related_name="wait_spans"
    )
    ticket = models.BigIntegerField()
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["started_at", "id"]
        indexes = [
            models.Index(fields=["ticket", "started_at"], name="matching_waitspan_ticket_idx"),
            models.Index(fields=["started_at"], name="matching_waitspan_start_idx"),
            models.Index(
                fields=["session"],
                condition=models.Q(ended_at__isnull=True),
                name="matching_waitspan_open_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"ticket {self.ticket} waiting from {self.started_at:%H:%M:%S}"


class FreeSpan(models.Model):
    """One stretch of time a seat of an AVAILABLE agent stood free (in the seat queue).

    ``started_at`` is the seat's ``free_since``. Opened when the seat enters the seat queue,
    closed when it is taken or its agent stops being available.
    """

    seat = models.ForeignKey("agents.Seat", on_delete=models.CASCADE, related_name="free_spans")
    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="+")
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["started_at", "id"]
        indexes = [
            models.Index(fields=["started_at", "seat"], name="matching_freespan_start_idx"),
            models.Index(
                fields=["seat"],
                condition=models.Q(ended_at__isnull=True),
                name="matching_freespan_open_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"seat {self.seat_id} free from {self.started_at:%H:%M:%S}"
