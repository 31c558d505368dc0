"""The customer's history: GET /api/sessions at the 14-day edge (time-machine), cursor pages,
GET /api/sessions/{id}/messages by seq, and query counts that do not grow with the page."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from chat.models import EndReason, Role, SessionStatus
from matching import services as matching_services
from tests import history_builders as build
from tests.e2e.helpers import token_for

pytestmark = pytest.mark.django_db

SECOND = timedelta(seconds=1)


@pytest.fixture(autouse=True)
def _design_days(settings):
    """DESIGN.md's figures, whatever the environment of the run says."""
    settings.HISTORY_DAYS = 14
    settings.RETENTION_DAYS = 90


@pytest.fixture
def now():
    """A frozen "now": every row below is made at an exact age relative to it."""
    moment = timezone.now().replace(microsecond=0)
    with time_machine.travel(moment, tick=False):
        yield moment


def at(moment):
    return time_machine.travel(moment, tick=False)


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
    return client


def listed(client: APIClient, query: str = "") -> list[str]:
    response = client.get("/api/sessions" + query)
    assert response.status_code == 200, response.json()
    return [s["id"] for s in response.json()["results"]]


def history_days() -> timedelta:
    return timedelta(days=settings.HISTORY_DAYS)


@pytest.mark.parametrize(
    ("age", "shown"),
    [
        (timedelta(days=14) - SECOND, True),
        (timedelta(days=14), True),
        (timedelta(days=14) + SECOND, False),
    ],
    ids=["14d-1s", "14d", "14d+1s"],
)
@pytest.mark.parametrize("status", [SessionStatus.ENDED, SessionStatus.INCOMPLETE])
def test_listing_shows_a_session_only_when_it_is_at_most_14_days_old(now, age, shown, status):
    customer = build.user()
    with at(now - age):
        chat = build.session(customer=customer, status=status, messages=2)
    with at(now):
        ids = listed(client_for(customer))
    assert (str(chat.pk) in ids) is shown


def test_listing_moves_the_edge_with_history_days_when_the_setting_changes(now, settings):
    settings.HISTORY_DAYS = 3
    customer = build.user()
    with at(now - timedelta(days=3) + SECOND):
        inside = build.session(customer=customer)
    with at(now - timedelta(days=3) - SECOND):
        build.session(customer=customer)
    assert listed(client_for(customer)) == [str(inside.pk)]


def test_listing_pages_newest_first_once_each_when_sessions_share_a_created_at(now):
    customer = build.user()
    with at(now - timedelta(days=2)):
        # Same instant: the cursor must break the tie by id, or a page would skip or repeat.
        twins = [build.session(customer=customer, messages=1) for _ in range(3)]
    with at(now - timedelta(days=1)):
        newer = build.session(customer=customer, status=SessionStatus.INCOMPLETE, messages=3)
    client = client_for(customer)
    seen: list[str] = []
    url = "/api/sessions?limit=2"
    pages = 0
    while url:
        body = client.get(url).json()
        seen += [s["id"] for s in body["results"]]
        url = body["next"]
        pages += 1
    assert pages == 2
    assert seen[0] == str(newer.pk)
    assert sorted(seen[1:]) == sorted(str(t.pk) for t in twins)
    assert len(set(seen)) == 4


def test_listing_carries_the_last_message_and_the_count_when_a_session_has_messages(now):
    customer = build.user()
    with at(now - timedelta(days=13)):
        chat = build.session(customer=customer, status=SessionStatus.ENDED)
        build.message(chat, body="first")
        build.message(chat, body="the last word", sender=Role.AGENT)
    with at(now):
        item = client_for(customer).get("/api/sessions").json()["results"][0]
    assert item["last_message"]["body"] == "the last word"
    assert item["last_message"]["seq"] == 2
    assert item["message_count"] == 2
    assert item["last_seq"] == 2


def test_listing_leaves_out_other_customers_sessions_when_they_are_recent(now):
    mine, theirs = build.user(), build.user()
    with at(now - timedelta(hours=1)):
        own = build.session(customer=mine)
        build.session(customer=theirs)
    assert listed(client_for(mine)) == [str(own.pk)]


def test_incomplete_session_is_expired_by_the_sweep_only_when_past_history_days(now):
    customer = build.user()
    with at(now - history_days() + SECOND):
        young = build.session(customer=customer, status=SessionStatus.INCOMPLETE)
    with at(now - history_days() - SECOND):
        old = build.session(customer=customer, status=SessionStatus.INCOMPLETE)
    with at(now):
        matching_services.sweep_incomplete_expiry()
        body = client_for(customer).get("/api/sessions").json()
    young.refresh_from_db()
    old.refresh_from_db()
    assert young.status == SessionStatus.INCOMPLETE
    assert (old.status, old.end_reason) == (SessionStatus.ENDED, EndReason.EXPIRED)
    assert [s["id"] for s in body["results"]] == [str(young.pk)]
    assert body["results"][0]["resumable"] is True


def _queries(client: APIClient, url: str) -> tuple[int, dict]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.json()
    return len(captured), response.json()


def test_listing_runs_the_same_queries_whatever_the_page_size_when_pages_fill(now):
    customer = build.user()
    agent = build.agent()
    for day in range(1, 13):
        with at(now - timedelta(days=day)):
            build.session(customer=customer, on=agent, messages=3)
    with at(now - timedelta(hours=1)):
        build.session(customer=customer, status=SessionStatus.WAITING, messages=1)
    client = client_for(customer)
    small, one = _queries(client, "/api/sessions?limit=1")
    large, many = _queries(client, "/api/sessions?limit=13")
    assert (len(one["results"]), len(many["results"])) == (1, 13)
    assert small == large


def test_listing_runs_the_same_queries_when_the_customer_has_far_more_sessions(now):
    few, lots = build.user(), build.user()
    agent = build.agent()
    for customer, count in ((few, 2), (lots, 40)):
        for n in range(count):
            with at(now - timedelta(hours=n + 1)):
                build.session(customer=customer, on=agent, messages=2)
    small, _ = _queries(client_for(few), "/api/sessions?limit=100")
    large, body = _queries(client_for(lots), "/api/sessions?limit=100")
    assert len(body["results"]) == 40
    assert small == large


def test_messages_page_by_seq_when_a_customer_reads_a_long_transcript(now):
    customer = build.user()
    with at(now - timedelta(days=13)):
        chat = build.session(customer=customer, messages=120)
    client = client_for(customer)
    seqs: list[int] = []
    after = 0
    while after is not None:
        body = client.get(f"/api/sessions/{chat.pk}/messages?after_seq={after}&limit=50").json()
        seqs += [m["seq"] for m in body["results"]]
        after = body["next_after_seq"]
    assert seqs == list(range(1, 121))


def test_messages_run_the_same_queries_whatever_the_limit_when_reading(now):
    customer = build.user()
    chat = build.session(customer=customer, messages=300)
    client = client_for(customer)
    small, one = _queries(client, f"/api/sessions/{chat.pk}/messages?limit=1")
    large, many = _queries(client, f"/api/sessions/{chat.pk}/messages?limit=500")
    assert (len(one["results"]), len(many["results"])) == (1, 300)
    assert small == large


def test_messages_are_hidden_when_the_session_is_another_customers(now):
    owner, stranger = build.user(), build.user()
    chat = build.session(customer=owner, messages=2)
    response = client_for(stranger).get(f"/api/sessions/{chat.pk}/messages")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
