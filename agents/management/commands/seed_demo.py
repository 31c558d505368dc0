"""``manage.py seed_demo``: demo accounts and DayOne data for local runs and tests (idempotent)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from agents.demo_data import seed_customer_data
from agents.models import Agent, Seat


class Command(BaseCommand):
    help = "Create agent1..agentA, customer1..customerC, lead1 and DayOne demo data (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--agents", type=int, default=5)
        parser.add_argument("--customers", type=int, default=20)
        parser.add_argument("--password", default="dayone")

    @transaction.atomic
    def handle(
        self, *args: Any, agents: int, customers: int, password: str, **options: Any
    ) -> None:
        from history.services import ensure_support_lead_group

        def account(username: str, **flags: bool) -> tuple[User, bool]:
            user, created = User.objects.get_or_create(username=username, defaults=flags)
            if created:
                user.set_password(password)
                user.email = f"{username}@example.com"
                user.save()
            return user, created

        made = 0
        for n in range(1, agents + 1):
            user, created = account(f"agent{n}", is_staff=True)
            made += created
            agent, _ = Agent.objects.get_or_create(
                user=user,
                defaults={"display_name": f"Agent {n}", "capacity": settings.AGENT_CAPACITY},
            )
            # A new agent starts OFFLINE with one seat per unit of capacity.
            for index in range(agent.capacity):
                Seat.objects.get_or_create(agent=agent, index=index)
        for n in range(1, customers + 1):
            user, created = account(f"customer{n}")
            made += created
            seed_customer_data(user)
        lead, created = account("lead1", is_staff=True)
        made += created
        lead.groups.add(ensure_support_lead_group())
        self.stdout.write(
            f"seed_demo: {agents} agents, {customers} customers, lead1 ({made} new accounts)"
        )
