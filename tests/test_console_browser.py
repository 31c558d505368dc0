"""The agent console in a real browser (Debian's Chromium driven by Playwright) against the real
system: two daphne servers behind a small TCP load balancer, a Celery worker and beat.

Customers are scripted: REST for their session, a ``websockets`` client for their socket.
The console is only ever driven the way an agent drives it: clicks and keys.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect

from agents.models import CustomerDataAccess
from tests.console_browser import (
    Balancer,
    Customer,
    accept_offer,
    browser_page,
    customer_bubbles,
    db_read,
    log_in_and_start_shift,
    pane_of,
    reply,
    scripted_customers,
    seed_accounts,
    shoot,
)
from tests.e2e.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


@pytest.fixture(scope="module")
def stack(django_db_setup: None) -> Iterator[Stack]:
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
def page(transactional_db: None) -> Iterator[Page]:
    seed_accounts()
    with browser_page() as opened:
        yield opened


@pytest.fixture
def customers(stack: Stack, page: Page) -> Iterator[Callable[[str], Customer]]:
    with scripted_customers(stack) as make:
        yield make


# --- the tests -----------------------------------------------------------------------------


def test_agent_serves_a_customer_from_offer_to_break_when_everything_works(
    page: Page, balancer: Balancer, customers: Callable[[str], Customer]
):
    log_in_and_start_shift(page, balancer.url(""))
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
    log_in_and_start_shift(page, balancer.url(""))
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
    to_bob = bob.expect("message", lambda f: f["message"]["sender"] == "agent")["message"]
    assert to_bob["body"] == "Thanks, I can see the return. One moment."
    bob.send({"type": "read", "seq": to_bob["seq"]})
    expect(pane_of(page, b).locator(".msg.agent .receipt")).to_have_text("Read")
    expect(pane_of(page, a).locator(".msg.agent .receipt")).to_have_text("Sent")
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

    shoot(page, "console.png")


def test_declined_offer_leaves_the_seat_and_comes_back_when_the_agent_is_the_only_one_free(
    page: Page, balancer: Balancer, customers: Callable[[str], Customer]
):
    log_in_and_start_shift(page, balancer.url(""))
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
    log_in_and_start_shift(page, balancer.url(""))
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
    log_in_and_start_shift(page, balancer.url(""))
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
    shoot(page, "console-incomplete.png")
    # The agent closes the finished pane; the seat shows as free.
    pane.get_by_role("button", name="Close").click()
    expect(pane).to_have_count(0)
    expect(page.locator(".pane[data-state=empty]")).to_have_count(2)


def test_console_reconnects_and_shows_what_was_sent_meanwhile_once_when_its_server_dies(
    page: Page, balancer: Balancer, stack: Stack, customers: Callable[[str], Customer]
):
    log_in_and_start_shift(page, balancer.url(""))
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
    shoot(page, "console-reconnecting.png")
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
