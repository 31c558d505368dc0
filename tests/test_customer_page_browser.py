"""The customer web page in a real browser (Debian's Chromium through Playwright) against the real
system: two daphne processes, a Celery worker and beat (tests/e2e/stack.py), with a scripted agent
on the agent socket of the *other* daphne, so every event crosses processes through Redis.

The page uses only the public contract; these tests check what a customer sees and what the
agent receives. Screenshots go to artifacts/customer-page/ (desktop 1280 px and phone 375 px);
with UPDATE_SCREENSHOTS=1, or when they are missing, the chat screenshots are copied to
docs/img/ for the README.

Django's ORM refuses to run while Playwright's sync API has its event loop going, so every test
prepares its rows before the browser starts and afterwards talks to the system only as clients do
(HTTP and sockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import time_machine
import websockets
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.utils import timezone
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from agents.models import Agent, Seat
from tests import history_builders as build
from tests.e2e.stack import Stack

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts" / "customer-page"
DOCS_IMG = ROOT / "docs" / "img"
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
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}
PASSWORD = "dayone"
# Message text must reach the page as text: this would run a script if it were parsed as HTML.
HOSTILE = '<img src=x onerror="window.__owned=1"><b>Bold?</b> & more'
# Keeps every WebSocket the page opens, so a test can drop one as a network would, and the
# moments it asked for a socket ticket.
RECORD_SOCKETS = """
(() => {
  const Real = window.WebSocket;
  window.__sockets = [];
  window.WebSocket = class extends Real {
    constructor(...args) { super(...args); window.__sockets.push(this); }
  };
  const realFetch = window.fetch;
  window.__ticketTimes = [];
  window.fetch = (url, ...rest) => {
    if (String(url).includes("/api/auth/ws-ticket")) window.__ticketTimes.push(performance.now());
    return realFetch(url, ...rest);
  };
})();
"""

Frame = dict[str, Any]


# --- the system, the browser, the agent ---------------------------------------------------------


@pytest.fixture
def system(request, transactional_db) -> Iterator[Stack]:
    """Two daphne servers, a worker and beat on the test database, with small tunables."""
    env = {
        "AUTO_ACCEPT": "0",
        "AGENT_CAPACITY": "2",
        "OFFER_TIMEOUT_S": "20",
        "CUSTOMER_GRACE_S": "60",
        "MATCH_TICK_S": "1",
        "PRESENCE_HEARTBEAT_S": "2",
        # Several suites share one PostgreSQL: hold no idle connections between requests.
        "DB_CONN_MAX_AGE": "0",
        **getattr(request, "param", {}),
    }
    call_command("seed_demo", agents=1, customers=2, password=PASSWORD, stdout=io.StringIO())
    stack = Stack.start(servers=2, env=env, database_name=settings.DATABASES["default"]["NAME"])
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def browser(system: Stack) -> Iterator[Browser]:
    # Started after the rows and the processes, stopped before the database is flushed.
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class PageProblems:
    """Uncaught errors and CSP refusals of a page: a test fails on any."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        page.on(
            "console",
            lambda message: self.errors.append(f"console: {message.text}")
            if "Content Security Policy" in message.text
            else None,
        )


def open_page(browser: Browser, *, phone: bool = False) -> tuple[Page, PageProblems]:
    context = browser.new_context(
        viewport=PHONE if phone else DESKTOP,
        device_scale_factor=2 if phone else 1,
        is_mobile=phone,
        has_touch=phone,
    )
    context.add_init_script(RECORD_SOCKETS)
    context.set_default_timeout(15_000)
    page = context.new_page()
    return page, PageProblems(page)


def log_in(page: Page, stack: Stack, username: str) -> None:
    page.goto(stack.url(0, "/"))
    page.fill("#login-username", username)
    page.fill("#login-password", PASSWORD)
    page.click("#login-submit")
    expect(page.locator("#app-view")).to_be_visible()


def shoot(page: Page, name: str, *, docs: str | None = None) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    if docs:
        target = DOCS_IMG / docs
        if os.environ.get("UPDATE_SCREENSHOTS") == "1" or not target.exists():
            DOCS_IMG.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def seqs_on_page(page: Page) -> list[int]:
    return [
        int(s)
        for s in page.locator("#messages li[data-seq]").evaluate_all(
            "nodes => nodes.map(n => n.dataset.seq)"
        )
    ]


class ScriptedAgent:
    """An agent console in a thread: the agent socket over ``websockets`` with a Bearer header."""

    def __init__(self, stack: Stack, username: str = "agent1", *, server: int = 1) -> None:
        self.url = stack.ws_url(server, "/ws/agent/")
        self.token = stack.login(server, username, PASSWORD)
        self.frames: list[Frame] = []
        self.sent_bodies: list[str] = []
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._ws: Any = None
        self._accepted: set[tuple[str, str]] = set()

    def _run(self, coroutine: Any, timeout: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _open(self) -> None:
        self._ws = await websockets.connect(
            self.url, additional_headers={"Authorization": f"Bearer {self.token}"}
        )
        self._loop.create_task(self._read(self._ws))

    async def _read(self, ws: Any) -> None:
        try:
            async for raw in ws:
                with self._changed:
                    self.frames.append(json.loads(raw))
                    self._changed.notify_all()
        except websockets.ConnectionClosed:
            pass

    def connect(self) -> ScriptedAgent:
        self._run(self._open())
        self.wait_for(lambda f: f["type"] == "agent.state")
        return self

    def send(self, **frame: Any) -> None:
        self._run(self._ws.send(json.dumps(frame)))

    def say(self, session_id: str, body: str) -> None:
        self.send(
            type="message.send", session_id=session_id, client_msg_id=str(uuid.uuid4()), body=body
        )

    def start_shift(self) -> None:
        self.send(type="shift.start")
        self.wait_for(lambda f: f["type"] == "agent.state" and f["status"] == "available")

    def wait_for(self, where: Callable[[Frame], bool], timeout: float = 15.0) -> Frame:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for frame in self.frames:
                    if where(frame):
                        return frame
                left = deadline - time.monotonic()
                if left <= 0:
                    kinds = [f.get("type") for f in self.frames][-30:]
                    raise AssertionError(f"the agent saw no such frame in {timeout}s: {kinds}")
                self._changed.wait(left)

    def customer_bodies(self, session_id: str) -> list[str]:
        with self._changed:
            return [
                f["message"]["body"]
                for f in self.frames
                if f["type"] == "message"
                and f.get("session_id") == session_id
                and f["message"]["sender"] == "customer"
            ]

    def accept_next_offer(self) -> str:
        offer = self.wait_for(
            lambda f: f["type"] == "offer"
            and (f["session_id"], f["expires_at"]) not in self._accepted
        )
        session_id = offer["session_id"]
        self.send(type="offer.accept", session_id=session_id)
        self.wait_for(
            lambda f: f["type"] == "session.state"
            and f.get("session_id") == session_id
            and f["session"]["status"] == "active"
        )
        self._accepted.add((session_id, offer["expires_at"]))
        return session_id

    def close(self) -> None:
        if self._ws is not None:
            # The server may have closed it already.
            with contextlib.suppress(Exception):
                self._run(self._ws.close(), timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


@pytest.fixture
def agent(system: Stack) -> Iterator[ScriptedAgent]:
    scripted = ScriptedAgent(system)
    scripted.connect()
    try:
        yield scripted
    finally:
        scripted.close()


def customer_api(stack: Stack, username: str) -> httpx.Client:
    return stack.api(0, stack.login(0, username, PASSWORD))


def repeat_until(action: Callable[[], None], shown: Locator, timeout: float = 15.0) -> None:
    """Repeat ``action`` until ``shown`` is visible (for events that are not replayed)."""
    deadline = time.monotonic() + timeout
    while True:
        action()
        try:
            expect(shown).to_be_visible(timeout=500)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


# --- the page shell -----------------------------------------------------------------------------


def test_page_serves_the_shell_with_a_strict_policy_when_anyone_asks(client):
    response = client.get("/")

    assert response.status_code == 200
    html = response.content.decode()
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "'unsafe-inline'" not in csp
    assert "connect-src 'self' ws://testserver" in csp
    assert '<script type="module" src="/static/customer/js/app.js">' in html
    config = json.loads(
        html.split('id="customer-config" type="application/json">')[1].split("<")[0]
    )
    assert config["maxMessageChars"] == settings.MAX_MESSAGE_CHARS
    assert config["historyDays"] == settings.HISTORY_DAYS
    # Nothing but the inert JSON config is inline: no script runs from the HTML itself.
    assert html.count("<script") == 2


# --- a whole chat -------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.browser
def test_customer_chats_from_login_to_end_when_an_agent_answers(
    system: Stack, browser: Browser, agent: ScriptedAgent
):
    page, problems = open_page(browser)
    page.goto(system.url(0, "/"))
    page.fill("#login-username", "customer1")
    page.fill("#login-password", "wrong")
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_contain_text("do not match")

    # Someone is already waiting, so the page has a position to show and to move.
    other = customer_api(system, "customer2")
    ahead = other.post("/api/sessions", json={"topic": "ahead"}).json()

    log_in(page, system, "customer1")
    expect(page.locator("#start-view")).to_be_visible()
    page.click("#topic-chips >> text=My card")
    page.click("#start-button")
    expect(page.locator("#chat-status")).to_have_text("Waiting for an agent")
    expect(page.locator("#waiting-position")).to_have_text("You're number 2 in line")
    expect(page.locator("#waiting-eta")).not_to_be_empty()
    expect(page.locator("#chat-topic")).to_have_text("My card")
    shoot(page, "desktop-waiting")

    assert other.post(f"/api/sessions/{ahead['id']}/end").json()["status"] == "ended"
    expect(page.locator("#waiting-position")).to_have_text("You're next in line")

    agent.start_shift()
    session_id = agent.accept_next_offer()
    expect(page.locator("#chat-status")).to_have_text("Chatting with Agent 1")
    expect(page.locator("#chat-avatar")).to_have_text("A1")
    expect(page.locator("#waiting-card")).to_be_hidden()

    agent.send(type="typing", session_id=session_id)
    expect(page.locator("#typing")).to_contain_text("Agent 1 is typing")
    agent.say(session_id, "Hello, I'm Agent 1. How can I help?")
    expect(page.locator("#messages li[data-seq='1'] .body")).to_have_text(
        "Hello, I'm Agent 1. How can I help?"
    )
    expect(page.locator("#typing")).to_be_hidden()
    # The page tells the agent it has read the message.
    agent.wait_for(lambda f: f["type"] == "read" and f["sender"] == "customer" and f["seq"] >= 1)

    page.fill("#composer-input", "My card was declined at the bakery.")
    agent.wait_for(lambda f: f["type"] == "typing" and f["sender"] == "customer")
    page.press("#composer-input", "Enter")
    expect(page.locator("#messages li[data-seq='2']")).to_contain_text("declined at the bakery")
    expect(page.locator("#messages li[data-seq='2'] .receipt")).to_have_text("Sent")
    agent.wait_for(lambda f: f["type"] == "message" and f["message"]["seq"] == 2)
    agent.send(type="read", session_id=session_id, seq=2)
    expect(page.locator("#messages li[data-seq='2'] .receipt")).to_have_text("Read")
    agent.say(session_id, "Sorry about that! I can see the decline; let me lift the limit.")
    page.fill("#composer-input", "Thank you!\nIt works now.")
    page.click("#send-button")
    expect(page.locator("#messages li[data-seq='4']")).to_contain_text("It works now.")
    agent.send(type="read", session_id=session_id, seq=4)
    agent.send(type="typing", session_id=session_id)
    expect(page.locator("#messages li[data-seq='4'] .receipt")).to_have_text("Read")
    expect(page.locator("#history-list .history-item.current")).to_contain_text("It works now.")
    shoot(page, "desktop-chat", docs="customer-desktop.png")

    # The same customer on a phone sees the same live chat, with its transcript.
    phone, phone_problems = open_page(browser, phone=True)
    log_in(phone, system, "customer1")
    expect(phone.locator("#chat-status")).to_have_text("Chatting with Agent 1")
    expect(phone.locator("#messages li[data-seq]")).to_have_count(4)
    expect(phone.locator("#history-pane")).to_be_hidden()
    # Typing is not replayed, so the agent keeps typing until the phone's socket has joined.
    repeat_until(lambda: agent.send(type="typing", session_id=session_id), phone.locator("#typing"))
    shoot(phone, "phone-chat", docs="customer-phone.png")
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    phone.context.close()
    assert phone_problems.errors == []

    # The customer asks to end; the agent would rather go on; then the agent asks, and the
    # customer agrees.
    page.click("#end-button")
    expect(page.locator("#end-text")).to_contain_text("Waiting for Agent 1 to confirm")
    agent.wait_for(lambda f: f["type"] == "end.requested" and f["by"] == "customer")
    agent.send(type="end.decline", session_id=session_id)
    expect(page.locator("#toast")).to_contain_text("Agent 1 would like to keep chatting")
    expect(page.locator("#end-banner")).to_be_hidden()
    agent.send(type="end.request", session_id=session_id)
    expect(page.locator("#end-text")).to_have_text("Agent 1 would like to end the chat.")
    shoot(page, "desktop-end-requested")
    page.click("#end-confirm")
    expect(page.locator("#ended-text")).to_have_text("You and Agent 1 ended the chat.")
    expect(page.locator("#composer")).to_be_hidden()
    expect(page.locator("#end-button")).to_be_hidden()
    expect(page.locator(f".history-item[data-session-id='{session_id}'] .badge")).to_have_text(
        "Ended"
    )
    agent.wait_for(
        lambda f: f["type"] == "session.ended"
        and f.get("session_id") == session_id
        and f["reason"] == "mutual"
    )
    assert agent.customer_bodies(session_id) == [
        "My card was declined at the bakery.",
        "Thank you!\nIt works now.",
    ]
    shoot(page, "desktop-ended")
    assert problems.errors == []


# --- a dropped socket ---------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.browser
def test_customer_page_resyncs_without_gaps_or_duplicates_when_the_socket_drops(
    system: Stack, browser: Browser, agent: ScriptedAgent
):
    page, problems = open_page(browser)
    # The backoff itself: exponential steps with jitter, capped at 15 s.
    log_in(page, system, "customer1")
    bounds = page.evaluate(
        """async () => {
          const { backoffDelay } = await import('/static/customer/js/socket.js');
          const delays = (a) => [backoffDelay(a, () => 0), backoffDelay(a, () => 1)];
          return [0, 1, 2, 3, 4, 5, 10].map(delays);
        }"""
    )
    assert bounds == [
        [250, 500],
        [500, 1000],
        [1000, 2000],
        [2000, 4000],
        [4000, 8000],
        [7500, 15000],
        [7500, 15000],
    ]

    agent.start_shift()
    page.fill("#topic-input", "Transfer not arrived")
    page.click("#start-button")
    session_id = agent.accept_next_offer()
    expect(page.locator("#chat-status")).to_have_text("Chatting with Agent 1")
    page.fill("#composer-input", "Hello?")
    page.press("#composer-input", "Enter")
    expect(page.locator("#messages li[data-seq='1']")).to_be_visible()

    # The network goes: the socket drops and, for a while, no new ticket can be had.
    page.route("**/api/auth/ws-ticket", lambda route: route.abort())
    before = page.evaluate("window.__ticketTimes.length")
    page.evaluate("window.__sockets.at(-1).close()")
    expect(page.locator("#conn-banner")).to_have_text("Reconnecting…")
    agent.say(session_id, "Are you still there?")
    agent.say(session_id, "I can see your transfer; it is on its way.")
    page.fill("#composer-input", "Sorry, my train went into a tunnel.")
    page.press("#composer-input", "Enter")
    expect(page.locator("#messages li.pending")).to_contain_text("Waiting for connection")
    shoot(page, "desktop-reconnecting")
    page.wait_for_function("n => window.__ticketTimes.length >= n", arg=before + 4)
    page.unroute("**/api/auth/ws-ticket")

    # The fifth attempt comes 4-8 s after the fourth.
    expect(page.locator("#conn-banner")).to_be_hidden(timeout=12_000)
    expect(page.locator("#messages li[data-seq]")).to_have_count(4)
    expect(page.locator("#messages li.pending")).to_have_count(0)
    assert seqs_on_page(page) == [1, 2, 3, 4]
    expect(page.locator("#messages li[data-seq='4']")).to_contain_text("tunnel")
    agent.wait_for(lambda f: f["type"] == "message" and f["message"]["seq"] == 4)
    # Waits between attempts grow (exponential backoff): the third is longer than the first.
    attempts = page.evaluate("window.__ticketTimes")[before:]
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[2] > gaps[0], gaps

    # A message sent as the socket dies (its ack lost) is sent again with the same
    # client_msg_id after the reconnect, and stored once.
    page.fill("#composer-input", "Got it, thanks.")
    page.evaluate(
        "() => { document.querySelector('#send-button').click(); window.__sockets.at(-1).close(); }"
    )
    expect(page.locator("#messages li[data-seq='5']")).to_contain_text("Got it, thanks.")
    expect(page.locator("#conn-banner")).to_be_hidden()
    agent.say(session_id, "You're welcome!")
    expect(page.locator("#messages li[data-seq='6']")).to_be_visible()
    page.wait_for_timeout(500)  # any stray second copy would have arrived by now
    assert seqs_on_page(page) == [1, 2, 3, 4, 5, 6]
    assert agent.customer_bodies(session_id) == [
        "Hello?",
        "Sorry, my train went into a tunnel.",
        "Got it, thanks.",
    ]

    # Every socket authenticated with a ticket; the reconnects asked only for what was missed.
    urls = page.evaluate("window.__sockets.map(s => s.url)")
    assert all("ticket=" in url and "eyJ" not in url for url in urls), urls
    assert "after_seq=0" in urls[0]
    assert "after_seq=1" in urls[1]
    assert "after_seq=4" in urls[-1]
    assert problems.errors == []


# --- history and transcripts --------------------------------------------------------------------


@pytest.fixture
def history_customer(transactional_db) -> str:
    """25 chats in the last 14 days (one of 230 messages, one interrupted) and one older."""
    customer = User.objects.create_user(username="historian", password=PASSWORD)
    robin = User.objects.create_user(username="robin", password=PASSWORD, is_staff=True)
    agent = Agent.objects.create(
        user=robin, display_name="Robin", capacity=2, status_changed_at=timezone.now()
    )
    Seat.objects.bulk_create(Seat(agent=agent, index=index) for index in range(2))
    now = timezone.now()
    with time_machine.travel(now - timedelta(days=20), tick=False):
        build.session(customer=customer, on=agent, messages=2, topic="Too old to list")
    for day in range(23):
        with time_machine.travel(now - timedelta(days=13, hours=-day * 12), tick=False):
            build.session(customer=customer, on=agent, messages=1, topic=f"Question {day + 1}")
    with time_machine.travel(now - timedelta(days=1), tick=False):
        long = build.session(customer=customer, on=agent, topic="A long conversation")
        for index in range(1, 231):
            sender = "agent" if index % 2 else "customer"
            build.message(long, body=f"Line {index} from the {sender}", sender=sender)
    with time_machine.travel(now - timedelta(hours=1), tick=False):
        cut = build.session(
            customer=customer, on=agent, status="incomplete", messages=2, topic="Cut off"
        )
        build.message(cut, body=HOSTILE, sender="agent")
    return customer.username


@pytest.mark.e2e
@pytest.mark.browser
def test_customer_reads_history_and_whole_transcripts_when_they_span_several_pages(
    history_customer: str, system: Stack, browser: Browser
):
    page, problems = open_page(browser)
    log_in(page, system, history_customer)
    items = page.locator("#history-list .history-item")
    expect(items).to_have_count(20)
    expect(items.first).to_contain_text("Cut off")
    expect(items.first.locator(".badge")).to_have_text("Interrupted")
    expect(items.first.locator(".history-preview")).to_have_text(HOSTILE)
    expect(page.locator("#start-view")).to_be_visible()  # nothing live: offer a new chat
    page.click("#history-more")
    expect(items).to_have_count(25)
    expect(page.locator("#history-more")).to_be_hidden()
    expect(page.locator("#history-list")).not_to_contain_text("Too old to list")
    expect(items.last).to_contain_text("Question 1")

    items.first.click()
    expect(page.locator("#messages li[data-seq='3'] .body")).to_have_text(HOSTILE)
    expect(page.locator("#resume-button")).to_be_visible()
    assert page.locator("#root img, #root b").count() == 0
    assert page.evaluate("window.__owned") is None

    page.click(".history-item >> text=A long conversation")
    expect(page.locator("#messages li[data-seq]")).to_have_count(230)
    assert seqs_on_page(page) == list(range(1, 231))
    expect(page.locator("#messages li[data-seq='230']")).to_contain_text(
        "Line 230 from the customer"
    )
    expect(page.locator("#messages li[data-seq='1']")).to_have_class("msg theirs")
    expect(page.locator("#chat-status")).to_have_text("Ended · with Robin")
    expect(page.locator("#ended-text")).to_have_text("You and Robin ended the chat.")
    expect(page.locator("#composer")).to_be_hidden()
    assert page.evaluate("window.__sockets.length") == 0  # a transcript needs no socket
    shoot(page, "desktop-transcript")

    # An expired access token is renewed with the refresh token, unseen by the customer.
    page.evaluate(
        """() => {
          const key = "dayone.customer.auth";
          const auth = JSON.parse(sessionStorage.getItem(key));
          const expired = "x." + btoa(JSON.stringify({ exp: 1 })).replace(/=+$/, "") + ".x";
          sessionStorage.setItem(key, JSON.stringify({ ...auth, access: expired }));
        }"""
    )
    with page.expect_response("**/api/auth/token/refresh") as refreshed:
        page.reload()
    assert refreshed.value.status == 200
    expect(items).to_have_count(20)
    expect(page.locator("#messages li[data-seq]")).to_have_count(230)

    # Leaving the queue asks first, then ends the chat at once.
    page.click("#new-chat-button")
    page.fill("#topic-input", "Never mind")
    page.click("#start-button")
    expect(page.locator("#waiting-position")).to_have_text("You're next in line")
    expect(page.locator("#end-button")).to_have_text("Leave queue")
    page.click("#end-button")
    expect(page.locator("#end-text")).to_have_text("Leave the queue? You will lose your place.")
    page.click("#end-decline")
    expect(page.locator("#end-banner")).to_be_hidden()
    page.click("#end-button")
    page.click("#end-confirm")
    expect(page.locator("#ended-text")).to_have_text("You left the queue before an agent joined.")
    expect(items.first).to_contain_text("Never mind")
    expect(items.first.locator(".badge")).to_have_text("Ended")

    page.click("#logout-button")
    expect(page.locator("#login-view")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0

    phone, phone_problems = open_page(browser, phone=True)
    log_in(phone, system, history_customer)
    phone.click("#start-back")
    expect(phone.locator("#history-pane")).to_be_visible()
    expect(phone.locator("#history-list .history-item")).to_have_count(20)
    shoot(phone, "phone-history")
    phone.click(".history-item >> text=Question 23")
    expect(phone.locator("#chat-view")).to_be_visible()
    expect(phone.locator("#history-pane")).to_be_hidden()
    expect(phone.locator("#messages li[data-seq]")).to_have_count(1)
    phone.click("#chat-back")
    expect(phone.locator("#history-pane")).to_be_visible()
    assert problems.errors == []
    assert phone_problems.errors == []


# --- resume -------------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.browser
@pytest.mark.parametrize("system", [{"CUSTOMER_GRACE_S": "2"}], indirect=True)
def test_customer_resumes_an_interrupted_chat_with_its_transcript_when_grace_has_passed(
    system: Stack, browser: Browser, agent: ScriptedAgent
):
    page, problems = open_page(browser)
    log_in(page, system, "customer1")
    agent.start_shift()
    page.fill("#topic-input", "Order never came")
    page.click("#start-button")
    session_id = agent.accept_next_offer()
    expect(page.locator("#chat-status")).to_have_text("Chatting with Agent 1")
    page.fill("#composer-input", "My order #1042 never arrived.")
    page.press("#composer-input", "Enter")
    agent.wait_for(lambda f: f["type"] == "message" and f["message"]["seq"] == 1)
    agent.say(session_id, "Let me check the courier's tracking.")
    expect(page.locator("#messages li[data-seq]")).to_have_count(2)

    # The customer closes the tab; past the grace period the chat is interrupted.
    page.context.close()
    agent.wait_for(
        lambda f: f["type"] == "session.state"
        and f.get("session_id") == session_id
        and f["session"]["status"] == "incomplete",
        timeout=20,
    )
    api = customer_api(system, "customer1")
    assert api.get(f"/api/sessions/{session_id}").json()["resumable"] is True

    page, problems = open_page(browser)
    log_in(page, system, "customer1")
    expect(page.locator("#start-view")).to_be_visible()
    item = page.locator(f".history-item[data-session-id='{session_id}']")
    expect(item.locator(".badge")).to_have_text("Interrupted")
    item.click()
    expect(page.locator("#messages li[data-seq]")).to_have_count(2)
    expect(page.locator("#resume-text")).to_contain_text("Pick it up where you left off")
    expect(page.locator("#composer")).to_be_hidden()
    shoot(page, "desktop-interrupted")

    page.click("#resume-button")
    expect(page.locator("#resume-bar")).to_be_hidden()
    session_again = agent.accept_next_offer()
    assert session_again == session_id
    expect(page.locator("#chat-status")).to_have_text("Chatting with Agent 1")
    agent.say(session_id, "Found it: it is at the neighbour's.")
    page.fill("#composer-input", "Oh! Thank you.")
    page.press("#composer-input", "Enter")
    expect(page.locator("#messages li[data-seq]")).to_have_count(4)
    assert seqs_on_page(page) == [1, 2, 3, 4]
    expect(page.locator("#messages li[data-seq='1']")).to_contain_text("#1042")
    agent.wait_for(lambda f: f["type"] == "message" and f["message"]["seq"] == 4)
    assert agent.customer_bodies(session_id) == [
        "My order #1042 never arrived.",
        "Oh! Thank you.",
    ]
    assert api.get(f"/api/sessions/{session_id}").json()["status"] == "active"
    assert problems.errors == []
