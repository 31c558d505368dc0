"""factory_boy factories: users, customers, leads, agents (seats via the service), sessions.

Agents and sessions are made through the domain services, so they start in a state the services
could have produced (seats equal to capacity, a ticket from the sequence, a queue span).
"""

from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth.models import User

from agents import services as agent_services
from agents.models import Agent
from chat import services as chat_services
from chat.models import ChatSession


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", "dayone")

    @factory.post_generation
    def _save(obj: User, create: bool, extracted: Any, **kwargs: Any) -> None:
        if create:
            obj.save()


class CustomerFactory(UserFactory):
    username = factory.Sequence(lambda n: f"customer{n}")


class LeadFactory(UserFactory):
    """A support lead: staff in the "Support lead" group (its permissions, nothing more)."""

    username = factory.Sequence(lambda n: f"lead{n}")
    is_staff = True

    @factory.post_generation
    def support_lead_group(self, create: bool, extracted: object, **kwargs: object) -> None:
        from history.services import ensure_support_lead_group

        self.groups.add(ensure_support_lead_group())


class AgentFactory(factory.Factory):
    """An OFFLINE agent with ``capacity`` seats, made by ``agent_create``."""

    class Meta:
        model = Agent

    user = factory.SubFactory(UserFactory, username=factory.Sequence(lambda n: f"agent{n}"))
    display_name = factory.Sequence(lambda n: f"Agent {n}")
    capacity = None

    @classmethod
    def _create(cls, model_class: type[Agent], *args: Any, **kwargs: Any) -> Agent:
        user = kwargs.pop("user")
        user.is_staff = True
        user.save(update_fields=["is_staff"])
        return agent_services.agent_create(user=user, **kwargs)


class SessionFactory(factory.Factory):
    """A WAITING session made by ``session_create`` (the matcher runs only after commit)."""

    class Meta:
        model = ChatSession

    customer = factory.SubFactory(CustomerFactory)
    topic = factory.Faker("sentence", nb_words=4)

    @classmethod
    def _create(cls, model_class: type[ChatSession], *args: Any, **kwargs: Any) -> ChatSession:
        return chat_services.session_create(**kwargs)


def available_agent(**kwargs: Any) -> Agent:
    """An agent who started the shift (AVAILABLE, every seat free since now)."""
    agent = AgentFactory(**kwargs)
    return agent_services.agent_shift_start(agent=agent)


def offered_session(*, agent: Agent | None = None, **kwargs: Any) -> tuple[ChatSession, Agent]:
    """A session OFFERED to ``agent`` (a new available agent by default). The queue and the seat
    queue must hold nothing ahead of them."""
    from matching.services import match_run

    agent = agent or available_agent()
    session = SessionFactory(**kwargs)
    match_run()
    session.refresh_from_db()
    assert session.status == "offered"
    assert session.agent_id == agent.pk
    return session, agent


def active_session(*, agent: Agent | None = None, **kwargs: Any) -> tuple[ChatSession, Agent]:
    """A session ACTIVE with ``agent`` (offered, then accepted)."""
    from matching.services import offer_accept

    session, agent = offered_session(agent=agent, **kwargs)
    session = offer_accept(session_id=session.id, agent=agent)
    agent.refresh_from_db()
    return session, agent


def incomplete_session(**kwargs: Any) -> ChatSession:
    """An ACTIVE session whose customer left past the grace period (INCOMPLETE)."""
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    session, _agent = active_session(**kwargs)
    channel = f"test.{session.id.hex}"
    chat_services.customer_connected(
        session_id=session.id, user=session.customer, channel_name=channel
    )
    left = timezone.now() - timedelta(seconds=settings.CUSTOMER_GRACE_S + 1)
    chat_services.customer_disconnected(channel_name=channel, at=left)
    assert chat_services.session_customer_gone(session_id=session.id, gone_before=timezone.now())
    session.refresh_from_db()
    return session


def ended_session(**kwargs: Any) -> ChatSession:
    """A session the customer cancelled while waiting (ENDED, "cancelled")."""
    session = SessionFactory(**kwargs)
    return chat_services.session_end_request(
        session_id=session.id, user=session.customer, role="customer"
    )


class GroupTap:
    """Listens to channel-layer groups on the real Redis layer and collects the event dicts."""

    def __init__(self, *groups: str) -> None:
        from asgiref.sync import async_to_sync
        from channels.layers import get_channel_layer

        self._layer = get_channel_layer()
        self._sync = async_to_sync
        self._groups = groups
        self.channel: str = async_to_sync(self._layer.new_channel)()
        for group in groups:
            async_to_sync(self._layer.group_add)(group, self.channel)

    def events(self, *, timeout: float = 0.3) -> list[dict[str, Any]]:
        """Every event received until ``timeout`` seconds pass without one; then stops listening
        (call it once, at the end)."""
        import asyncio

        from chat import events

        events.flush(10.0)  # what this process published so far is in the layer

        async def drain() -> list[dict[str, Any]]:
            got: list[dict[str, Any]] = []
            while True:
                try:
                    message = await asyncio.wait_for(self._layer.receive(self.channel), timeout)
                except TimeoutError:
                    return got
                got.append(message["event"])

        async def drain_and_leave() -> list[dict[str, Any]]:
            got = await drain()
            # Leave the groups, or the layer keeps feeding a channel nobody reads (until the
            # group expires, a day later) and logs "over capacity" for every event.
            for group in self._groups:
                await self._layer.group_discard(group, self.channel)
            return got

        return self._sync(drain_and_leave)()
