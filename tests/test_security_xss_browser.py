"""Message text (and every other customer- or agent-supplied string) is shown as text everywhere it
is rendered: the customer page, the agent console, and the admin (transcript, lists, dashboard).

One chat is prepared with hostile strings in every field a person controls: message bodies from
both sides, the topic, the customer's name and the agent's display name. Each would set
``window.__pwned`` if it ever ran. A real Chromium then opens each page as its user would. The
admin pages also must not trip their Content Security Policy (which would break the admin).

Django's ORM refuses to run while Playwright's sync API has its loop going, so the rows are made
first and the browser then talks to the system as its users do.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from playwright.sync_api import Browser, Page, expect, sync_playwright

from agents import services as agent_services
from agents.models import Agent
from chat import services
from chat.models import Role
from matching.services import match_run, offer_accept
from tests.e2e.stack import Stack

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "dayone"
CUSTOMER_SAYS = [
    "<script>window.__pwned = 1</script>",
    '<img src=x onerror="window.__pwned = 2">',
    '"><svg/onload="window.__pwned = 3">',
]
AGENT_SAYS = ['</textarea><script>window.__pwned = 4</script><iframe src="javascript:alert(1)">']
TOPIC = "<script>window.__pwned = 5</script>Refund"
CUSTOMER_NAME = '<img src=x onerror="window.__pwned = 6">Dana'
AGENT_NAME = '<b onmouseover="window.__pwned = 7">Sam</b>'
# What the hostile strings would have become had they been parsed as markup (the pages' own
# icons and scripts are not counted: none carries an inline handler or "__pwned").
INJECTED = "[onerror], [onload], [onmouseover], iframe"


def prepare() -> dict[str, str]:
    call_command("seed_demo", agents=1, customers=1, password=PASSWORD, stdout=io.StringIO())
    customer = User.objects.get(username="customer1")
    customer.first_name, customer.last_name = CUSTOMER_NAME, ""
    customer.save(update_fields=["first_name", "last_name"])
    agent = Agent.objects.get(user__username="agent1")
    agent.display_name = AGENT_NAME
    agent.save(update_fields=["display_name"])
    agent_services.agent_shift_start(agent=agent)
    session = services.session_create(customer=customer, topic=TOPIC)
    match_run()
    offer_accept(session_id=session.id, agent=agent)
    for body in CUSTOMER_SAYS:
        services.message_post(
            session_id=session.id,
            author=customer,
            role=Role.CUSTOMER,
            client_msg_id=uuid.uuid4(),
            body=body,
        )
    for body in AGENT_SAYS:
        services.message_post(
            session_id=session.id,
            author=agent.user,
            role=Role.AGENT,
            client_msg_id=uuid.uuid4(),
            body=body,
        )
    return {"session_id": str(session.id), "agent_id": str(agent.pk)}


@pytest.fixture
def world() -> Iterator[tuple[Stack, dict[str, str]]]:
    ids = prepare()
    env = {"CUSTOMER_GRACE_S": "600", "AGENT_GRACE_S": "600", "PRESENCE_HEARTBEAT_S": "5"}
    stack = Stack.start(servers=1, env=env, database_name=settings.DATABASES["default"]["NAME"])
    try:
        yield stack, ids
    finally:
        stack.stop()


@pytest.fixture
def browser(world) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Watch:
    """Script errors and CSP violations a page reports."""

    def __init__(self, page: Page) -> None:
        self.csp: list[str] = []
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on(
            "console",
            lambda msg: self.csp.append(msg.text)
            if "Content Security Policy" in msg.text
            else None,
        )


def new_page(browser: Browser) -> tuple[Page, Watch]:
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    return page, Watch(page)


def assert_inert(page: Page, scope: str) -> None:
    assert page.evaluate("() => window.__pwned") is None
    area = page.locator(scope)
    assert area.locator(INJECTED).count() == 0, area.inner_html()[:3000]
    assert area.locator("script", has_text="__pwned").count() == 0


def admin_login(page: Page, stack: Stack, username: str, next_path: str) -> None:
    page.goto(stack.url(0, f"/admin/login/?next={next_path}"))
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"**{next_path}")


def test_hostile_text_stays_text_on_the_customer_page_when_the_chat_is_opened(world, browser):
    stack, _ = world
    page, watch = new_page(browser)
    page.goto(stack.url(0, "/"))
    page.fill("#login-username", "customer1")
    page.fill("#login-password", PASSWORD)
    page.click("#login-submit")
    expect(page.locator("#app-view")).to_be_visible()
    last = page.locator("#messages li[data-seq='4']")
    if not last.is_visible():
        page.locator("#history-list .history-item").first.click()
    expect(last).to_be_visible(timeout=15_000)
    bodies = page.locator("#messages li[data-seq] .body")
    expect(bodies).to_have_text([*CUSTOMER_SAYS, *AGENT_SAYS])
    expect(page.locator("#app-view")).to_contain_text("Sam")
    assert_inert(page, "#app-view")
    assert watch.errors == []


def test_hostile_text_stays_text_in_the_agent_console_when_the_chat_is_shown(world, browser):
    stack, ids = world
    page, watch = new_page(browser)
    page.goto(stack.url(0, "/console/"))
    page.fill("#id_username", "agent1")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/console/")
    pane = page.locator(f'.pane[data-session-id="{ids["session_id"]}"]')
    expect(pane.locator(".msg.customer .bubble")).to_have_text(CUSTOMER_SAYS, timeout=15_000)
    expect(pane.locator(".msg.agent .bubble")).to_have_text(AGENT_SAYS)
    expect(pane.locator(".topic")).to_have_text(TOPIC)
    expect(pane).to_contain_text("Dana")
    assert_inert(page, "body")
    assert watch.errors == []
    assert watch.csp == []


def test_hostile_text_stays_text_in_the_admin_when_a_lead_reads_the_transcript(world, browser):
    stack, ids = world
    page, watch = new_page(browser)
    change = f"/admin/chat/chatsession/{ids['session_id']}/change/"
    admin_login(page, stack, "lead1", change)
    transcript = page.locator("#content")
    for body in [*CUSTOMER_SAYS, *AGENT_SAYS]:
        expect(transcript).to_contain_text(body)
    expect(transcript).to_contain_text(TOPIC)
    assert_inert(page, "#content")
    pages = {
        "/admin/chat/chatsession/": TOPIC,
        "/admin/agents/agent/": AGENT_NAME,
        f"/admin/agents/agent/{ids['agent_id']}/change/": AGENT_NAME,
        "/admin/matching/assignment/": AGENT_NAME,
        "/admin/dashboard/": AGENT_NAME,
    }
    for path, shown in pages.items():
        page.goto(stack.url(0, path))
        expect(page.locator("#content")).to_contain_text(shown, timeout=10_000)
        assert_inert(page, "#content")
    # The lead's "Close session" still asks first under the policy (a dismissed question
    # submits nothing).
    questions: list[str] = []
    page.on("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    page.goto(stack.url(0, change))
    page.click("button[data-action=close]")
    assert questions == ["Close this session for both sides?"]
    expect(page.locator("#content")).to_contain_text("active")
    assert watch.errors == []
    assert watch.csp == [], watch.csp
