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
