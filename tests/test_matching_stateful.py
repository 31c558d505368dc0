"""A Hypothesis state machine drives the domain services against a small reference model.

Random sequences of arrivals, disconnects and reconnects, resumes, messages (with retried ids),
accepts, declines, expiries, breaks, shift ends, ends and the passing of time. After every step
the database must agree with the model, and: no agent over capacity, no seat holding two
sessions, both queues in the model's FIFO order, every pairing the one the model predicts,
``seq`` contiguous per session, no message lost or stored twice, verify_fairness clean. The model
only ever moves along the transition tables (it asserts so), so the database did too.

After each step the on-commit callbacks (the after-commit matcher runs, the events) are run, as
a commit would; the whole example runs in one rolled-back transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection, transaction
from django.test import override_settings
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agents import services as agent_services
from agents.models import Agent, Seat
from chat import services as chat_services
from chat.errors import DomainError
from chat.models import ChatSession, Message
from matching import services as matching_services
from matching.models import Assignment
from matching.selectors import fairness_violations
from tests.factories import AgentFactory, CustomerFactory, LeadFactory

pytestmark = pytest.mark.django_db

TUNABLES = {
    "AUTO_ACCEPT": False,
    "OFFER_TIMEOUT_S": 600,
    "CUSTOMER_GRACE_S": 600,
    "AGENT_GRACE_S": 1200,
    "RESUME_KEEP_PLACE_S": 1800,
    "IDLE_CLOSE_S": 900,
    "HISTORY_DAYS": 14,
    "PRESENCE_HEARTBEAT_S": 3600,
    "MAX_MESSAGE_CHARS": 50,
}
T = TUNABLES
# Clock steps far from every threshold above, so the model's clock and the services' agree.
STEPS = [timedelta(seconds=1), timedelta(seconds=700), timedelta(hours=2), timedelta(days=15)]

SESSION_TABLE = {
    "waiting": {"offered", "active", "incomplete", "ended"},
    "offered": {"active", "waiting", "incomplete", "ended"},
    "active": {"ended", "incomplete", "waiting"},
    "incomplete": {"waiting", "ended"},
    "ended": set(),
}
AGENT_TABLE = {
    "offline": {"available"},
    "available": {"break_pending", "on_break", "offline", "away"},
    "break_pending": {"break_pending", "available", "on_break", "offline"},
    "on_break": {"available", "offline"},
    "away": {"available", "break_pending", "on_break", "offline"},
}
LIVE = {"waiting", "offered", "active"}
SEATED = {"offered", "active"}


@dataclass
class MSession:
    id: uuid.UUID
    customer: int
    ticket: int
    created_at: datetime
    status: str = "waiting"
    agent: int | None = None
    seat: int | None = None
    offer_expires: datetime | None = None
    incomplete_at: datetime | None = None
    last_activity: datetime | None = None
    left_at: datetime | None = None
    end_requested_by: str = ""
    end_reason: str = ""
    messages: list[uuid.UUID] = field(default_factory=list)
    channels: dict[str, datetime] = field(default_factory=dict)


@dataclass
class MAgent:
    id: int
    user_id: int
    seats: list[int]
    status: str = "offline"
    after_chats: str = ""
    disconnected_at: datetime | None = None
    channels: dict[str, datetime] = field(default_factory=dict)


class DomainMachine(RuleBasedStateMachine):
    # Rules pick sessions by position in ``self.sessions``, which keeps creation order: sorting
    # by id (random UUIDs) made a replayed example pick other sessions, and Hypothesis reported
    # FlakyStrategyDefinition.
    def __init__(self) -> None:
        super().__init__()
        self._overrides = override_settings(**TUNABLES)
        self._overrides.enable()
        self._traveller = time_machine.travel(datetime.now(UTC), tick=True)
        self._clock = self._traveller.start()
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        self._callbacks_from = len(connection.run_on_commit)
        self.lead = LeadFactory()
        self.customers = {c.pk: c for c in (CustomerFactory() for _ in range(4))}
        self.agents: dict[int, MAgent] = {}
        self.agent_objs: dict[int, Agent] = {}
        for capacity in (1, 2, 2):
            agent = AgentFactory(capacity=capacity)
            seats = list(
                Seat.objects.filter(agent=agent).order_by("id").values_list("id", flat=True)
            )
            self.agents[agent.pk] = MAgent(id=agent.pk, user_id=agent.user_id, seats=seats)
            self.agent_objs[agent.pk] = agent
        self.sessions: dict[uuid.UUID, MSession] = {}
        self.seat_queue: list[int] = []
        self.expected_assignments: list[tuple[uuid.UUID, int, int]] = []
        self.last_ticket = 0
        self.channel_seq = 0
        self._run_callbacks()

    def teardown(self) -> None:
        try:
            transaction.set_rollback(True)
            self._atomic.__exit__(None, None, None)
        finally:
            self._traveller.stop()
            self._overrides.disable()

    # --- plumbing ------------------------------------------------------------------------------

    def _run_callbacks(self) -> None:
        """What a commit would do: run the on-commit callbacks (matcher runs, events)."""
        pending = connection.run_on_commit
        while len(pending) > self._callbacks_from:
            _sids, func, _robust = pending.pop(self._callbacks_from)
            func()

    def _now(self) -> datetime:
        from django.utils import timezone

        return timezone.now()

    def _expect_error(self, code: str, call, **kwargs) -> None:
        with pytest.raises(DomainError) as caught:
            call(**kwargs)
        assert caught.value.code == code, (caught.value.code, code)

    # --- the model -----------------------------------------------------------------------------

    def _move(self, s: MSession, to: str) -> None:
        assert to in SESSION_TABLE[s.status], (s.status, to)
        s.status = to

    def _agent_move(self, a: MAgent, to: str, after: str = "") -> None:
        assert to in AGENT_TABLE[a.status], (a.status, to)
        if a.status == "available" and to != "available":
            self.seat_queue = [x for x in self.seat_queue if x not in a.seats]
        if to == "available" and a.status != "available":
            held = {s.seat for s in self._seated(a.id)}
            self.seat_queue += [x for x in a.seats if x not in held]
        a.status = to
        a.after_chats = after if to == "break_pending" else ""

    def _seated(self, agent_id: int) -> list[MSession]:
        return [s for s in self.sessions.values() if s.agent == agent_id and s.status in SEATED]

    def _leave_seat(self, s: MSession, to: str, now: datetime) -> None:
        """Move a seated session off its seat (to WAITING, INCOMPLETE or ENDED)."""
        a = self.agents[s.agent]
        seat = s.seat
        self._move(s, to)
        s.seat = None
        s.offer_expires = None
        if to == "waiting":
            s.agent = None
            s.end_requested_by = ""
        if a.status == "available":
            self.seat_queue.append(seat)
        elif a.status == "break_pending" and not self._seated(a.id):
            self._agent_move(a, a.after_chats)

    def _to(self, s: MSession, to: str, now: datetime, reason: str = "") -> None:
        if s.status in SEATED:
            self._leave_seat(s, to, now)
        else:
            self._move(s, to)
        if to == "incomplete":
            s.incomplete_at = now
            s.end_requested_by = ""
        if to == "ended":
            s.end_reason = reason

    def _model_match(self, now: datetime) -> None:
        waiting = sorted(
            (s for s in self.sessions.values() if s.status == "waiting"), key=lambda s: s.ticket
        )
        for s in waiting:
            if not self.seat_queue:
                return
            seat = self.seat_queue.pop(0)
            agent_id = next(a.id for a in self.agents.values() if seat in a.seats)
            self._move(s, "offered")
            s.agent, s.seat = agent_id, seat
            s.offer_expires = now + timedelta(seconds=T["OFFER_TIMEOUT_S"])
            self.expected_assignments.append((s.id, agent_id, seat))

    def _after_step(self) -> None:
        self._run_callbacks()
        self._model_match(self._now())

    def _new_channel(self) -> str:
        self.channel_seq += 1
        return f"hyp.{self.channel_seq}"

    # --- rules: customers ----------------------------------------------------------------------

    @rule(data=st.data())
    def arrive(self, data) -> None:
        cid = data.draw(st.sampled_from(sorted(self.customers)))
        live = [s for s in self.sessions.values() if s.customer == cid and s.status in LIVE]
        if live:
            self._expect_error(
                "live_session_exists", chat_services.session_create, customer=self.customers[cid]
            )
        else:
            made = chat_services.session_create(customer=self.customers[cid], topic="t")
            assert made.ticket > self.last_ticket
            self.last_ticket = made.ticket
            now = made.created_at
            self.sessions[made.id] = MSession(
                id=made.id, customer=cid, ticket=made.ticket, created_at=now, last_activity=now
            )
        self._after_step()

    @precondition(lambda self: self.sessions)
    @rule(data=st.data(), retry=st.booleans(), as_agent=st.booleans())
    def message(self, data, retry, as_agent) -> None:
        s = self.sessions[data.draw(st.sampled_from(list(self.sessions)))]
        cmid = data.draw(st.sampled_from(s.messages)) if retry and s.messages else uuid.uuid4()
        if as_agent:
            if s.agent is None:
                return
            author, role = self.agent_objs[s.agent].user, "agent"
        else:
            author, role = self.customers[s.customer], "customer"
        call = {
            "session_id": s.id,
            "author": author,
            "role": role,
            "client_msg_id": cmid,
            "body": f"m {cmid.hex[:6]}",
        }
        if cmid in s.messages:
            post = chat_services.message_post(**call)
            assert post.created is False
        elif role == "customer" and s.status not in LIVE:
            self._expect_error("session_closed", chat_services.message_post, **call)
        elif role == "agent" and s.status != "active":
            self._expect_error("not_active", chat_services.message_post, **call)
        else:
            post = chat_services.message_post(**call)
            assert post.created is True
            s.messages.append(cmid)
            if role == "customer":
                s.last_activity = post.message.created_at
        self._after_step()

    @precondition(lambda self: self.sessions)
    @rule(data=st.data())
    def customer_connects(self, data) -> None:
        s = self.sessions[data.draw(st.sampled_from(list(self.sessions)))]
        channel = self._new_channel()
        chat_services.customer_connected(
            session_id=s.id, user=self.customers[s.customer], channel_name=channel
        )
        s.channels[channel] = self._now()
        s.left_at = None
        self._after_step()

    @precondition(lambda self: any(s.channels for s in self.sessions.values()))
    @rule(data=st.data())
    def customer_disconnects(self, data) -> None:
        ids = [k for k, s in self.sessions.items() if s.channels]
        s = self.sessions[data.draw(st.sampled_from(ids))]
        channel = data.draw(st.sampled_from(sorted(s.channels)))
        chat_services.customer_disconnected(channel_name=channel)
        del s.channels[channel]
        if not s.channels and s.left_at is None:
            s.left_at = self._now()
        self._after_step()

    @precondition(lambda self: self.sessions)
    @rule(data=st.data())
    def resume(self, data) -> None:
        s = self.sessions[data.draw(st.sampled_from(list(self.sessions)))]
        call = {"session_id": s.id, "customer": self.customers[s.customer]}
        now = self._now()
        if s.status in LIVE:
            assert chat_services.session_resume(**call).status == s.status
        elif s.status == "ended" or s.created_at <= now - timedelta(days=T["HISTORY_DAYS"]):
            self._expect_error("not_resumable", chat_services.session_resume, **call)
        elif any(o.customer == s.customer and o.status in LIVE for o in self.sessions.values()):
            self._expect_error("live_session_exists", chat_services.session_resume, **call)
        else:
            back = chat_services.session_resume(**call)
            keep = (now - s.incomplete_at).total_seconds() <= T["RESUME_KEEP_PLACE_S"]
            if keep:
                assert back.ticket == s.ticket
            else:
                assert back.ticket > self.last_ticket
                self.last_ticket = back.ticket
            s.ticket = back.ticket
            self._move(s, "waiting")
            s.left_at = None
            s.last_activity = back.last_customer_activity_at
        self._after_step()

    # --- rules: ending -------------------------------------------------------------------------

    def _party(self, s: MSession, role: str):
        if role == "customer":
            return self.customers[s.customer]
        return self.agent_objs[s.agent].user if s.agent is not None else None

    @precondition(lambda self: self.sessions)
    @rule(data=st.data(), role=st.sampled_from(["customer", "agent"]))
    def end_request(self, data, role) -> None:
        s = self.sessions[data.draw(st.sampled_from(list(self.sessions)))]
        user = self._party(s, role)
        if user is None:
            return
        call = {"session_id": s.id, "user": user, "role": role}
        other = "agent" if role == "customer" else "customer"
        now = self._now()
        if s.status == "ended":
            chat_services.session_end_request(**call)
        elif role == "customer" and s.status in {"waiting", "offered", "incomplete"}:
            chat_services.session_end_request(**call)
            self._to(s, "ended", now, "cancelled")
        elif s.status != "active":
            self._expect_error("not_active", chat_services.session_end_request, **call)
        elif s.end_requested_by == other:
            chat_services.session_end_request(**call)
            self._to(s, "ended", now, "mutual")
        else:
            chat_services.session_end_request(**call)
            s.end_requested_by = role
        self._after_step()

    @precondition(lambda self: any(s.status == "active" for s in self.sessions.values()))
    @rule(data=st.data(), role=st.sampled_from(["customer", "agent"]), confirm=st.booleans())
    def end_answer(self, data, role, confirm) -> None:
        ids = [k for k, s in self.sessions.items() if s.status == "active"]
        s = self.sessions[data.draw(st.sampled_from(ids))]
        call = {"session_id": s.id, "user": self._party(s, role), "role": role}
        other = "agent" if role == "customer" else "customer"
        service = (
            chat_services.session_end_confirm if confirm else chat_services.session_end_decline
        )
        if s.end_requested_by != other:
            self._expect_error("no_end_request", service, **call)
        elif confirm:
            service(**call)
            self._to(s, "ended", self._now(), "mutual")
        else:
            service(**call)
            s.end_requested_by = ""
        self._after_step()

    @precondition(lambda self: any(s.status == "active" for s in self.sessions.values()))
    @rule(data=st.data())
    def idle_close(self, data) -> None:
        ids = [k for k, s in self.sessions.items() if s.status == "active"]
        s = self.sessions[data.draw(st.sampled_from(ids))]
        call = {"session_id": s.id, "agent": self.agent_objs[s.agent]}
        now = self._now()
        if (now - s.last_activity).total_seconds() >= T["IDLE_CLOSE_S"]:
            chat_services.session_close_idle(**call)
            self._to(s, "ended", now, "idle_closed")
        else:
            self._expect_error("customer_not_idle", chat_services.session_close_idle, **call)
        self._after_step()

    @precondition(lambda self: self.sessions)
    @rule(data=st.data(), requeue=st.booleans())
    def lead_acts(self, data, requeue) -> None:
        s = self.sessions[data.draw(st.sampled_from(list(self.sessions)))]
        call = {"session_id": s.id, "lead": self.lead}
        if requeue:
            if s.status in SEATED:
                chat_services.session_requeue_by_lead(**call)
                self._to(s, "waiting", self._now())
            else:
                self._expect_error("not_seated", chat_services.session_requeue_by_lead, **call)
        else:
            chat_services.session_close_by_lead(**call)
            if s.status != "ended":
                self._to(s, "ended", self._now(), "closed_by_lead")
        self._after_step()

    # --- rules: offers -------------------------------------------------------------------------

    @precondition(lambda self: any(s.status == "offered" for s in self.sessions.values()))
    @rule(data=st.data(), accept=st.booleans())
    def answer_offer(self, data, accept) -> None:
        ids = [k for k, s in self.sessions.items() if s.status == "offered"]
        s = self.sessions[data.draw(st.sampled_from(ids))]
        call = {"session_id": s.id, "agent": self.agent_objs[s.agent]}
        now = self._now()
        if accept and s.offer_expires <= now:
            self._expect_error("offer_expired", matching_services.offer_accept, **call)
            self._expire(s)
        elif accept:
            matching_services.offer_accept(**call)
            self._move(s, "active")
            s.offer_expires = None
        else:
            matching_services.offer_decline(**call)
            self._to(s, "waiting", now)
        self._after_step()

    def _expire(self, s: MSession) -> None:
        a = self.agents[s.agent]
        if a.status == "available":
            self._agent_move(a, "away")
        self._to(s, "waiting", self._now())

    # --- rules: agents -------------------------------------------------------------------------

    @rule(
        data=st.data(),
        op=st.sampled_from(["shift_start", "break_request", "break_end", "shift_end"]),
    )
    def agent_op(self, data, op) -> None:
        a = self.agents[data.draw(st.sampled_from(sorted(self.agents)))]
        call = getattr(agent_services, f"agent_{op}")
        busy = bool(self._seated(a.id))
        target: tuple[str, str] | str | None
        if op == "shift_start":
            target = {
                "offline": ("available", ""),
                "available": None,
                "away": ("available", ""),
            }.get(a.status, "invalid_transition")
        elif op == "break_request":
            if a.status == "on_break":
                target = None
            elif a.status == "offline":
                target = "invalid_transition"
            else:
                target = ("break_pending", "on_break") if busy else ("on_break", "")
        elif op == "break_end":
            target = (
                None
                if a.status == "available"
                else "invalid_transition"
                if a.status == "offline"
                else ("available", "")
            )
        elif a.status == "offline":
            target = None
        elif a.status == "on_break":
            target = ("offline", "")
        else:
            target = ("break_pending", "offline") if busy else ("offline", "")
        if isinstance(target, str):
            self._expect_error(target, call, agent=self.agent_objs[a.id])
        else:
            call(agent=self.agent_objs[a.id])
            if target is not None:
                self._agent_move(a, *target)
        self._after_step()

    @rule(data=st.data())
    def agent_connects(self, data) -> None:
        a = self.agents[data.draw(st.sampled_from(sorted(self.agents)))]
        channel = self._new_channel()
        agent_services.agent_connected(agent=self.agent_objs[a.id], channel_name=channel)
        a.channels[channel] = self._now()
        a.disconnected_at = None
        self._after_step()

    @precondition(lambda self: any(a.channels for a in self.agents.values()))
    @rule(data=st.data())
    def agent_disconnects(self, data) -> None:
        a = self.agents[
            data.draw(st.sampled_from(sorted(k for k, a in self.agents.items() if a.channels)))
        ]
        channel = data.draw(st.sampled_from(sorted(a.channels)))
        agent_services.agent_disconnected(channel_name=channel)
        del a.channels[channel]
        if not a.channels and a.disconnected_at is None:
            a.disconnected_at = self._now()
        self._after_step()

    # --- rules: time and the tick --------------------------------------------------------------

    @rule(step=st.sampled_from(STEPS))
    def time_passes(self, step) -> None:
        self._clock.shift(step)

    @rule()
    def tick(self) -> None:
        now = self._now()
        stale_before = now - timedelta(seconds=3 * T["PRESENCE_HEARTBEAT_S"])
        for s in self.sessions.values():
            for channel, seen in list(s.channels.items()):
                if seen < stale_before:
                    del s.channels[channel]
                    if not s.channels and s.left_at is None:
                        s.left_at = seen
        for a in self.agents.values():
            for channel, seen in list(a.channels.items()):
                if seen < stale_before:
                    del a.channels[channel]
                    if not a.channels and a.disconnected_at is None:
                        a.disconnected_at = seen
        for s in sorted(self.sessions.values(), key=lambda s: s.offer_expires or now):
            if s.status == "offered" and s.offer_expires <= now:
                self._expire(s)
        gone_before = now - timedelta(seconds=T["CUSTOMER_GRACE_S"])
        for s in sorted(self.sessions.values(), key=lambda s: s.left_at or now):
            if s.status in LIVE and s.left_at is not None and s.left_at <= gone_before:
                self._to(s, "incomplete", now)
        agent_gone = now - timedelta(seconds=T["AGENT_GRACE_S"])
        for a in self.agents.values():
            if a.status != "offline" and a.disconnected_at and a.disconnected_at <= agent_gone:
                for s in self._seated(a.id):
                    self._to(s, "waiting", now)
                if a.status != "offline":
                    self._agent_move(a, "offline")
        for s in self.sessions.values():
            if s.status == "incomplete" and s.created_at <= now - timedelta(days=T["HISTORY_DAYS"]):
                self._to(s, "ended", now, "expired")
        matching_services.tick()
        self._after_step()

    # --- invariants ----------------------------------------------------------------------------

    @invariant()
    def database_agrees_with_model(self) -> None:
        rows = {
            r["id"]: r
            for r in ChatSession.objects.values(
                "id", "status", "agent_id", "seat_id", "ticket", "end_requested_by", "end_reason"
            )
        }
        assert set(rows) == set(self.sessions)
        for sid, s in self.sessions.items():
            row = rows[sid]
            assert row["status"] == s.status, (sid, row, s)
            assert row["ticket"] == s.ticket
            assert row["end_requested_by"] == s.end_requested_by
            assert row["end_reason"] == s.end_reason
            if s.status in SEATED or s.status == "waiting":
                assert (row["agent_id"], row["seat_id"]) == (s.agent, s.seat), (row, s)
        for agent in Agent.objects.all():
            m = self.agents[agent.pk]
            assert (agent.status, agent.after_chats) == (m.status, m.after_chats), agent.pk

    @invariant()
    def queues_are_in_model_order(self) -> None:
        seat_queue = list(
            Seat.objects.exclude(free_since=None)
            .order_by("free_since", "id")
            .values_list("id", flat=True)
        )
        assert seat_queue == self.seat_queue
        waiting = list(
            ChatSession.objects.filter(status="waiting")
            .order_by("ticket")
            .values_list("id", flat=True)
        )
        model = sorted(
            (s for s in self.sessions.values() if s.status == "waiting"), key=lambda s: s.ticket
        )
        assert waiting == [s.id for s in model]

    @invariant()
    def pairings_are_the_predicted_ones(self) -> None:
        made = list(
            Assignment.objects.order_by("id").values_list("session_id", "agent_id", "seat_id")
        )
        assert made == self.expected_assignments
        assert fairness_violations() == []

    @invariant()
    def capacity_and_seats_hold(self) -> None:
        seated = list(
            ChatSession.objects.filter(status__in=SEATED).values_list("agent_id", "seat_id")
        )
        assert len({seat for _, seat in seated}) == len(seated)
        for agent in Agent.objects.all():
            assert sum(1 for a, _ in seated if a == agent.pk) <= agent.capacity
        for seat in Seat.objects.select_related("agent"):
            held = any(x == seat.pk for _, x in seated)
            expect_free = seat.agent.status == "available" and not held
            assert (seat.free_since is not None) == expect_free, seat.pk

    @invariant()
    def messages_are_contiguous_and_unique(self) -> None:
        stored: dict[uuid.UUID, list[tuple[int, uuid.UUID]]] = {sid: [] for sid in self.sessions}
        for sid, seq, cmid in Message.objects.order_by("session_id", "seq").values_list(
            "session_id", "seq", "client_msg_id"
        ):
            stored[sid].append((seq, cmid))
        last_seq = dict(ChatSession.objects.values_list("id", "last_seq"))
        for sid, s in self.sessions.items():
            rows = stored[sid]
            assert [seq for seq, _ in rows] == list(range(1, len(rows) + 1))
            assert [c for _, c in rows] == s.messages
            assert last_seq[sid] == len(rows)


DomainMachine.TestCase.settings = settings(
    max_examples=15,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def test_services_agree_with_reference_model_when_driven_randomly():
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(DomainMachine, settings=DomainMachine.TestCase.settings)
