"""GET /api/ops/queue (and its history for the charts): who may see it, and its numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents.models import AgentStatus
from chat.models import SessionStatus
from history import tasks
from history.models import QueueSample
from matching.models import Outcome
from tests import history_builders as build

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def at(moment: datetime) -> time_machine.travel:
    return time_machine.travel(moment, tick=False)


def get(client, user: User | None, url: str = "/api/ops/queue"):
    if user is not None:
        client.force_login(user)
    return client.get(url)


def floor() -> dict[str, object]:
    """Four agents, four customers not yet talking (one offered), two chats, one ended."""
    with at(NOW - timedelta(hours=3)):
        alice = build.agent(status=AgentStatus.AVAILABLE, name="Alice")
        bob = build.agent(status=AgentStatus.AVAILABLE, name="Bob")
        build.agent(status=AgentStatus.ON_BREAK, name="Carol")
        build.agent(status=AgentStatus.OFFLINE, name="Dan")
    with at(NOW - timedelta(hours=2)):
        old_chat = build.session(on=alice)  # ended
        build.assignment(old_chat, alice)  # a match, but not in the last hour
    with at(NOW - timedelta(seconds=400)):
        offered = build.session(status=SessionStatus.OFFERED, on=bob)
        build.assignment(offered, bob, outcome=Outcome.OFFERED)
    with at(NOW - timedelta(seconds=300)):
        build.session(status=SessionStatus.WAITING)
    with at(NOW - timedelta(seconds=120)):
        build.session(status=SessionStatus.WAITING)
    with at(NOW - timedelta(seconds=10)):
        build.session(status=SessionStatus.WAITING)
    with at(NOW - timedelta(minutes=20)):
        for agent in (alice, bob):
            chat = build.session(status=SessionStatus.ACTIVE, on=agent)
            build.assignment(chat, agent)
    return {"alice": alice, "bob": bob}


def test_queue_answers_the_protocol_numbers_when_a_lead_asks(client):
    floor()
    with at(NOW):
        response = get(client, build.lead())
    assert response.status_code == 200
    body = response.json()
    assert list(body)[:4] == ["waiting", "longest_wait_s", "agents", "sessions_active"]
    assert body["waiting"] == 4
    assert body["longest_wait_s"] == 400
    assert body["sessions_active"] == 2
    assert body["agents"] == {
        "offline": 1,
        "available": 2,
        "break_pending": 0,
        "on_break": 1,
        "away": 0,
    }


def test_queue_adds_the_dashboard_extras_when_a_lead_asks(client):
    floor()
    with at(NOW):
        body = get(client, build.lead()).json()
    assert body["offered"] == 1
    assert body["matches_last_hour"] == 2  # accepted within the hour; the 2 h old one is not
    assert body["offers_last_hour"] == 3
    assert body["free_seats"] == 1  # Alice's second seat
    # Two accepted matches in the estimator's 30 minutes: 900 s per position; a newcomer is 5th.
    assert body["seconds_per_position"] == 900.0
    assert body["estimated_wait_s"] == 4500
    assert body["at"] == "2026-06-01T12:00:00Z"
    assert body["chats_per_agent"] == [
        {
            "id": body["chats_per_agent"][0]["id"],
            "display_name": "Alice",
            "status": "available",
            "capacity": 2,
            "active": 1,
            "offered": 0,
        },
        {
            "id": body["chats_per_agent"][1]["id"],
            "display_name": "Bob",
            "status": "available",
            "capacity": 2,
            "active": 1,
            "offered": 1,
        },
        {
            "id": body["chats_per_agent"][2]["id"],
            "display_name": "Carol",
            "status": "on_break",
            "capacity": 2,
            "active": 0,
            "offered": 0,
        },
    ]


def test_queue_reports_an_empty_floor_when_nobody_is_there(client):
    with at(NOW):
        body = get(client, build.lead()).json()
    assert body["waiting"] == 0
    assert body["longest_wait_s"] == 0
    assert body["sessions_active"] == 0
    assert set(body["agents"].values()) == {0}
    assert body["estimated_wait_s"] is None
    assert body["chats_per_agent"] == []


def test_queue_refuses_an_agent_when_they_lack_the_permission(client):
    agent = build.agent()
    response = get(client, agent.user)
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_queue_refuses_a_customer_when_they_hold_the_permission_but_are_not_staff(client):
    customer = build.user()
    customer.user_permissions.add(Permission.objects.get(codename="view_queue"))
    assert get(client, customer).status_code == 403


def test_queue_refuses_the_anonymous_when_no_credentials_come(client):
    response = get(client, None)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_queue_answers_a_superuser_when_they_ask(client):
    boss = User.objects.create_superuser("boss", password="pw")
    assert get(client, boss).status_code == 200


def test_queue_answers_staff_when_given_view_queue_alone(client):
    person = build.user("ops", staff=True)
    person.user_permissions.add(Permission.objects.get(codename="view_queue"))
    assert get(client, person).status_code == 200


def test_queue_runs_a_fixed_number_of_queries_when_the_floor_grows(client):
    client.force_login(build.lead())
    floor()
    client.get("/api/ops/queue")  # warm the session and permission caches of the client
    with CaptureQueriesContext(connection) as small:
        client.get("/api/ops/queue")
    for _ in range(6):
        agent = build.agent(status=AgentStatus.AVAILABLE)
        build.session(status=SessionStatus.ACTIVE, on=agent)
        build.session(status=SessionStatus.WAITING)
    with CaptureQueriesContext(connection) as large:
        client.get("/api/ops/queue")
    assert len(large) == len(small)


def test_queue_history_lists_the_samples_of_the_last_hours_when_asked(client):
    for minutes, waiting in [(400, 9), (170, 1), (60, 2), (1, 3)]:
        QueueSample.objects.create(at=NOW - timedelta(minutes=minutes), waiting=waiting)
    with at(NOW):
        body = get(client, build.lead(), "/api/ops/queue/history?hours=3").json()
    assert body["hours"] == 3
    assert [point["waiting"] for point in body["results"]] == [1, 2, 3]
    assert body["results"][0]["at"] == "2026-06-01T09:10:00Z"


@pytest.mark.parametrize("hours", ["0", "49", "x", "-1"])
def test_queue_history_refuses_hours_when_out_of_range(client, hours):
    response = get(client, build.lead(), f"/api/ops/queue/history?hours={hours}")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


def test_queue_history_refuses_an_agent_when_they_lack_the_permission(client):
    assert get(client, build.agent().user, "/api/ops/queue/history").status_code == 403


def test_sample_task_stores_the_numbers_of_the_moment_when_beat_fires_it():
    floor()
    with at(NOW):
        sample = QueueSample.objects.get(pk=tasks.sample_queue.apply().get())
    assert sample.at == NOW
    assert (sample.waiting, sample.offered, sample.active) == (4, 1, 2)
    assert sample.longest_wait_s == 400
    assert sample.agents["available"] == 2
    assert sample.matches_last_hour == 2


def test_a_second_sampler_stores_nothing_when_it_runs_within_the_gap():
    # Two beats by mistake fire the minute's sample twice: one row, never two close together.
    from history.services import SAMPLE_MIN_GAP_S

    floor()
    # Relative counts: an end-to-end stack's beat may have committed a sample of the real "now"
    # between tests; NOW is far from it, so it never falls inside these windows.
    before = QueueSample.objects.count()
    with at(NOW):
        first = tasks.sample_queue.apply().get()
    with at(NOW + timedelta(seconds=SAMPLE_MIN_GAP_S - 1)):
        second = tasks.sample_queue.apply().get()
    assert second == first
    assert QueueSample.objects.count() == before + 1
    with at(NOW + timedelta(seconds=SAMPLE_MIN_GAP_S + 1)):
        third = tasks.sample_queue.apply().get()
    assert third != first
    assert QueueSample.objects.count() == before + 2
