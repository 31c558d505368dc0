"""The agent state machine, seats and presence (agents/services.py)."""

from __future__ import annotations

from datetime import timedelta
from itertools import product

import pytest
from django.db import transaction
from django.utils import timezone

from agents import services
from agents.models import Agent, AgentStatus, Seat, Shift
from agents.selectors import agent_for_user, agent_state_payload, sessions_of_agent
from chat import services as chat_services
from chat.errors import DomainError
from chat.events import agent_group
from chat.models import ChatSession, Connection
from matching.models import FreeSpan
from matching.services import match_run, offer_expire, tick
from tests.factories import (
    AgentFactory,
    CustomerFactory,
    GroupTap,
    LeadFactory,
    SessionFactory,
    active_session,
    available_agent,
    offered_session,
)

pytestmark = pytest.mark.django_db

S = AgentStatus
OFF, AV, BP, BRK, AWAY = S.OFFLINE, S.AVAILABLE, S.BREAK_PENDING, S.ON_BREAK, S.AWAY
ALL = [OFF, AV, BP, BRK, AWAY]

# Written out here, not imported: changing the code's table must fail this test.
ALLOWED = {
    (OFF, AV),
    (AV, BP), (AV, BRK), (AV, OFF), (AV, AWAY),
    (BP, BP), (BP, AV), (BP, BRK), (BP, OFF),
    (BRK, AV), (BRK, OFF),
    (AWAY, AV), (AWAY, BP), (AWAY, BRK), (AWAY, OFF),
}  # fmt: skip


def _agent_in(status: str) -> Agent:
    """An agent in ``status``; BREAK_PENDING ones hold one active chat, the others none."""
    if status == OFF:
        return AgentFactory()
    if status == AV:
        return available_agent()
    if status == BRK:
        return services.agent_break_request(agent=available_agent())
    if status == BP:
        _session, agent = active_session()
        return services.agent_break_request(agent=agent)
    return _away_agent()


def _away_agent() -> Agent:
    from django.conf import settings

    timeout = settings.OFFER_TIMEOUT_S
    settings.OFFER_TIMEOUT_S = 0
    try:
        session, agent = offered_session()
    finally:
        settings.OFFER_TIMEOUT_S = timeout
    assert offer_expire(session_id=session.id)
    agent.refresh_from_db()
    assert agent.status == AWAY
    return agent


@pytest.mark.parametrize(("frm", "to"), list(product(ALL, repeat=2)))
def test_agent_table_allows_exactly_the_designed_pairs_when_checked(frm, to):
    assert (to in services.AGENT_TRANSITIONS[frm]) == ((frm, to) in ALLOWED)


@pytest.mark.parametrize(("frm", "to"), [p for p in product(ALL, repeat=2) if p not in ALLOWED])
def test_agent_transition_refuses_and_writes_nothing_when_pair_not_allowed(frm, to):
    agent = _agent_in(frm)
    with transaction.atomic():
        locked = Agent.objects.select_for_update().get(pk=agent.pk)
        with pytest.raises(DomainError) as caught:
            services._agent_transition(locked, to, now=timezone.now(), after_chats="on_break")
    assert caught.value.code == "invalid_transition"
    assert Agent.objects.get(pk=agent.pk).status == frm


@pytest.mark.parametrize("to", [BRK, OFF])
def test_agent_transition_refuses_when_agent_still_has_chats(to):
    _session, agent = active_session()
    with transaction.atomic():
        locked = Agent.objects.select_for_update().get(pk=agent.pk)
        with pytest.raises(DomainError) as caught:
            services._agent_transition(locked, to, now=timezone.now())
    assert caught.value.code == "agent_has_chats"


# (operation, from, expected status or error code, expected after_chats)
NAMED = [
    ("shift_start", OFF, AV, ""),
    ("shift_start", AV, AV, ""),
    ("shift_start", BP, "invalid_transition", None),
    ("shift_start", BRK, "invalid_transition", None),
    ("shift_start", AWAY, AV, ""),
    ("break_request", OFF, "invalid_transition", None),
    ("break_request", AV, BRK, ""),
    ("break_request", BP, BP, "on_break"),
    ("break_request", BRK, BRK, ""),
    ("break_request", AWAY, BRK, ""),
    ("break_end", OFF, "invalid_transition", None),
    ("break_end", AV, AV, ""),
    ("break_end", BP, AV, ""),
    ("break_end", BRK, AV, ""),
    ("break_end", AWAY, AV, ""),
    ("set_available", AWAY, AV, ""),
    ("set_available", BRK, AV, ""),
    ("set_available", OFF, "invalid_transition", None),
    ("shift_end", OFF, OFF, ""),
    ("shift_end", AV, OFF, ""),
    ("shift_end", BP, BP, "offline"),
    ("shift_end", BRK, OFF, ""),
    ("shift_end", AWAY, OFF, ""),
]


@pytest.mark.parametrize(
    ("op", "frm", "expected", "after"), NAMED, ids=[f"{n[0]}-{n[1]}" for n in NAMED]
)
def test_named_agent_operation_gives_expected_state_when_called(op, frm, expected, after):
    agent = _agent_in(frm)
    call = getattr(services, f"agent_{op}")
    if expected in ALL:
        result = call(agent=agent)
        stored = Agent.objects.get(pk=agent.pk)
        assert result.status == stored.status == expected
        assert stored.after_chats == after
    else:
        with pytest.raises(DomainError) as caught:
            call(agent=agent)
        assert caught.value.code == expected
        assert Agent.objects.get(pk=agent.pk).status == frm


# --- seats -------------------------------------------------------------------------------------


def test_agent_create_makes_one_seat_per_capacity_when_created():
    agent = AgentFactory(capacity=3)
    assert list(agent.seats.values_list("index", flat=True)) == [0, 1, 2]
    assert not agent.seats.exclude(free_since=None).exists()


def test_seats_join_queue_at_shift_start_and_leave_at_break_when_no_chats():
    agent = available_agent()
    seats = list(agent.seats.all())
    assert all(seat.free_since == agent.status_changed_at for seat in seats)
    assert FreeSpan.objects.filter(agent=agent, ended_at=None).count() == 2
    services.agent_break_request(agent=agent)
    assert not agent.seats.exclude(free_since=None).exists()
    assert FreeSpan.objects.filter(agent=agent, ended_at=None).count() == 0


def test_busy_seat_has_no_free_since_while_other_seat_stays_free_when_one_chat():
    session, agent = active_session()
    busy = Seat.objects.get(pk=session.seat_id)
    other = agent.seats.exclude(pk=busy.pk).get()
    assert busy.free_since is None
    assert other.free_since is not None


def test_seat_free_since_is_end_time_when_chat_ends():
    session, agent = active_session()
    seat_id = session.seat_id
    chat_services.session_end_request(session_id=session.id, user=agent.user, role="agent")
    ended = chat_services.session_end_confirm(
        session_id=session.id, user=session.customer, role="customer"
    )
    assert Seat.objects.get(pk=seat_id).free_since == ended.ended_at


def test_set_capacity_adds_and_removes_free_seats_when_changed():
    agent = available_agent()
    services.agent_set_capacity(agent=agent, capacity=4)
    assert agent.seats.count() == 4
    assert agent.seats.exclude(free_since=None).count() == 4
    services.agent_set_capacity(agent=agent, capacity=1)
    assert agent.seats.count() == 1


def test_set_capacity_refuses_when_more_chats_than_new_capacity():
    agent = available_agent()
    active_session(agent=agent)
    active_session(agent=agent)
    with pytest.raises(DomainError) as caught:
        services.agent_set_capacity(agent=agent, capacity=1)
    assert caught.value.code == "seats_in_use"


def test_set_capacity_keeps_busy_seat_when_shrinking():
    agent = available_agent(capacity=3)
    session, _ = active_session(agent=agent)
    services.agent_set_capacity(agent=agent, capacity=1)
    assert list(agent.seats.values_list("pk", flat=True)) == [session.seat_id]


def test_shift_start_creates_seats_when_agent_was_made_without_them():
    user = CustomerFactory()
    agent = Agent.objects.create(user=user, display_name="Bare", capacity=2)
    services.agent_shift_start(agent=agent)
    assert agent.seats.exclude(free_since=None).count() == 2


# --- breaks and shift ends after the last chat -------------------------------------------------


@pytest.mark.parametrize(
    ("request_op", "then"), [("agent_break_request", BRK), ("agent_shift_end", OFF)]
)
@pytest.mark.parametrize("how", ["mutual_end", "customer_gone", "requeue"])
def test_pending_agent_moves_on_by_itself_when_last_chat_leaves(request_op, then, how):
    session, agent = active_session()
    getattr(services, request_op)(agent=agent)
    assert Agent.objects.get(pk=agent.pk).status == BP
    if how == "mutual_end":
        chat_services.session_end_request(session_id=session.id, user=agent.user, role="agent")
        chat_services.session_end_confirm(
            session_id=session.id, user=session.customer, role="customer"
        )
    elif how == "customer_gone":
        chat_services.customer_connected(
            session_id=session.id, user=session.customer, channel_name="c.1"
        )
        chat_services.customer_disconnected(
            channel_name="c.1", at=timezone.now() - timedelta(days=1)
        )
        chat_services.session_customer_gone(session_id=session.id, gone_before=timezone.now())
    else:
        chat_services.session_requeue_by_lead(session_id=session.id, lead=LeadFactory())
    agent.refresh_from_db()
    assert agent.status == then
    assert agent.after_chats == ""


def test_pending_agent_waits_for_every_chat_when_two_are_active():
    agent = available_agent()
    first, _ = active_session(agent=agent)
    second, _ = active_session(agent=agent)
    services.agent_break_request(agent=agent)
    chat_services.session_close_by_lead(session_id=first.id, lead=LeadFactory())
    assert Agent.objects.get(pk=agent.pk).status == BP
    chat_services.session_close_by_lead(session_id=second.id, lead=LeadFactory())
    assert Agent.objects.get(pk=agent.pk).status == BRK


def test_pending_agent_gets_no_offer_when_customer_waits():
    _session, agent = active_session()
    services.agent_break_request(agent=agent)
    SessionFactory()
    assert match_run() == []


def test_shift_end_closes_the_shift_when_agent_goes_offline():
    agent = available_agent()
    shift = Shift.objects.get(agent=agent)
    assert shift.started_at is not None
    services.agent_shift_end(agent=agent)
    shift.refresh_from_db()
    assert shift.ended_at is not None


def test_shift_start_uses_scheduled_shift_when_one_is_due():
    agent = AgentFactory()
    now = timezone.now()
    planned = Shift.objects.create(
        agent=agent,
        scheduled_start=now - timedelta(minutes=5),
        scheduled_end=now + timedelta(hours=8),
    )
    services.agent_shift_start(agent=agent)
    planned.refresh_from_db()
    assert planned.started_at is not None
    assert Shift.objects.filter(agent=agent).count() == 1


def test_scheduled_shift_end_takes_agent_offline_when_time_passes():
    agent = AgentFactory()
    now = timezone.now()
    Shift.objects.create(
        agent=agent,
        scheduled_start=now - timedelta(hours=8),
        scheduled_end=now + timedelta(hours=1),
    )
    services.agent_shift_start(agent=agent)
    Shift.objects.filter(agent=agent).update(scheduled_end=now - timedelta(seconds=1))
    assert tick()["shifts_ended"] == 1
    assert Agent.objects.get(pk=agent.pk).status == OFF
    assert tick()["shifts_ended"] == 0


def test_scheduled_shift_end_waits_for_chats_when_agent_busy():
    _session, agent = active_session()
    Shift.objects.filter(agent=agent).update(scheduled_end=timezone.now() - timedelta(seconds=1))
    tick()
    agent.refresh_from_db()
    assert (agent.status, agent.after_chats) == (BP, "offline")
    assert tick()["shifts_ended"] == 0


# --- leads -------------------------------------------------------------------------------------


def test_force_offline_requeues_chats_with_old_tickets_when_lead_acts():
    agent = available_agent()
    first, _ = active_session(agent=agent)
    second, _ = offered_session(agent=agent)
    services.agent_force_offline(agent=agent, lead=LeadFactory())
    assert Agent.objects.get(pk=agent.pk).status == OFF
    for session in (first, second):
        back = ChatSession.objects.get(pk=session.pk)
        assert back.status == "waiting"
        assert back.ticket == session.ticket
        assert back.agent_id is None


def test_force_offline_refuses_when_user_is_not_staff():
    agent = available_agent()
    with pytest.raises(DomainError) as caught:
        services.agent_force_offline(agent=agent, lead=CustomerFactory())
    assert caught.value.code == "forbidden"


def test_force_offline_refuses_when_user_is_staff_but_not_a_lead():
    agent = available_agent()
    other_agent = available_agent()  # agents are staff, but without the leads' permissions
    with pytest.raises(DomainError) as caught:
        services.agent_force_offline(agent=agent, lead=other_agent.user)
    assert caught.value.code == "forbidden"
    assert Agent.objects.get(pk=agent.pk).status == "available"


def test_force_break_sends_agent_on_break_when_lead_acts():
    agent = available_agent()
    services.agent_force_break(agent=agent, lead=LeadFactory())
    assert Agent.objects.get(pk=agent.pk).status == BRK


# --- presence ----------------------------------------------------------------------------------


def test_agent_disconnected_starts_grace_only_when_last_console_closes():
    agent = available_agent()
    services.agent_connected(agent=agent, channel_name="a.1")
    services.agent_connected(agent=agent, channel_name="a.2")
    services.agent_disconnected(channel_name="a.1")
    assert Agent.objects.get(pk=agent.pk).disconnected_at is None
    services.agent_disconnected(channel_name="a.2")
    assert Agent.objects.get(pk=agent.pk).disconnected_at is not None
    services.agent_connected(agent=agent, channel_name="a.3")
    assert Agent.objects.get(pk=agent.pk).disconnected_at is None


def test_agent_grace_requeues_and_goes_offline_when_console_gone_too_long(settings):
    settings.AGENT_GRACE_S = 300
    session, agent = active_session()
    services.agent_connected(agent=agent, channel_name="a.1")
    services.agent_disconnected(channel_name="a.1", at=timezone.now() - timedelta(seconds=301))
    assert tick()["agents_gone"] == 1
    assert Agent.objects.get(pk=agent.pk).status == OFF
    back = ChatSession.objects.get(pk=session.pk)
    assert back.status == "waiting"
    assert back.ticket == session.ticket
    assert tick()["agents_gone"] == 0


def test_agent_grace_changes_nothing_when_console_back_in_time(settings):
    settings.AGENT_GRACE_S = 300
    session, agent = active_session()
    services.agent_connected(agent=agent, channel_name="a.1")
    services.agent_disconnected(channel_name="a.1", at=timezone.now() - timedelta(seconds=200))
    tick()
    assert Agent.objects.get(pk=agent.pk).status == AV
    assert ChatSession.objects.get(pk=session.pk).status == "active"


def test_stale_console_counts_as_closed_from_its_last_heartbeat_when_swept(settings):
    settings.PRESENCE_HEARTBEAT_S = 15
    agent = available_agent()
    services.agent_connected(agent=agent, channel_name="a.1")
    seen = timezone.now() - timedelta(seconds=46)
    Connection.objects.filter(channel_name="a.1").update(last_seen_at=seen)
    assert tick()["stale_connections"] == 1
    assert Agent.objects.get(pk=agent.pk).disconnected_at == seen
    assert not Connection.objects.filter(channel_name="a.1").exists()


# --- selectors and events ----------------------------------------------------------------------


def test_agent_state_payload_lists_seats_with_sessions_when_one_is_held():
    session, agent = active_session()
    payload = agent_state_payload(agent=Agent.objects.get(pk=agent.pk))
    assert payload["status"] == "available"
    assert payload["capacity"] == 2
    held = [seat for seat in payload["seats"] if seat["session_id"]]
    free = [seat for seat in payload["seats"] if not seat["session_id"]]
    assert held == [{"session_id": str(session.id), "free_since": None}]
    assert free[0]["free_since"].endswith("Z")


def test_selectors_find_agent_and_its_sessions_when_asked():
    session, agent = active_session()
    assert agent_for_user(user=agent.user) == agent
    assert agent_for_user(user=session.customer) is None
    assert [s.pk for s in sessions_of_agent(agent=agent)] == [session.pk]


def test_agent_operation_publishes_agent_state_when_committed(django_capture_on_commit_callbacks):
    agent = AgentFactory()
    tap = GroupTap(agent_group(agent.pk))
    with django_capture_on_commit_callbacks(execute=True):
        services.agent_shift_start(agent=agent)
    states = [e for e in tap.events() if e["type"] == "agent.state"]
    assert states[-1]["status"] == "available"
    assert len(states[-1]["seats"]) == 2


def test_shift_start_ignores_planned_shift_when_it_starts_much_later():
    agent = AgentFactory()
    now = timezone.now()
    tomorrow = Shift.objects.create(
        agent=agent,
        scheduled_start=now + timedelta(hours=20),
        scheduled_end=now + timedelta(hours=28),
    )
    services.agent_shift_start(agent=agent)
    tomorrow.refresh_from_db()
    assert tomorrow.started_at is None
    assert Shift.objects.filter(agent=agent, started_at__isnull=False).count() == 1


def test_shift_start_restarts_agent_grace_when_console_closed_in_an_earlier_shift(settings):
    settings.AGENT_GRACE_S = 300
    agent = available_agent()
    services.agent_connected(agent=agent, channel_name="a.1")
    services.agent_disconnected(channel_name="a.1", at=timezone.now() - timedelta(hours=5))
    services.agent_shift_end(agent=agent)
    services.agent_shift_start(agent=agent)
    assert tick()["agents_gone"] == 0
    assert Agent.objects.get(pk=agent.pk).status == AV
