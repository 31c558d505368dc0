"""``GET /console/``: who gets the agent console, and what the page is made of."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth.models import User

from agents.models import Agent

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent() -> Agent:
    user = User.objects.create_user(username="agent_p", password="pw", is_staff=True)
    return Agent.objects.create(user=user, display_name="Pat", capacity=2)


def test_console_sends_anonymous_visitors_to_the_login_page_when_not_logged_in(client):
    response = client.get("/console/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=/console/")


def test_console_refuses_with_a_reason_when_user_is_a_customer(client):
    client.force_login(User.objects.create_user(username="cust_p", password="pw"))
    response = client.get("/console/")
    assert response.status_code == 403
    assert "not a staff account" in response.content.decode()
    assert "console-config" not in response.content.decode()


def test_console_refuses_with_a_reason_when_staff_user_has_no_agent_profile(client):
    lead = User.objects.create_user(username="lead_p", password="pw", is_staff=True)
    client.force_login(lead)
    response = client.get("/console/")
    assert response.status_code == 403
    assert "no agent profile" in response.content.decode()


def test_console_renders_the_shell_with_its_config_when_user_is_an_agent(client, agent, settings):
    settings.OFFER_TIMEOUT_S = 7
    client.force_login(agent.user)

    response = client.get("/console/")

    assert response.status_code == 200
    html = response.content.decode()
    config = json.loads(
        re.search(r'<script id="console-config" type="application/json">(.*?)</script>', html)[1]
    )
    assert config["agent"] == {"display_name": "Pat", "capacity": 2}
    assert config["ws_path"] == "/ws/agent/"
    assert config["offer_timeout_s"] == 7
    # Every agent sees the queue summary; only leads read the full overview.
    assert config["can_view_queue"] is True
    assert config["api"]["queue"] == "/api/agent/queue"
    assert "/static/console/console.js" in html
    assert "Start shift" in html
    # No inline script may run: only same-origin files (the config is inert JSON).
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "'unsafe-inline'" not in csp


def test_console_lets_the_page_poll_the_queue_when_agent_is_also_a_support_lead(client, agent):
    from history.services import ensure_support_lead_group

    agent.user.groups.add(ensure_support_lead_group())
    client.force_login(agent.user)
    html = client.get("/console/").content.decode()
    assert '"can_view_queue": true' in html
    assert '"queue": "/api/ops/queue"' in html


def test_queue_summary_is_given_to_agents_and_refused_to_customers(client, agent):
    from tests.factories import CustomerFactory, SessionFactory

    SessionFactory()
    SessionFactory()
    client.force_login(agent.user)
    body = client.get("/api/agent/queue").json()
    assert body["waiting"] == 2
    assert body["longest_wait_s"] >= 0
    client.force_login(CustomerFactory())
    refused = client.get("/api/agent/queue")
    assert refused.status_code == 403
    assert refused.json()["code"] == "not_an_agent"


def test_console_escapes_the_agent_name_when_it_contains_markup(client, agent):
    agent.display_name = "<b>Pat</b>"
    agent.save()
    client.force_login(agent.user)
    html = client.get("/console/").content.decode()
    assert "<b>Pat</b>" not in html
    assert "&lt;b&gt;Pat&lt;/b&gt;" in html


def test_admin_links_to_the_console_when_the_staff_user_is_an_agent(client, agent):
    client.force_login(agent.user)
    html = client.get("/admin/").content.decode()
    assert 'id="console-link"' in html
    assert 'href="/console/"' in html


def test_admin_has_no_console_link_when_the_staff_user_is_not_an_agent(client):
    client.force_login(User.objects.create_user(username="lead_q", password="pw", is_staff=True))
    html = client.get("/admin/").content.decode()
    assert "console-link" not in html
