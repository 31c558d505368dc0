"""The console while DayOne's customer services fail: the panel says so, the chat goes on.

Its own stack (the HTTP provider pointed at a local stand-in for DayOne), in its own module so
that it never runs beside the other browser tests' stack: two stacks on one database would sweep
each other's sessions with different tunables.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Page, expect

from tests.console_browser import (
    Customer,
    accept_offer,
    browser_page,
    customer_bubbles,
    log_in_and_start_shift,
    pane_of,
    reply,
    seed_accounts,
    shoot,
)
from tests.e2e.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


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


@pytest.fixture(scope="module")
def dayone() -> Iterator[FlakyDayOne]:
    fake = FlakyDayOne()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def stack(django_db_setup: None, dayone: FlakyDayOne) -> Iterator[Stack]:
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


@pytest.fixture
def page(transactional_db: None) -> Iterator[Page]:
    seed_accounts()
    with browser_page() as opened:
        yield opened


def test_console_shows_a_dayone_outage_in_the_panel_and_the_chat_goes_on_when_dayone_fails(
    page: Page, stack: Stack, dayone: FlakyDayOne
):
    dayone.healthy.clear()
    log_in_and_start_shift(page, stack.url(0, ""))
    alice = Customer(stack, "customer1", server=0)
    try:
        sid = alice.start_chat("Where is my parcel?")
        accept_offer(page, sid)
        pane_of(page, sid).locator(".pane-head").click()
        page.get_by_role("tab", name="Orders").click()

        outage = page.locator("#panel-body .panel-state[data-kind=outage]")
        expect(outage).to_contain_text("DayOne data is unavailable right now")
        expect(outage).to_contain_text("(500)")
        expect(outage).to_contain_text("The chat is not affected")
        shoot(page, "console-dayone-outage.png")

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
