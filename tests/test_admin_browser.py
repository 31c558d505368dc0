"""Support leads in a real browser: admin actions call the services, the dashboard updates live,
and an agent (staff, but no lead permissions) is refused.

Rows are made before the browser starts (Django refuses ORM calls while Playwright's loop runs);
in between, the database is read through ``db_read`` (another thread).
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from playwright.sync_api import Page, expect

from agents import services as agent_services
from agents.models import Agent, AgentStatus
from chat import services
from chat.models import ChatSession, SessionStatus
from matching.services import match_run, offer_accept
from tests.console_browser import PASSWORD, browser_page, db_read
from tests.e2e.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def floor() -> Iterator[tuple[Stack, dict[str, str]]]:
    """agent1 in an active chat with customer1, agent2 available and idle, lead1."""
    call_command("seed_demo", agents=2, customers=2, password=PASSWORD, stdout=io.StringIO())
    agent1 = Agent.objects.get(user__username="agent1")
    agent2 = Agent.objects.get(user__username="agent2")
    agent_services.agent_shift_start(agent=agent1)
    session = services.session_create(customer=User.objects.get(username="customer1"))
    match_run()
    offer_accept(session_id=session.id, agent=agent1)
    agent_services.agent_shift_start(agent=agent2)
    env = {"CUSTOMER_GRACE_S": "600", "AGENT_GRACE_S": "600"}
    stack = Stack.start(servers=1, env=env, database_name=settings.DATABASES["default"]["NAME"])
    try:
        yield stack, {"session": str(session.id), "agent2": str(agent2.pk)}
    finally:
        stack.stop()


def log_in(page: Page, stack: Stack, username: str, next_path: str) -> None:
    page.goto(stack.url(0, f"/admin/login/?next={next_path}"))
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"**{next_path}")


def run_action(page: Page, pk: str, action: str) -> None:
    page.check(f'input.action-select[value="{pk}"]')
    page.select_option("select[name=action]", action)
    page.click('button[name="index"]')


def test_lead_closes_a_chat_and_forces_an_agent_offline_when_using_admin_actions(floor):
    stack, ids = floor
    with browser_page() as page:
        log_in(page, stack, "lead1", "/admin/chat/chatsession/")
        run_action(page, ids["session"], "close_sessions")
        expect(page.locator(".messagelist")).to_contain_text("closed")
        session = db_read(lambda: ChatSession.objects.get(pk=ids["session"]))
        assert (session.status, session.end_reason) == (SessionStatus.ENDED, "closed_by_lead")

        page.goto(stack.url(0, "/admin/agents/agent/"))
        run_action(page, ids["agent2"], "force_offline")
        expect(page.locator(".messagelist")).to_be_visible()
        agent2 = db_read(lambda: Agent.objects.get(pk=ids["agent2"]))
        assert agent2.status == AgentStatus.OFFLINE


def test_dashboard_shows_a_new_waiting_customer_without_a_reload_when_one_arrives(floor):
    stack, _ = floor
    with browser_page() as page:
        log_in(page, stack, "lead1", "/admin/dashboard/")
        waiting = page.locator('#card-waiting [data-field="waiting"]')
        expect(waiting).to_have_text("0")
        # customer2 starts a chat through the public API; agent1's second seat is free but
        # agent2 is idle with an earlier free seat, so it is offered: still "waiting" for leads.
        token = stack.login(0, "customer2", PASSWORD)
        created = httpx.post(
            stack.url(0, "/api/sessions"),
            json={"topic": "Where is my order?"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert created.status_code == 201
        expect(waiting).to_have_text("1", timeout=15_000)


def test_agent_is_refused_when_opening_the_leads_pages(floor):
    stack, _ = floor
    with browser_page() as page:
        log_in(page, stack, "agent1", "/admin/")
        for path in ("/admin/chat/chatsession/", "/admin/dashboard/"):
            response = page.goto(stack.url(0, path))
            assert response is not None
            assert response.status in (302, 403) or "/admin/login/" in page.url, path
            expect(page.locator("body")).not_to_contain_text("Waiting now")
