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
    def _save(obj: User, create: bool, extracted: Any, **kwargs: Any) -> None:  # noqa: N805
        if create:
            obj.save()


class CustomerFactory(UserFactory):
    username = factory.Sequence(lambda n: f"customer{n}")


class LeadFactory(UserFactory):
    username = factory.Sequence(lambda n: f"lead{n}")
    is_staff = True


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
