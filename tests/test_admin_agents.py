"""Agents and shifts in admin: status and seats, force break / offline through the services, and
the week's schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone

from agents.models import AgentStatus, Shift
from agents.services import agent_shift_end, agent_shift_start
from chat.models import SessionStatus
from tests import history_builders as build
from tests.factories import AgentFactory, available_agent
from tests.test_admin_sessions import active_session

pytestmark = pytest.mark.django_db

AGENTS = "/admin/agents/agent/"
SHIFTS = "/admin/agents/shift/"


@pytest.fixture
def lead_client(client):
    client.force_login(build.lead())
    return client


def act(client, url: str, action: str, *objects):
    return client.post(
        url,
        {
            "action": action,
            "_selected_action": [str(o.pk) for o in objects],
            "index": "0",
            "select_across": "0",
        },
        follow=True,
    )


def page_messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_agent_list_shows_status_and_chats_when_a_lead_opens_it(lead_client):
    busy = available_agent(display_name="Busy Bee")
    active_session(agent=busy)
    AgentFactory(display_name="Off Duty")
    response = lead_client.get(AGENTS)
    assert response.status_code == 200
    rows = {a.display_name: a for a in response.context["cl"].result_list}
    assert rows["Busy Bee"].seated == 1
    assert rows["Off Duty"].seated == 0
    assert "1 / 2" in response.text
    assert "Send on break" in response.text


def test_agent_page_shows_the_seats_when_a_lead_opens_it(lead_client):
    agent = available_agent()
    chat = active_session(agent=agent)
    text = lead_client.get(f"{AGENTS}{agent.pk}/change/").text
    assert f"{chat.customer} (active" in text
    assert "free" in text  # the second seat
    assert 'name="_save"' not in text


def test_force_break_sends_a_busy_agent_to_break_pending_when_a_lead_selects_them(lead_client):
    agent = available_agent()
    chat = active_session(agent=agent)
    response = act(lead_client, AGENTS, "force_break", agent)
    agent.refresh_from_db()
    chat.refresh_from_db()
    assert agent.status == AgentStatus.BREAK_PENDING
    assert chat.status == SessionStatus.ACTIVE  # the current chat goes on
    assert "1 agent(s) sent on break." in page_messages(response)


def test_force_break_puts_an_idle_agent_on_break_when_a_lead_selects_them(lead_client):
    agent = available_agent()
    act(lead_client, AGENTS, "force_break", agent)
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ON_BREAK


def test_force_offline_requeues_the_chats_when_a_lead_selects_the_agent(lead_client):
    agent = available_agent()
    chat = active_session(agent=agent)
    response = act(lead_client, AGENTS, "force_offline", agent)
    agent.refresh_from_db()
    chat.refresh_from_db()
    assert agent.status == AgentStatus.OFFLINE
    assert chat.status == SessionStatus.WAITING
    assert "1 agent(s) taken offline." in page_messages(response)


def test_force_break_reports_the_refusal_when_the_agent_is_offline(lead_client):
    agent = AgentFactory()
    response = act(lead_client, AGENTS, "force_break", agent)
    agent.refresh_from_db()
    assert agent.status == AgentStatus.OFFLINE
    assert any(str(agent) in m for m in page_messages(response))


def test_agent_admin_refuses_an_agent_when_they_try_to_force_a_colleague(client):
    me = available_agent()
    colleague = available_agent()
    client.force_login(me.user)
    assert client.get(AGENTS).status_code == 403
    assert act(client, AGENTS, "force_offline", colleague).status_code == 403
    colleague.refresh_from_db()
    assert colleague.status == AgentStatus.AVAILABLE


def test_agent_admin_edits_nothing_when_even_a_superuser_posts_a_status(admin_client):
    agent = available_agent()
    response = admin_client.post(f"{AGENTS}{agent.pk}/change/", {"status": "offline"})
    assert response.status_code == 403
    agent.refresh_from_db()
    assert agent.status == AgentStatus.AVAILABLE


# --- shifts -----------------------------------------------------------------------------------

MONDAY = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


def shift_form(agent, start: datetime, end: datetime) -> dict[str, str]:
    return {
        "agent": str(agent.pk),
        "scheduled_start_0": start.strftime("%Y-%m-%d"),
        "scheduled_start_1": start.strftime("%H:%M:%S"),
        "scheduled_end_0": end.strftime("%Y-%m-%d"),
        "scheduled_end_1": end.strftime("%H:%M:%S"),
    }


def test_lead_plans_a_shift_when_posting_the_add_form(lead_client):
    agent = AgentFactory()
    response = lead_client.post(
        SHIFTS + "add/", shift_form(agent, MONDAY, MONDAY + timedelta(hours=8))
    )
    assert response.status_code == 302
    shift = Shift.objects.get(agent=agent)
    assert (shift.scheduled_start, shift.scheduled_end) == (MONDAY, MONDAY + timedelta(hours=8))
    assert shift.started_at is None


def test_shift_form_refuses_a_shift_when_it_ends_before_it_starts(lead_client):
    agent = AgentFactory()
    response = lead_client.post(
        SHIFTS + "add/", shift_form(agent, MONDAY, MONDAY - timedelta(hours=1))
    )
    assert response.status_code == 200
    assert "The shift must end after it starts." in response.text
    assert not Shift.objects.exists()


def test_shift_list_edits_the_times_in_place_when_a_lead_saves_it(lead_client):
    agent = AgentFactory()
    shift = Shift.objects.create(
        agent=agent, scheduled_start=MONDAY, scheduled_end=MONDAY + timedelta(hours=8)
    )
    later = MONDAY + timedelta(hours=1)
    data = {
        "form-TOTAL_FORMS": "1",
        "form-INITIAL_FORMS": "1",
        "form-MIN_NUM_FORMS": "0",
        "form-MAX_NUM_FORMS": "1000",
        "form-0-id": str(shift.pk),
        "form-0-scheduled_start_0": later.strftime("%Y-%m-%d"),
        "form-0-scheduled_start_1": later.strftime("%H:%M:%S"),
        "form-0-scheduled_end_0": (later + timedelta(hours=8)).strftime("%Y-%m-%d"),
        "form-0-scheduled_end_1": (later + timedelta(hours=8)).strftime("%H:%M:%S"),
        "_save": "Save",
    }
    response = lead_client.post(SHIFTS, data)
    assert response.status_code == 302, response.context["cl"].formset.errors
    shift.refresh_from_db()
    assert shift.scheduled_start == later


def test_copy_action_plans_the_same_shifts_a_week_later_when_a_lead_selects_them(lead_client):
    agent = AgentFactory()
    shifts = [
        Shift.objects.create(
            agent=agent,
            scheduled_start=MONDAY + timedelta(days=d),
            scheduled_end=MONDAY + timedelta(days=d, hours=8),
        )
        for d in range(3)
    ]
    response = act(lead_client, SHIFTS, "copy_to_next_week", *shifts)
    assert "3 shift(s) planned for the next week." in page_messages(response)
    act(lead_client, SHIFTS, "copy_to_next_week", *shifts)  # twice: no duplicates
    starts = sorted(Shift.objects.values_list("scheduled_start", flat=True))
    assert starts[3:] == [MONDAY + timedelta(days=7 + d) for d in range(3)]
    assert len(starts) == 6


def test_week_filter_lists_the_shifts_of_next_week_when_chosen(lead_client):
    agent = AgentFactory()
    with time_machine.travel(MONDAY, tick=False):
        this_week = Shift.objects.create(
            agent=agent, scheduled_start=MONDAY, scheduled_end=MONDAY + timedelta(hours=8)
        )
        next_week = Shift.objects.create(
            agent=agent,
            scheduled_start=MONDAY + timedelta(days=7),
            scheduled_end=MONDAY + timedelta(days=7, hours=8),
        )
        listed = lead_client.get(SHIFTS + "?week=next").context["cl"].result_list
        assert [s.pk for s in listed] == [next_week.pk]
        listed = lead_client.get(SHIFTS + "?week=this").context["cl"].result_list
        assert [s.pk for s in listed] == [this_week.pk]


def test_started_shift_cannot_be_deleted_when_a_lead_tries(lead_client):
    agent = AgentFactory()
    agent_shift_start(agent=agent)
    agent_shift_end(agent=agent)
    worked = Shift.objects.get(agent=agent)
    assert worked.started_at is not None
    assert lead_client.post(f"{SHIFTS}{worked.pk}/delete/", {"post": "yes"}).status_code == 403
    planned = Shift.objects.create(
        agent=agent,
        scheduled_start=timezone.now() + timedelta(days=1),
        scheduled_end=timezone.now() + timedelta(days=1, hours=8),
    )
    assert lead_client.post(f"{SHIFTS}{planned.pk}/delete/", {"post": "yes"}).status_code == 302
    assert list(Shift.objects.values_list("pk", flat=True)) == [worked.pk]


def test_shift_admin_refuses_an_agent_when_they_try_to_plan_shifts(client):
    agent = AgentFactory()
    client.force_login(agent.user)
    assert client.get(SHIFTS).status_code == 403
    response = client.post(SHIFTS + "add/", shift_form(agent, MONDAY, MONDAY + timedelta(hours=8)))
    assert response.status_code == 403
    assert not Shift.objects.exists()
