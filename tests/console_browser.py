"""Shared pieces of the console's browser tests: Chromium, a scripted customer, a TCP balancer.

Playwright's sync API drives Debian's Chromium (``/usr/bin/chromium``); customers are scripted
with REST and a ``websockets`` client. A test module using these defines a module-scoped
``stack`` fixture (tests.e2e.stack.Stack) and imports the fixtures it needs from here.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from django.core.management import call_command
from playwright.sync_api import Locator, Page, expect, sync_playwright
from websockets.sync.client import ClientConnection, connect

from tests.e2e.stack import Stack

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


# --- what the test modules' fixtures are made of ----------------------------------------------


def seed_accounts() -> None:
    """agent1 (staff, agent, offline), customer1..3 with DayOne demo data (call it inside a
    ``transactional_db`` test so the server processes see them)."""
    call_command("seed_demo", agents=1, customers=3, password=PASSWORD, stdout=io.StringIO())


@contextlib.contextmanager
def browser_page() -> Iterator[Page]:
    """A fresh Chromium page; fails the test if the page raised a JavaScript error.

    Playwright's sync API runs an asyncio loop in this thread while it is open, and Django
    refuses ORM calls while a loop runs: so the database is seeded before the browser starts,
    flushed after it stops, and read in between through :func:`db_read` (another thread).
    """
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = chromium.new_context(
            viewport={"width": 1440, "height": 900}, locale="en-US", timezone_id="UTC"
        )
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # Printed, so pytest shows them when a test fails.
        page.on("console", lambda msg: print(f"console {msg.type}: {msg.text}"))
        page.on("websocket", lambda ws: ws.on("framereceived", lambda f: print(f"ws <- {f}")))
        try:
            yield page
        finally:
            context.close()
            chromium.close()
        assert errors == [], f"the page raised: {errors}"


@contextlib.contextmanager
def scripted_customers(stack: Stack) -> Iterator[Callable[[str], Customer]]:
    made: list[Customer] = []

    def make(username: str) -> Customer:
        customer = Customer(stack, username)
        made.append(customer)
        return customer

    try:
        yield make
    finally:
        for customer in made:
            customer.close()


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


# --- the agent's moves ------------------------------------------------------------------------


def log_in_and_start_shift(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/console/")
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


def shoot(page: Page, name: str) -> None:
    """A screenshot for people (artifacts/ is not committed; docs/img/console.png is a copy)."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name))


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
