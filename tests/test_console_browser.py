"""The agent console in a real browser (Debian's Chromium driven by Playwright) against the real
system: two daphne servers behind a small TCP load balancer, a Celery worker and beat.

Customers are scripted: REST for their session, a ``websockets`` client for their socket.
The console is only ever driven the way an agent drives it: clicks and keys.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
from websockets.sync.client import ClientConnection, connect

from agents.models import CustomerDataAccess
from tests.e2e.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
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
PASSWORD = "pw-console"
Frame = dict[str, Any]


# --- a load balancer in front of the daphne servers -------------------------------------------


class Balancer:
    """A TCP proxy: each new connection goes to the first live backend (so the test knows which
    server the console's socket is on). ``pause`` refuses new connections, like a network that is
    down; ``kill`` stops sending to a backend whose process the test has killed."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.alive = [True] * len(ports)
        self.paused = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[tuple[socket.socket, socket.socket]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.paused.is_set():
                client.close()
                continue
            upstream = None
            for index, port in enumerate(self.ports):
                if not self.alive[index]:
                    continue
                try:
                    upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
                    upstream.settimeout(None)
                    break
                except OSError:
                    continue
            if upstream is None:
                client.close()
                continue
            with self.lock:
                self.open.append((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def cut_all(self) -> None:
        """Drop every open connection (the network between browser and servers fails)."""
        with self.lock:
            pairs, self.open = self.open, []
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def kill(self, index: int) -> None:
        self.alive[index] = False

    def close(self) -> None:
        self.listener.close()
        self.cut_all()


# --- a scripted customer ----------------------------------------------------------------------


class Customer:
    """A DayOne customer: REST to open the chat, a websocket for the conversation."""

    def __init__(self, stack: Stack, username: str, *, server: int = 1) -> None:
        self.stack = stack
        self.server = server
        self.token = stack.login(server, username, PASSWORD)
        self.api = stack.api(server, self.token)
        self.ws: ClientConnection | None = None
        self.session_id = ""
        self.seen: list[Frame] = []

    def start_chat(self, topic: str) -> str:
        answer = self.api.post("/api/sessions", json={"topic": topic})
        assert answer.status_code == 201, answer.text
        self.session_id = answer.json()["id"]
        self.ws = connect(
            self.stack.ws_url(self.server, f"/ws/sessions/{self.session_id}/"),
            additional_headers={"Authorization": f"Bearer {self.token}"},
            open_timeout=10,
        )
        return self.session_id

    def send(self, frame: Frame) -> None:
        assert self.ws is not None
        self.ws.send(json.dumps(frame))

    def say(self, body: str) -> str:
        client_msg_id = str(uuid.uuid4())
        self.send({"type": "message.send", "client_msg_id": client_msg_id, "body": body})
        self.expect("message.ack", lambda f: f["client_msg_id"] == client_msg_id)
        return client_msg_id

    def expect(
        self, kind: str, where: Callable[[Frame], bool] | None = None, timeout: float = 15
    ) -> Frame:
        assert self.ws is not None
        for frame in self.seen:
            if frame.get("type") == kind and (where is None or where(frame)):
                self.seen.remove(frame)
                return frame
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                frame = json.loads(self.ws.recv(timeout=left))
            except TimeoutError:
                break
            if frame.get("type") == kind and (where is None or where(frame)):
                return frame
            self.seen.append(frame)
        raise AssertionError(f"no {kind} frame within {timeout}s; saw {self.seen!r}")

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
        self.api.close()


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(django_db_setup: None, django_db_blocker: Any) -> Iterator[Stack]:
    from django.conf import settings

    started = Stack.start(
        servers=2,
        database_name=settings.DATABASES["default"]["NAME"],
        env={
            "OFFER_TIMEOUT_S": "40",
            "AGENT_CAPACITY": "2",
            "AUTO_ACCEPT": "0",
            # Short enough for a test to watch a chat go incomplete.
            "CUSTOMER_GRACE_S": "3",
            "PRESENCE_HEARTBEAT_S": "2",
        },
    )
    yield started
    print(started.logs(60))
    started.stop()


@pytest.fixture(scope="module")
def balancer(stack: Stack) -> Iterator[Balancer]:
    lb = Balancer(stack.ports)
    yield lb
    lb.close()


@pytest.fixture
def accounts(transactional_db: None) -> None:
    """agent1 (staff, agent, offline), customer1..3 with DayOne demo data, committed."""
    call_command("seed_demo", agents=1, customers=3, password=PASSWORD, stdout=io.StringIO())


@pytest.fixture
def browser(accounts: None) -> Iterator[Browser]:
    # Playwright's sync API runs an asyncio loop in this thread while it is open, and Django
    # refuses ORM calls while a loop runs: so the database is seeded before the browser starts,
    # flushed after it stops, and read in between through ``db_read`` (another thread).
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def db_read(func: Callable[[], Any]) -> Any:
    """Run ORM code outside Playwright's event loop (a thread with its own connection)."""
    from django.db import connection

    def run() -> Any:
        try:
            return func()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


@pytest.fixture
def page(browser: Browser, accounts: None) -> Iterator[Page]:
    context = browser.new_context(
        viewport={"width": 1440, "height": 900}, locale="en-US", timezone_id="UTC"
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Shown by pytest only when the test fails.
    page.on("console", lambda msg: print(f"console {msg.type}: {msg.text}"))
    page.on("websocket", lambda ws: ws.on("framereceived", lambda f: print(f"ws <- {f}")))
    yield page
    context.close()
    assert errors == [], f"the page raised: {errors}"


@pytest.fixture
def customers(stack: Stack, accounts: None) -> Iterator[Callable[[str], Customer]]:
    made: list[Customer] = []

    def make(username: str) -> Customer:
        customer = Customer(stack, username)
        made.append(customer)
        return customer

    yield make
    for customer in made:
        customer.close()


def log_in_and_start_shift(page: Page, balancer: Balancer) -> None:
    page.goto(balancer.url("/console/"))
    # Not logged in: the console sends us to the login page and back.
    page.fill("#id_username", "agent1")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/console/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    expect(page.locator("#status-pill")).to_have_attribute("data-status", "offline")
    page.get_by_role("button", name="Start shift").click()
    expect(page.locator("#status-pill")).to_have_attribute("data-status", "available")
    expect(page.locator("#status-label")).to_have_text("Available")


def pane_of(page: Page, session_id: str) -> Locator:
    return page.locator(f'.pane[data-session-id="{session_id}"]')


def accept_offer(page: Page, session_id: str) -> None:
    pane = pane_of(page, session_id)
    expect(pane.locator(".offer")).to_be_visible()
    pane.get_by_role("button", name="Accept").click()
    expect(pane).to_have_attribute("data-state", "active")


def reply(page: Page, session_id: str, text: str) -> None:
    box = pane_of(page, session_id).locator(".composer-input")
    box.fill(text)
    box.press("Enter")


def customer_bubbles(page: Page, session_id: str) -> Locator:
    return pane_of(page, session_id).locator(".msg.customer .bubble")


# --- the tests -----------------------------------------------------------------------------


def test_agent_serves_a_customer_from_offer_to_break_when_everything_works(
    page: Page, balancer: Balancer, customers: Callable[[str], Customer]
):
    log_in_and_start_shift(page, balancer)
    alice = customers("customer1")
    sid = alice.start_chat("My earbuds arrived broken")

    # The offer appears with a countdown that counts down.
    pane = pane_of(page, sid)
    expect(pane.locator(".offer")).to_be_visible()
    expect(pane.locator(".offer-topic")).to_contain_text("My earbuds arrived broken")
    countdown = pane.locator(".countdown-text")
    expect(countdown).to_have_text(re.compile(r"^\d+ s$"))
    first = int(countdown.inner_text().split()[0])
    assert 30 <= first <= 40
    # It keeps counting down, about a second per second.
    started = time.monotonic()
    expect(countdown).to_have_text(f"{first - 2} s", timeout=5000)
    assert time.monotonic() - started >= 0.7
    expect(page).to_have_title(re.compile("^● New chat"))

    accept_offer(page, sid)
    alice.expect("session.state", lambda f: f["session"]["status"] == "active")
    expect(pane.locator(".presence")).to_have_text("Customer online")

    # Messages both ways, with typing and read receipts.
    alice.send({"type": "typing"})
    expect(pane.locator(".typing")).to_be_visible()
    alice.say("Hi, one of the buds does not charge.")
    expect(customer_bubbles(page, sid)).to_have_text(["Hi, one of the buds does not charge."])
    expect(pane.locator(".typing")).to_be_hidden()
    # The console tells the customer it has read their message.
    assert alice.expect("read", lambda f: f["sender"] == "agent")["seq"] >= 1
    reply(page, sid, "Sorry about that! Let me look at your order.")
    got = alice.expect("message", lambda f: f["message"]["sender"] == "agent")
    assert got["message"]["body"] == "Sorry about that! Let me look at your order."
    agent_msg = pane.locator(".msg.agent[data-seq]")
    expect(agent_msg.locator(".receipt")).to_have_text("Sent")
    alice.send({"type": "read", "seq": got["message"]["seq"]})
    expect(agent_msg.locator(".receipt")).to_have_text("Read")

    # The customer's orders, with items and status; the read is on the access log.
    pane.locator(".pane-head").click()
    page.get_by_role("tab", name="Orders").click()
    orders = page.locator("#panel-body .record.order")
    expect(orders.first).to_be_visible()
    expect(orders.first.locator(".badge")).to_have_text(
        re.compile("delivered|shipped|placed|cancelled|returned")
    )
    assert orders.first.locator(".items li").count() >= 1
    assert db_read(
        lambda: CustomerDataAccess.objects.filter(
            what="orders", ok=True, session_id=sid, agent__user__username="agent1"
        ).exists()
    )

    # A break while a chat is open waits for the chat to end.
    take_break = page.get_by_role("button", name="Break after current chats")
    take_break.click()
    expect(page.locator("#status-pill")).to_have_attribute("data-status", "break_pending")
    expect(page.locator("#status-label")).to_contain_text("Break after current chats")

    pane.get_by_role("button", name="End chat…").click()
    alice.expect("end.requested", lambda f: f["by"] == "agent")
    expect(pane.locator(".end-notice")).to_contain_text("Waiting for the customer to confirm")
    alice.send({"type": "end.confirm"})
    expect(pane).to_have_attribute("data-state", "ended")
    expect(pane.locator(".end-notice")).to_contain_text("mutual agreement")
    expect(page.locator("#status-pill")).to_have_attribute("data-status", "on_break")
    expect(page.locator("#status-label")).to_have_text("On break")
    expect(page.get_by_role("button", name="Back from break")).to_be_visible()
    # The customer's data closes with the chat.
    expect(page.locator("#panel-body")).to_contain_text("no longer yours")


def test_console_holds_two_chats_side_by_side_when_two_customers_arrive(
    page: Page, balancer: Balancer, customers: Callable[[str], Customer]
):
    log_in_and_start_shift(page, balancer)
    alice, bob = customers("customer1"), customers("customer2")
    a = alice.start_chat("Where is my order?")
    b = bob.start_chat("Refund for a returned watch")

    accept_offer(page, a)
    accept_offer(page, b)
    expect(page.locator(".pane[data-state=active]")).to_have_count(2)
    seats = page.locator(".slot .pane .seat-label")
    expect(seats).to_have_text(["Seat 1", "Seat 2"])

    alice.say("It was due on Monday.")
    bob.say("I sent the watch back two weeks ago.")
    expect(customer_bubbles(page, a)).to_have_text(["It was due on Monday."])
    expect(customer_bubbles(page, b)).to_have_text(["I sent the watch back two weeks ago."])

    reply(page, a, "Let me check the tracking for you.")
    reply(page, b, "Thanks, I can see the return. One moment.")
    assert alice.expect("message", lambda f: f["message"]["sender"] == "agent")["message"][
        "body"
    ] == ("Let me check the tracking for you.")
    assert bob.expect("message", lambda f: f["message"]["sender"] == "agent")["message"][
        "body"
    ] == ("Thanks, I can see the return. One moment.")
    alice.say("Thank you!")
    bob.send({"type": "typing"})

    # The selected chat's customer data follows the selection.
    pane_of(page, b).locator(".pane-head").click()
    page.get_by_role("tab", name="Transactions").click()
    expect(page.locator("#panel-body .record.transaction").first).to_be_visible()
    pane_of(page, a).locator(".pane-head").click()
    page.get_by_role("tab", name="Orders").click()
    expect(page.locator("#panel-body .record.order").first).to_be_visible()
    expect(page.locator("#btn-break-request")).to_have_text("Break after current chats")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console.png"))


def test_declined_offer_leaves_the_seat_and_comes_back_when_the_agent_is_the_only_one_free(
    page: Page, balancer: Balancer, customers: Callable[[str], Customer]
):
    log_in_and_start_shift(page, balancer)
    alice = customers("customer1")
    sid = alice.start_chat("Quick question")
    pane = pane_of(page, sid)
    expect(pane.locator(".offer")).to_be_visible()
    first_seat = pane.locator(".seat-label").inner_text()

    pane.get_by_role("button", name="Decline").click()

    # Back at the head of the queue, it is offered again to the only free seat: the other one
    # (a declined seat goes to the back of the seat queue).
    expect(pane.locator(".offer")).to_be_visible()
    expect(page.locator(".offer:visible")).to_have_count(1)
    expect(pane.locator(".seat-label")).not_to_have_text(first_seat)
    accept_offer(page, sid)
    alice.say("Thanks for taking it")
    expect(customer_bubbles(page, sid)).to_have_text(["Thanks for taking it"])


def test_console_shows_markup_in_a_message_as_text_when_a_customer_sends_a_script(
    page: Page, balancer: Balancer, customers: Callable[[str], Customer]
):
    log_in_and_start_shift(page, balancer)
    mallory = customers("customer3")
    sid = mallory.start_chat("<b>bold</b> topic")
    accept_offer(page, sid)
    evil = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
    mallory.say(evil)

    expect(customer_bubbles(page, sid)).to_have_text([evil])
    pane = pane_of(page, sid)
    assert pane.locator(".transcript script, .transcript img").count() == 0
    expect(pane.locator(".topic")).to_have_text("<b>bold</b> topic")
    assert page.evaluate("() => window.__pwned") is None


def test_console_says_the_customer_left_and_then_that_the_chat_went_incomplete_when_they_stay_away(
    page: Page, balancer: Balancer, customers: Callable[[str], Customer]
):
    log_in_and_start_shift(page, balancer)
    alice = customers("customer2")
    sid = alice.start_chat("Lost connection on the train")
    accept_offer(page, sid)
    pane = pane_of(page, sid)
    expect(pane.locator(".presence")).to_have_text("Customer online")

    alice.close()  # the app goes away

    expect(pane.locator(".presence")).to_have_text("Customer disconnected")
    expect(pane.locator(".end-notice")).to_contain_text("disconnected")
    # Past CUSTOMER_GRACE_S the seat is freed and the chat is marked incomplete.
    expect(pane).to_have_attribute("data-state", "incomplete", timeout=15000)
    expect(pane.locator(".state")).to_have_text("Incomplete")
    expect(pane.locator(".end-notice")).to_contain_text("did not come back in time")
    expect(pane.locator(".composer")).to_be_hidden()
    # The agent closes the finished pane; the seat shows as free.
    pane.get_by_role("button", name="Close").click()
    expect(pane).to_have_count(0)
    expect(page.locator(".pane[data-state=empty]")).to_have_count(2)


def test_console_reconnects_and_shows_what_was_sent_meanwhile_once_when_its_server_dies(
    page: Page, balancer: Balancer, stack: Stack, customers: Callable[[str], Customer]
):
    log_in_and_start_shift(page, balancer)
    alice = customers("customer1")
    sid = alice.start_chat("Changing my address")
    accept_offer(page, sid)
    alice.say("Before the outage")
    expect(customer_bubbles(page, sid)).to_have_text(["Before the outage"])

    # First a cut from the page's side (the socket closes; the server stays up).
    page.evaluate("() => window.dayoneConsole.drop()")
    expect(page.locator("#conn")).to_have_attribute("data-state", "open", timeout=15000)

    # Then the server the console is on dies, and the network stays down for a moment while
    # the customer (on the other server) keeps writing.
    balancer.paused.set()
    balancer.kill(0)
    stack.kill_server(0)
    expect(page.locator("#conn")).to_have_attribute("data-state", "retrying")
    expect(page.locator("#banner")).to_contain_text("Connection lost")
    alice.say("During the outage, one")
    alice.say("During the outage, two")
    # The agent writes too; the reply waits for the connection and is sent once.
    reply(page, sid, "Still here, reconnecting")
    expect(pane_of(page, sid).locator(".msg.pending")).to_have_count(1)
    page.wait_for_timeout(500)
    balancer.paused.clear()

    expect(page.locator("#conn")).to_have_attribute("data-state", "open", timeout=20000)
    expect(customer_bubbles(page, sid)).to_have_text(
        ["Before the outage", "During the outage, one", "During the outage, two"]
    )
    got = alice.expect("message", lambda f: f["message"]["sender"] == "agent")
    assert got["message"]["body"] == "Still here, reconnecting"
    pane = pane_of(page, sid)
    expect(pane.locator(".msg.agent[data-seq]")).to_have_count(1)
    expect(pane.locator(".msg.pending")).to_have_count(0)
    seqs = [
        int(s)
        for s in pane.locator(".msg[data-seq]").evaluate_all(
            "items => items.map(i => i.dataset.seq)"
        )
    ]
    assert seqs == sorted(set(seqs)), f"every message once, in order: {seqs}"
    # And the conversation goes on.
    alice.say("After the outage")
    expect(customer_bubbles(page, sid).last).to_have_text("After the outage")


# --- DayOne's services down: the panel says so, the chat goes on ------------------------------


class FlakyDayOne:
    """A stand-in for DayOne's customer services that fails until told to recover."""

    ORDERS = {
        "results": [
            {
                "number": "DO-HTTP-1",
                "status": "shipped",
                "placed_at": "2026-01-02T10:00:00Z",
                "total_cents": 8900,
                "currency": "USD",
                "items": [{"sku": "B2", "name": "Buds 2", "quantity": 1, "unit_price_cents": 8900}],
            }
        ]
    }

    def __init__(self) -> None:
        self.healthy = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if fake.healthy.is_set() and self.path.split("?")[0].endswith("/orders"):
                    status, body = 200, json.dumps(fake.ORDERS).encode()
                else:
                    status, body = 500, b'{"error": "internal"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def dayone() -> Iterator[FlakyDayOne]:
    fake = FlakyDayOne()
    yield fake
    fake.close()


@pytest.fixture
def http_stack(django_db_setup: None, dayone: FlakyDayOne) -> Iterator[Stack]:
    from django.conf import settings

    started = Stack.start(
        servers=1,
        database_name=settings.DATABASES["default"]["NAME"],
        env={
            "DAYONE_DATA_PROVIDER": "http",
            "DAYONE_API_BASE_URL": dayone.base_url,
            "DAYONE_API_TOKEN": "t0ken",
            "DAYONE_API_TIMEOUT_S": "2",
        },
    )
    yield started
    print(started.logs(40))
    started.stop()


def test_console_shows_a_dayone_outage_in_the_panel_and_the_chat_goes_on_when_dayone_fails(
    page: Page, http_stack: Stack, dayone: FlakyDayOne
):
    page.goto(http_stack.url(0, "/console/"))
    page.fill("#id_username", "agent1")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/console/")
    page.get_by_role("button", name="Start shift").click()
    expect(page.locator("#status-pill")).to_have_attribute("data-status", "available")
    alice = Customer(http_stack, "customer1", server=0)
    try:
        sid = alice.start_chat("Where is my parcel?")
        accept_offer(page, sid)
        pane_of(page, sid).locator(".pane-head").click()
        page.get_by_role("tab", name="Orders").click()

        outage = page.locator("#panel-body .panel-state[data-kind=outage]")
        expect(outage).to_contain_text("DayOne data is unavailable right now")
        expect(outage).to_contain_text("(500)")
        expect(outage).to_contain_text("The chat is not affected")

        # The chat is untouched by the outage.
        alice.say("Are you still there?")
        expect(customer_bubbles(page, sid)).to_have_text(["Are you still there?"])
        reply(page, sid, "Yes! Our order system is slow, bear with me.")
        got = alice.expect("message", lambda f: f["message"]["sender"] == "agent")
        assert got["message"]["body"].startswith("Yes!")

        # DayOne recovers; "Try again" shows the orders.
        dayone.healthy.set()
        outage.get_by_role("button", name="Try again").click()
        expect(page.locator("#panel-body .record.order .record-title")).to_have_text(["DO-HTTP-1"])
    finally:
        alice.close()
