"""Agents, their seats and shifts; DayOne customer demo data and the access log of its reads.

An agent has ``capacity`` seats (rows of :class:`Seat`, kept equal to the capacity by
``agents.services``). A live session sits on exactly one seat and a seat holds at most one live
session (constraints on ``chat.ChatSession``), so an agent can never hold more live sessions than
it has seats.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class AgentStatus(models.TextChoices):
    OFFLINE = "offline", "Offline"
    AVAILABLE = "available", "Available"
    BREAK_PENDING = "break_pending", "Break after current chats"
    ON_BREAK = "on_break", "On break"
    AWAY = "away", "Away (missed an offer)"


class AfterChats(models.TextChoices):
    """What a BREAK_PENDING agent becomes once the last chat ends."""

    BREAK = "on_break", "Break"
    OFFLINE = "offline", "End of shift"


def default_capacity() -> int:
    return settings.AGENT_CAPACITY


class Agent(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agent"
    )
    display_name = models.CharField(max_length=100)
    status = models.CharField(
        max_length=16, choices=AgentStatus.choices, default=AgentStatus.OFFLINE
    )
    after_chats = models.CharField(
        max_length=16, choices=AfterChats.choices, blank=True, default=""
    )
    capacity = models.PositiveSmallIntegerField(default=default_capacity)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    # Presence of the console: null while a console socket is open (or never opened).
    disconnected_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["display_name"]
        constraints = [
            models.CheckConstraint(condition=Q(capacity__gte=1), name="agents_capacity_positive"),
        ]

    def __str__(self) -> str:
        return self.display_name


class Seat(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="seats")
    index = models.PositiveSmallIntegerField()
    # When this seat last became free for an AVAILABLE agent: the later of "its last session
    # ended / went incomplete" and "the agent became AVAILABLE". Null while held or unavailable.
    free_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["agent", "index"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "index"], name="agents_seat_index_unique"),
        ]
        indexes = [
            models.Index(
                fields=["free_since", "id"],
                condition=Q(free_since__isnull=False),
                name="agents_seat_queue_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.agent} seat {self.index + 1}"


class Shift(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="shifts")
    scheduled_start = models.DateTimeField(null=True, blank=True)
    scheduled_end = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-scheduled_start", "-started_at"]
        indexes = [models.Index(fields=["scheduled_end"], name="agents_shift_end_idx")]

    def __str__(self) -> str:
        return f"{self.agent} {self.scheduled_start or self.started_at}"


# --- DayOne customer data: the built-in provider's tables (filled by seed_demo) ---------------


class CustomerProfile(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="dayone_profile"
    )
    full_name = models.CharField(max_length=200)
    email = models.EmailField()
    phone = models.CharField(max_length=40, blank=True)
    tier = models.CharField(max_length=20, default="standard")
    customer_since = models.DateField()
    city = models.CharField(max_length=100, blank=True)
    country = models.CharField(max_length=2, default="US")

    def __str__(self) -> str:
        return self.full_name


class Order(models.Model):
    class Status(models.TextChoices):
        PLACED = "placed", "Placed"
        SHIPPED = "shipped", "Shipped"
        DELIVERED = "delivered", "Delivered"
        CANCELLED = "cancelled", "Cancelled"
        RETURNED = "returned", "Returned"

    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="dayone_orders"
    )
    number = models.CharField(max_length=20, unique=True)
    status = models.CharField(max_length=12, choices=Status.choices)
    placed_at = models.DateTimeField()
    total_cents = models.PositiveIntegerField()
    currency = models.CharField(max_length=3, default="USD")

    class Meta:
        ordering = ["-placed_at"]

    def __str__(self) -> str:
        return self.number


class OrderItem(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="items")
    sku = models.CharField(max_length=32)
    name = models.CharField(max_length=200)
    quantity = models.PositiveSmallIntegerField()
    unit_price_cents = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"{self.quantity} x {self.name}"


class Transaction(models.Model):
    class Kind(models.TextChoices):
        PAYMENT = "payment", "Payment"
        REFUND = "refund", "Refund"
        CHARGEBACK = "chargeback", "Chargeback"

    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="dayone_transactions"
    )
    reference = models.CharField(max_length=32, unique=True)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    amount_cents = models.IntegerField()
    currency = models.CharField(max_length=3, default="USD")
    created_at = models.DateTimeField()
    order = models.ForeignKey(
        Order, null=True, blank=True, on_delete=models.SET_NULL, related_name="transactions"
    )
    method = models.CharField(max_length=40, default="card")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.reference


class CustomerDataAccess(models.Model):
    """Every read of a customer's DayOne data by an agent (the access log)."""

    class What(models.TextChoices):
        PROFILE = "profile", "Profile"
        ORDERS = "orders", "Orders"
        TRANSACTIONS = "transactions", "Transactions"

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="data_reads")
    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    session = models.ForeignKey(
        "chat.ChatSession", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    what = models.CharField(max_length=16, choices=What.choices)
    at = models.DateTimeField()
    ok = models.BooleanField(default=True)

    class Meta:
        ordering = ["-at"]
        verbose_name_plural = "customer data accesses"
        indexes = [models.Index(fields=["at"], name="agents_access_at_idx")]

    def __str__(self) -> str:
        return f"{self.agent} read {self.what} of {self.customer} at {self.at:%Y-%m-%d %H:%M}"
