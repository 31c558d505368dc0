"""Realistic, deterministic DayOne demo data for the built-in customer-data provider."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta

from django.contrib.auth.models import User
from django.utils import timezone

from agents.models import CustomerProfile, Order, OrderItem, Transaction

FIRST_NAMES = [
    "Amara", "Ben", "Chloé", "Diego", "Elif", "Farah", "Gustav", "Hana", "Ivan", "Jade",
    "Kofi", "Lena", "Mateo", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq",
]  # fmt: skip
LAST_NAMES = [
    "Okafor", "Lindqvist", "Moreau", "Hernández", "Yılmaz", "Haddad", "Berg", "Sato",
    "Petrov", "Nguyen", "Mensah", "Fischer", "Rossi", "Kowalski", "Farouk", "Sharma",
]  # fmt: skip
CITIES = [("Austin", "US"), ("Leeds", "GB"), ("Lyon", "FR"), ("Porto", "PT"), ("Oslo", "NO")]
PRODUCTS = [
    ("DO-BUDS-2", "DayOne Buds 2 (wireless earbuds)", 8900),
    ("DO-WATCH-S", "DayOne Watch S, 41 mm", 24900),
    ("DO-CHG-30", "30 W USB-C charger", 2900),
    ("DO-CASE-PH", "Phone case, midnight", 1900),
    ("DO-SPK-M", "DayOne Speaker Mini", 5900),
    ("DO-CBL-2M", "USB-C cable, 2 m", 1400),
    ("DO-TAB-11", "DayOne Tab 11, 128 GB", 44900),
    ("DO-STAND", "Aluminium laptop stand", 3900),
]
ORDER_STATUSES = [
    Order.Status.DELIVERED,
    Order.Status.DELIVERED,
    Order.Status.DELIVERED,
    Order.Status.SHIPPED,
    Order.Status.PLACED,
    Order.Status.CANCELLED,
    Order.Status.RETURNED,
]


def seed_customer_data(user: User, *, now: datetime | None = None) -> None:
    """Give ``user`` a profile, a few orders with items and their transactions (idempotent)."""
    if CustomerProfile.objects.filter(user=user).exists():
        return
    now = now or timezone.now()
    rng = random.Random(user.username)  # the same customer always gets the same history
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    city, country = rng.choice(CITIES)
    if not user.first_name:
        user.first_name, user.last_name = first, last
        user.save(update_fields=["first_name", "last_name"])
    CustomerProfile.objects.create(
        user=user,
        full_name=f"{user.first_name} {user.last_name}",
        email=user.email or f"{user.username}@example.com",
        phone=f"+1 555 {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
        tier=rng.choice(["standard", "standard", "plus", "premium"]),
        customer_since=date(2019, 1, 1) + timedelta(days=rng.randint(0, 2200)),
        city=city,
        country=country,
    )
    for n in range(rng.randint(2, 6)):
        placed = now - timedelta(days=rng.randint(1, 200), minutes=rng.randint(0, 1440))
        status = rng.choice(ORDER_STATUSES)
        picks = rng.sample(PRODUCTS, rng.randint(1, 3))
        lines = [(sku, name, price, rng.randint(1, 2)) for sku, name, price in picks]
        total = sum(price * qty for _, _, price, qty in lines)
        order = Order.objects.create(
            customer=user,
            number=f"DO-{user.pk:05d}-{n + 1:03d}",
            status=status,
            placed_at=placed,
            total_cents=total,
        )
        OrderItem.objects.bulk_create(
            OrderItem(order=order, sku=sku, name=name, quantity=qty, unit_price_cents=price)
            for sku, name, price, qty in lines
        )
        Transaction.objects.create(
            customer=user,
            reference=f"TX-{user.pk:05d}-{n + 1:03d}-P",
            kind=Transaction.Kind.PAYMENT,
            amount_cents=total,
            created_at=placed + timedelta(minutes=1),
            order=order,
            method=rng.choice(["visa •••• 4242", "mastercard •••• 5100", "paypal", "apple pay"]),
        )
        if status in (Order.Status.CANCELLED, Order.Status.RETURNED):
            Transaction.objects.create(
                customer=user,
                reference=f"TX-{user.pk:05d}-{n + 1:03d}-R",
                kind=Transaction.Kind.REFUND,
                amount_cents=-total,
                created_at=placed + timedelta(days=rng.randint(2, 10)),
                order=order,
            )
