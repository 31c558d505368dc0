"""The assignment log, the access log and the purge records in admin: readable, never editable."""

from __future__ import annotations

import pytest
from django.utils import timezone

from history.models import PurgeRecord
from matching.models import Assignment
from tests import history_builders as build
from tests.factories import available_agent
from tests.test_admin_sessions import active_session

pytestmark = pytest.mark.django_db

ASSIGNMENTS = "/admin/matching/assignment/"
ACCESSES = "/admin/agents/customerdataaccess/"
PURGES = "/admin/history/purgerecord/"


@pytest.fixture
def lead_client(client):
    client.force_login(build.lead())
    return client


@pytest.fixture
def logs() -> dict[str, object]:
    agent = available_agent(display_name="Agent Smith")
    chat = active_session(agent=agent)
    read = build.access(chat, agent, what="orders")
    record = PurgeRecord.objects.create(
        started_at=timezone.now(), finished_at=timezone.now(), cutoff=timezone.now(), messages=42
    )
    return {
        "assignment": Assignment.objects.get(session=chat),
        "access": read,
        "record": record,
        "chat": chat,
    }


@pytest.mark.parametrize(
    ("url", "key"),
    [(ASSIGNMENTS, "assignment"), (ACCESSES, "access"), (PURGES, "record")],
    ids=["assignments", "accesses", "purges"],
)
def test_log_pages_load_read_only_when_a_lead_opens_them(lead_client, logs, url, key):
    listing = lead_client.get(url)
    assert listing.status_code == 200
    assert [o.pk for o in listing.context["cl"].result_list] == [logs[key].pk]
    page = lead_client.get(f"{url}{logs[key].pk}/change/")
    assert page.status_code == 200
    assert 'name="_save"' not in page.text
    assert lead_client.post(f"{url}{logs[key].pk}/change/", {}).status_code == 403
    assert lead_client.get(f"{url}{logs[key].pk}/delete/").status_code == 403
    assert lead_client.get(f"{url}add/").status_code == 403


def test_assignment_log_finds_the_customer_when_searching_username_or_ticket(lead_client, logs):
    chat = logs["chat"]
    by_name = lead_client.get(f"{ASSIGNMENTS}?q={chat.customer.username}")
    assert [a.pk for a in by_name.context["cl"].result_list] == [logs["assignment"].pk]
    by_ticket = lead_client.get(f"{ASSIGNMENTS}?q={chat.ticket}")
    assert [a.pk for a in by_ticket.context["cl"].result_list] == [logs["assignment"].pk]
    assert lead_client.get(f"{ASSIGNMENTS}?q=nobody").context["cl"].result_list.count() == 0


def test_access_log_shows_who_read_what_when_a_lead_looks(lead_client, logs):
    text = lead_client.get(ACCESSES).text
    assert "Agent Smith" in text
    assert "Orders" in text
    assert logs["chat"].customer.username in text


@pytest.mark.parametrize("url", [ASSIGNMENTS, ACCESSES, PURGES])
def test_log_pages_refuse_an_agent_when_they_open_them(client, logs, url):
    client.force_login(available_agent().user)
    assert client.get(url).status_code == 403
