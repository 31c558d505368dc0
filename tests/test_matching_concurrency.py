"""Several OS processes hammer the services and the matcher on one database.

Each process has its own PostgreSQL connection (the test database, passed as DATABASE_NAME) and
does random operations as customers, agents and leads, while one more process plays the beat
(the tick: sweeps and matcher). Afterwards verify_fairness finds nothing, the database
constraints never had to refuse anything (no IntegrityError), nothing deadlocked, and the seats
are consistent.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import time
import traceback
from typing import Any

import pytest

WORKERS = 4
OPS_PER_WORKER = int(os.environ.get("DOMAIN_CONCURRENCY_OPS", "300"))
CUSTOMERS = 48
AGENTS = 8
TUNABLES = {
    "OFFER_TIMEOUT_S": "1",
    "CUSTOMER_GRACE_S": "1",
    "AGENT_GRACE_S": "2",
    "IDLE_CLOSE_S": "1",
    "RESUME_KEEP_PLACE_S": "2",
    "AUTO_ACCEPT": "0",
    "PRESENCE_HEARTBEAT_S": "15",
}


def _setup_django(db_name: str) -> None:
    os.environ["DATABASE_NAME"] = db_name
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dayone_chat.settings.test")
    os.environ.update(TUNABLES)
    import django

    django.setup()


def _worker(db_name: str, seed: int, ops: int, queue: Any) -> None:
    """Random operations; reports counts of each outcome (and tracebacks of surprises)."""
    _setup_django(db_name)
    import uuid
    from datetime import timedelta

    from django.contrib.auth.models import User
    from django.db import IntegrityError
    from django.utils import timezone

    from agents import services as agent_services
    from agents.models import Agent
    from chat import services as chat_services
    from chat.errors import DomainError
    from chat.models import ChatSession
    from matching import services as matching_services

    rng = random.Random(seed)
    customers = list(User.objects.filter(username__startswith="cc-", is_staff=False))
    agents = list(Agent.objects.select_related("user"))
    lead = User.objects.get(username="cc-lead")
    counts: dict[str, int] = {"ok": 0, "refused": 0, "integrity": 0, "other": 0}
    surprises: list[str] = []

    def session_of(user: User) -> ChatSession | None:
        return ChatSession.objects.filter(customer=user).order_by("-created_at").first()

    def customer_op() -> None:
        user = rng.choice(customers)
        session = session_of(user)
        roll = rng.random()
        if session is None or roll < 0.25:
            chat_services.session_create(customer=user)
        elif roll < 0.5:
            cmid = uuid.UUID(int=rng.randrange(6)) if rng.random() < 0.3 else uuid.uuid4()
            chat_services.message_post(
                session_id=session.id, author=user, role="customer", client_msg_id=cmid, body="hi"
            )
        elif roll < 0.6:
            chat_services.session_end(session_id=session.id, user=user, role="customer")
        elif roll < 0.7:
            chat_services.session_resume(session_id=session.id, customer=user)
        elif roll < 0.85:
            channel = f"cc.{seed}.{user.pk}"
            chat_services.customer_connected(session_id=session.id, user=user, channel_name=channel)
        else:
            chat_services.customer_disconnected(
                channel_name=f"cc.{seed}.{user.pk}", at=timezone.now() - timedelta(seconds=2)
            )

    def agent_op() -> None:
        agent = rng.choice(agents)
        mine = list(ChatSession.objects.filter(agent=agent, status__in=["offered", "active"]))
        roll = rng.random()
        if mine and roll < 0.45:
            session = rng.choice(mine)
            if session.status == "offered":
                if rng.random() < 0.8:
                    matching_services.offer_accept(session_id=session.id, agent=agent)
                else:
                    matching_services.offer_decline(session_id=session.id, agent=agent)
            elif rng.random() < 0.5:
                chat_services.message_post(
                    session_id=session.id,
                    author=agent.user,
                    role="agent",
                    client_msg_id=uuid.uuid4(),
                    body="hello",
                )
            elif rng.random() < 0.5:
                chat_services.session_end(session_id=session.id, user=agent.user, role="agent")
            else:
                chat_services.session_close_idle(session_id=session.id, agent=agent)
        elif roll < 0.75:
            agent_services.agent_shift_start(agent=agent)
        elif roll < 0.85:
            agent_services.agent_break_request(agent=agent)
        elif roll < 0.93:
            agent_services.agent_break_end(agent=agent)
        elif roll < 0.97:
            agent_services.agent_shift_end(agent=agent)
        else:
            channel = f"ca.{seed}.{agent.pk}"
            agent_services.agent_connected(agent=agent, channel_name=channel)
            agent_services.agent_disconnected(
                channel_name=channel, at=timezone.now() - timedelta(seconds=1)
            )

    def lead_op() -> None:
        session = ChatSession.objects.filter(status__in=["offered", "active"]).order_by("?").first()
        if session is None:
            return
        if rng.random() < 0.5:
            chat_services.session_requeue_by_lead(session_id=session.id, lead=lead)
        else:
            chat_services.session_close_by_lead(session_id=session.id, lead=lead)

    for _ in range(ops):
        roll = rng.random()
        op = customer_op if roll < 0.55 else agent_op if roll < 0.97 else lead_op
        try:
            op()
            counts["ok"] += 1
        except DomainError:
            counts["refused"] += 1
        except IntegrityError:
            counts["integrity"] += 1
            surprises.append(traceback.format_exc())
        except Exception:
            counts["other"] += 1
            surprises.append(traceback.format_exc())
    queue.put((counts, surprises[:3]))


def _beat(db_name: str, stop: Any, queue: Any) -> None:
    _setup_django(db_name)
    from matching import services as matching_services

    ticks, errors = 0, []
    while not stop.is_set():
        try:
            matching_services.tick()
            ticks += 1
        except Exception:
            errors.append(traceback.format_exc())
        time.sleep(0.05)
    queue.put(({"ticks": ticks, "other": len(errors)}, errors[:3]))


@pytest.mark.django_db(transaction=True)
def test_fairness_and_constraints_hold_when_processes_race():
    from django.db import connection

    from agents.models import Agent, Seat
    from chat.models import ChatSession, Message
    from matching.models import Assignment
    from matching.selectors import fairness_violations
    from tests.factories import AgentFactory, UserFactory

    for _ in range(CUSTOMERS):
        UserFactory(username=f"cc-{_}")
    UserFactory(username="cc-lead", is_staff=True)
    for _ in range(AGENTS):
        AgentFactory()
    db_name = connection.settings_dict["NAME"]
    connection.close()

    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    stop = ctx.Event()
    beat = ctx.Process(target=_beat, args=(db_name, stop, results))
    workers = [
        ctx.Process(target=_worker, args=(db_name, seed, OPS_PER_WORKER, results))
        for seed in range(WORKERS)
    ]
    started = time.monotonic()
    beat.start()
    for process in workers:
        process.start()
    reports = [results.get(timeout=240) for _ in workers]
    stop.set()
    reports.append(results.get(timeout=60))
    for process in [*workers, beat]:
        process.join(timeout=30)
    elapsed = time.monotonic() - started

    totals: dict[str, int] = {}
    surprises: list[str] = []
    for counts, errors in reports:
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
        surprises.extend(errors)
    print(f"\nconcurrency: {totals} in {elapsed:.1f} s")
    assert totals["integrity"] == 0, surprises
    assert totals["other"] == 0, surprises
    assert totals["ok"] > WORKERS * OPS_PER_WORKER // 3
    assert totals["ticks"] > 0

    # Let the last offers and grace periods run out, then one tick settles everything.
    from matching.services import tick

    time.sleep(2.1)
    tick()
    from matching.models import FreeSpan, WaitSpan

    # What happened, counted from the database: pairings, messages, queue entries and seat frees.
    happened = {
        "assignments": Assignment.objects.count(),
        "messages": Message.objects.count(),
        "queue_entries": WaitSpan.objects.count(),
        "seat_frees": FreeSpan.objects.count(),
    }
    print(f"concurrency: recorded {happened} ({sum(happened.values())} in all)")
    # Enough pairings that the race was real, not vacuous; how many depends on how fast the
    # machine ran the processes (79 on a loaded 2-core CI machine, 300+ on a quiet one).
    assert happened["assignments"] > 25
    assert fairness_violations() == []
    seated = list(
        ChatSession.objects.filter(status__in=["offered", "active"]).values_list(
            "agent_id", "seat_id"
        )
    )
    assert len({seat for _, seat in seated}) == len(seated)
    for agent in Agent.objects.all():
        assert sum(1 for a, _ in seated if a == agent.pk) <= agent.capacity
    for seat in Seat.objects.select_related("agent"):
        held = any(x == seat.pk for _, x in seated)
        assert (seat.free_since is not None) == (seat.agent.status == "available" and not held)
    for session in ChatSession.objects.all():
        seqs = list(Message.objects.filter(session=session).values_list("seq", flat=True))
        assert seqs == list(range(1, len(seqs) + 1))
        assert session.last_seq == len(seqs)
    # Nothing can be paired that the matcher left unpaired.
    waiting = ChatSession.objects.filter(status="waiting").exists()
    free = Seat.objects.exclude(free_since=None).exists()
    assert not (waiting and free)
