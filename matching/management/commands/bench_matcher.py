"""``manage.py bench_matcher``: measure the matcher (figures for docs/domain.md).

Creates its own users (``bench-*``), agents and sessions through the services, measures, and
deletes them again. Run it on a scratch database with an empty queue, never in production:

    DATABASE_URL=postgres://…/scratch python manage.py migrate
    DATABASE_URL=postgres://…/scratch python manage.py bench_matcher --waiting 1000 --agents 500

Measures:
1. burst: ``--waiting`` sessions and ``--agents`` available agents (capacity 2), one matcher run
   pairs them all: run time, commit, post-commit publishing, matches/s;
2. steady: every seat busy and ``--waiting`` customers queued; a seat frees, the matcher pairs one:
   transaction time p50/p99 (and of a run with nothing to pair);
3. after commit: the extra time a queue-changing call pays when the matcher runs inline after its
   commit, against handing it to Celery (enqueue time; and, with ``--celery``, the latency until
   the pairing exists, which needs a worker consuming CELERY_QUEUE).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from agents import services as agent_services
from agents.models import Agent
from chat import services as chat_services
from chat.models import LIVE_STATUSES, ChatSession, SessionStatus
from matching import services as matching_services
from matching.locking import lock_queue_exclusive


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


@contextmanager
def _after_commit(mode: str) -> Iterator[None]:
    before = getattr(settings, "MATCH_AFTER_COMMIT", "inline")
    settings.MATCH_AFTER_COMMIT = mode
    try:
        yield
    finally:
        settings.MATCH_AFTER_COMMIT = before


class Command(BaseCommand):
    help = "Measure the matcher: burst pairing, steady-state transaction time, after-commit cost."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--waiting", type=int, default=1000)
        parser.add_argument("--agents", type=int, default=500)
        parser.add_argument("--bursts", type=int, default=3)
        parser.add_argument("--samples", type=int, default=300)
        parser.add_argument("--celery", action="store_true", help="also time the Celery path")

    def handle(self, *args: Any, **opts: Any) -> None:
        if (
            ChatSession.objects.filter(status__in=LIVE_STATUSES)
            .exclude(customer__username__startswith="bench-")
            .exists()
        ):
            raise CommandError("The queue is not empty: run this on a scratch database.")
        self._cleanup()
        try:
            self._run(**opts)
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        # Sessions first: a seat or agent cannot vanish under a live session (a constraint).
        ChatSession.objects.filter(customer__username__startswith="bench-").delete()
        User.objects.filter(username__startswith="bench-").delete()

    def _users(self, prefix: str, count: int, **flags: bool) -> list[User]:
        return User.objects.bulk_create(
            [User(username=f"bench-{prefix}{n}", **flags) for n in range(count)]
        )

    def _run(
        self, *, waiting: int, agents: int, bursts: int, samples: int, celery: bool, **_: Any
    ) -> None:
        out = self.stdout.write
        out(f"bench_matcher: {waiting} waiting sessions, {agents} agents x 2 seats")
        lead = self._users("lead", 1, is_staff=True)[0]
        with _after_commit("off"):
            agent_rows = [
                agent_services.agent_create(user=u, display_name=u.username, capacity=2)
                for u in self._users("agent", agents, is_staff=True)
            ]
        customers = self._users("customer", agents * 2 + waiting)

        # 1. Bursts: every seat free, the whole queue waiting, one run pairs them.
        for n in range(bursts):
            with _after_commit("off"):
                for agent in agent_rows:
                    agent_services.agent_shift_start(agent=agent)
                for customer in customers[:waiting]:
                    chat_services.session_create(customer=customer)
            made, in_tx, publishing = self._timed_run()
            out(
                f"burst {n + 1}: {made} pairs; transaction (lock to commit) {_ms(in_tx)} = "
                f"{made / in_tx:.0f} matches/s; publishing after commit {_ms(publishing)} "
                f"(overall {made / (in_tx + publishing):.0f} matches/s)"
            )
            with _after_commit("off"):
                for session in ChatSession.objects.filter(status__in=LIVE_STATUSES):
                    chat_services.session_close_by_lead(session_id=session.id, lead=lead)
                for agent in Agent.objects.filter(user__username__startswith="bench-agent"):
                    agent_services.agent_shift_end(agent=agent)

        # 2. Steady state: all seats busy, `waiting` more customers queued.
        with _after_commit("off"):
            for agent in agent_rows:
                agent_services.agent_shift_start(agent=agent)
            for customer in customers[: agents * 2]:
                chat_services.session_create(customer=customer)
            matching_services.match_run()
            for customer in customers[agents * 2 : agents * 2 + waiting]:
                chat_services.session_create(customer=customer)
        queued = ChatSession.objects.filter(status=SessionStatus.WAITING).count()
        out(f"steady state: {queued} waiting, every seat busy")
        seated = list(
            ChatSession.objects.filter(status=SessionStatus.OFFERED).values_list("id", flat=True)
        )
        one: list[float] = []
        one_publish: list[float] = []
        idle: list[float] = []
        with _after_commit("off"):
            for sid in seated[:samples]:
                _, in_tx, _ = self._timed_run()
                idle.append(in_tx)
                chat_services.session_close_by_lead(session_id=sid, lead=lead)
                made, in_tx, publishing = self._timed_run()
                one.append(in_tx)
                one_publish.append(publishing)
                assert made == 1
        out(self._dist("matcher transaction, one pair (seat freed)", one))
        out(self._dist("its events published after commit", one_publish))
        out(self._dist("matcher transaction, nothing to pair", idle))

        # 3. The price of the after-commit run, paid by the call that changed the queue.
        freeing = list(
            ChatSession.objects.filter(status=SessionStatus.OFFERED).values_list("id", flat=True)
        )
        costs: dict[str, list[float]] = {}
        for mode in ("off", "inline", "celery"):
            batch = freeing[: samples // 3]
            freeing = freeing[samples // 3 :]
            with _after_commit(mode):
                costs[mode] = self._time_each(
                    batch,
                    lambda sid: chat_services.session_close_by_lead(session_id=sid, lead=lead),
                )
            if mode == "celery":
                # Without a worker the tasks just queue up; with one they run. Either way the
                # tick will pair what is left; pair it now so the next figures start clean.
                matching_services.match_run()
        for mode, values in costs.items():
            out(self._dist(f"session close by lead, after-commit matcher={mode}", values))
        if celery:
            self._celery_latency(lead, samples=min(50, samples))

    def _timed_run(self) -> tuple[int, float, float]:
        """One matcher run: (pairs, lock-to-commit seconds, after-commit publishing seconds)."""
        marks: dict[str, float] = {}
        t0 = time.perf_counter()
        with transaction.atomic():
            # Registered first, so it runs first after the commit, before the events go out.
            transaction.on_commit(lambda: marks.setdefault("commit", time.perf_counter()))
            lock_queue_exclusive(wait=True)
            made = matching_services._match_locked(now=timezone.now())
        t1 = time.perf_counter()
        return len(made), marks["commit"] - t0, t1 - marks["commit"]

    def _time_each(self, items: list[Any], call: Callable[[Any], object]) -> list[float]:
        values = []
        for item in items:
            t0 = time.perf_counter()
            call(item)
            values.append(time.perf_counter() - t0)
        return values

    def _celery_latency(self, lead: User, *, samples: int) -> None:
        latencies = []
        with _after_commit("celery"):
            for _ in range(samples):
                head = (
                    ChatSession.objects.filter(status=SessionStatus.WAITING)
                    .order_by("ticket")
                    .values_list("id", flat=True)
                    .first()
                )
                busy = (
                    ChatSession.objects.filter(status=SessionStatus.OFFERED)
                    .values_list("id", flat=True)
                    .first()
                )
                if head is None or busy is None:
                    break
                t0 = time.perf_counter()
                chat_services.session_close_by_lead(session_id=busy, lead=lead)
                deadline = t0 + 5
                while time.perf_counter() < deadline:
                    status = ChatSession.objects.filter(pk=head).values_list("status", flat=True)
                    if status.first() == SessionStatus.OFFERED:
                        latencies.append(time.perf_counter() - t0)
                        break
                    time.sleep(0.0005)
                else:
                    self.stdout.write("celery: no pairing within 5 s (is a worker running?)")
                    return
        self.stdout.write(self._dist("seat freed -> pairing exists, via Celery", latencies))

    def _dist(self, label: str, values: list[float]) -> str:
        if not values:
            return f"{label}: no samples"
        return (
            f"{label}: n={len(values)} p50 {_ms(_pct(values, 0.5))} p99 {_ms(_pct(values, 0.99))}"
            f" mean {_ms(statistics.fmean(values))} max {_ms(max(values))}"
        )
