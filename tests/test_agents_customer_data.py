"""DayOne customer data: the built-in and HTTP providers, the access rule and the access log.

The HTTP provider is tested against a real local HTTP server standing in for DayOne (the only
thing mocked is the outside world); everything else runs on the real PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from agents.customer_data import (
    BuiltinProvider,
    CustomerDataForbidden,
    CustomerDataNotFound,
    CustomerDataUnavailable,
    HttpProvider,
    customer_data_read,
)
from agents.demo_data import seed_customer_data
from agents.models import Agent, CustomerDataAccess, Seat
from chat.models import ChatSession, SessionStatus

pytestmark = pytest.mark.django_db


# --- builders ----------------------------------------------------------------------------------


def make_agent(name: str) -> Agent:
    user = User.objects.create_user(username=name, password="pw", is_staff=True)
    agent = Agent.objects.create(user=user, display_name=name.title(), capacity=2)
    for index in range(2):
        Seat.objects.create(agent=agent, index=index)
    return agent


def make_customer(name: str, *, seeded: bool = True) -> User:
    user = User.objects.create_user(username=name, password="pw")
    if seeded:
        seed_customer_data(user)
    return user


def make_session(customer: User, agent: Agent | None, status: str) -> ChatSession:
    """A session row in ``status`` (the read side only needs the row, not its history)."""
    now = timezone.now()
    fields: dict[str, object] = {"customer": customer, "status": status, "created_at": now}
    if status in (SessionStatus.OFFERED, SessionStatus.ACTIVE):
        fields.update(agent=agent, seat=agent.seats.order_by("index").first(), ticket=1)
    elif status == SessionStatus.ENDED:
        fields.update(agent=agent, ended_at=now, end_reason="mutual")
    elif status == SessionStatus.WAITING:
        fields.update(ticket=1, enqueued_at=now)
    return ChatSession.objects.create(**fields)


@pytest.fixture
def agent() -> Agent:
    return make_agent("agent_a")


@pytest.fixture
def customer() -> User:
    return make_customer("cust_a")


def url(session: ChatSession | uuid.UUID, what: str) -> str:
    sid = session.id if isinstance(session, ChatSession) else session
    return f"/api/agent/customers/{sid}/{what}"


# --- the built-in provider ----------------------------------------------------------------------


def test_builtin_provider_returns_profile_orders_with_items_and_transactions_when_seeded(
    customer,
):
    provider = BuiltinProvider()
    profile = provider.profile(customer=customer)
    orders = provider.orders(customer=customer, limit=10)
    transactions = provider.transactions(customer=customer, limit=20)

    assert profile["customer_ref"] == "cust_a"
    assert profile["full_name"] == customer.get_full_name()
    assert profile["email"]
    assert 2 <= len(orders) <= 6
    assert all(order["items"] for order in orders)
    assert all(item["quantity"] >= 1 for order in orders for item in order["items"])
    # Newest first, and each order total is the sum of its lines.
    placed = [order["placed_at"] for order in orders]
    assert placed == sorted(placed, reverse=True)
    for order in orders:
        lines = sum(i["quantity"] * i["unit_price_cents"] for i in order["items"])
        assert order["total_cents"] == lines
    numbers = {order["number"] for order in orders}
    assert {tx["order_number"] for tx in transactions} <= numbers
    assert any(tx["kind"] == "payment" for tx in transactions)


def test_builtin_provider_limits_orders_when_asked_for_fewer(customer):
    assert len(BuiltinProvider().orders(customer=customer, limit=1)) == 1


def test_builtin_provider_says_not_found_when_the_customer_has_no_profile():
    bare = make_customer("bare", seeded=False)
    with pytest.raises(CustomerDataNotFound):
        BuiltinProvider().profile(customer=bare)
    assert BuiltinProvider().orders(customer=bare, limit=10) == []


# --- the access rule and the log, through the REST API ------------------------------------------


@pytest.mark.parametrize("status", [SessionStatus.OFFERED, SessionStatus.ACTIVE])
def test_agent_reads_profile_and_the_read_is_logged_when_session_is_seated_with_them(
    client, agent, customer, status
):
    session = make_session(customer, agent, status)
    client.force_login(agent.user)

    response = client.get(url(session, "profile"))

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["full_name"] == customer.dayone_profile.full_name
    assert body["source"] == "builtin"
    log = CustomerDataAccess.objects.get()
    assert (log.agent, log.customer, log.session, log.what, log.ok) == (
        agent,
        customer,
        session,
        "profile",
        True,
    )


def test_agent_reads_orders_with_items_and_transactions_when_session_is_active(
    client, agent, customer
):
    session = make_session(customer, agent, SessionStatus.ACTIVE)
    client.force_login(agent.user)

    orders = client.get(url(session, "orders"))
    transactions = client.get(url(session, "transactions") + "?limit=2")

    assert orders.status_code == 200
    results = orders.json()["results"]
    assert results
    assert all(o["items"] for o in results)
    assert all(o["status"] for o in results)
    assert transactions.status_code == 200
    assert len(transactions.json()["results"]) <= 2
    assert list(CustomerDataAccess.objects.order_by("at").values_list("what", "ok")) == [
        ("orders", True),
        ("transactions", True),
    ]


def test_read_is_refused_and_logged_as_refused_when_session_belongs_to_another_agent(
    client, agent, customer
):
    other = make_agent("agent_b")
    session = make_session(customer, agent, SessionStatus.ACTIVE)
    client.force_login(other.user)

    for what in ("profile", "orders", "transactions"):
        response = client.get(url(session, what))
        assert response.status_code == 403
        assert response.json()["code"] == "customer_data_forbidden"
        assert response.json()["detail"]

    logs = CustomerDataAccess.objects.all()
    assert logs.count() == 3
    assert {(log.agent_id, log.customer_id, log.ok) for log in logs} == {
        (other.pk, customer.pk, False)
    }


@pytest.mark.parametrize(
    "status", [SessionStatus.ENDED, SessionStatus.INCOMPLETE, SessionStatus.WAITING]
)
def test_read_is_refused_and_logged_when_session_is_no_longer_seated_with_the_agent(
    client, agent, customer, status
):
    session = make_session(customer, agent, status)
    if status == SessionStatus.INCOMPLETE:
        session.agent = agent
        session.save(update_fields=["agent"])
    client.force_login(agent.user)

    response = client.get(url(session, "orders"))

    assert response.status_code == 403
    assert response.json()["code"] == "customer_data_forbidden"
    log = CustomerDataAccess.objects.get()
    assert (log.agent, log.session, log.what, log.ok) == (agent, session, "orders", False)


def test_read_is_refused_and_reported_to_the_log_when_caller_is_a_customer(
    client, agent, customer, caplog
):
    session = make_session(customer, agent, SessionStatus.ACTIVE)
    client.force_login(customer)

    with caplog.at_level(logging.WARNING, logger="agents.customer_data"):
        response = client.get(url(session, "profile"))

    assert response.status_code == 403
    assert response.json()["code"] == "customer_data_forbidden"
    # No agent to attribute it to in the access table: the refusal goes to the security log.
    assert CustomerDataAccess.objects.count() == 0
    assert any("is not an agent" in r.getMessage() for r in caplog.records)


def test_read_is_refused_when_staff_user_has_no_agent_profile(client, agent, customer):
    session = make_session(customer, agent, SessionStatus.ACTIVE)
    lead = User.objects.create_user(username="lead_x", password="pw", is_staff=True)
    client.force_login(lead)

    assert client.get(url(session, "profile")).status_code == 403


def test_read_is_refused_when_session_does_not_exist(client, agent):
    client.force_login(agent.user)
    response = client.get(url(uuid.uuid4(), "profile"))
    assert response.status_code == 403
    assert response.json()["code"] == "customer_data_forbidden"


def test_read_is_refused_when_not_logged_in(client, agent, customer):
    session = make_session(customer, agent, SessionStatus.ACTIVE)
    response = client.get(url(session, "profile"))
    assert response.status_code in (401, 403)
    assert CustomerDataAccess.objects.count() == 0


def test_read_answers_400_when_limit_is_not_a_number(client, agent, customer):
    session = make_session(customer, agent, SessionStatus.ACTIVE)
    client.force_login(agent.user)
    response = client.get(url(session, "orders") + "?limit=lots")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


# --- the HTTP provider against a local stand-in for DayOne --------------------------------------

Handler = Callable[[BaseHTTPRequestHandler], tuple[int, bytes]]


class FakeDayOne:
    """A real HTTP server on 127.0.0.1; ``routes`` maps a path suffix to a handler."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        fake = self

        class RequestHandler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.requests.append((self.path, dict(self.headers)))
                path = self.path.split("?")[0]
                for suffix, handler in fake.routes.items():
                    if path.endswith(suffix):
                        status, body = handler(self)
                        break
                else:
                    status, body = 404, b'{"detail": "no such customer"}'
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the timeout test)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def provider(self, timeout_s: float = 2.0) -> HttpProvider:
        return HttpProvider(base_url=self.base_url, token="s3cret", timeout_s=timeout_s)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def dayone() -> Iterator[FakeDayOne]:
    fake = FakeDayOne()
    yield fake
    fake.close()


def answer(status: int, payload: object) -> Handler:
    return lambda _request: (status, json.dumps(payload).encode())


PROFILE = {
    "full_name": "Amara Okafor",
    "email": "amara@example.com",
    "phone": "+1 555 100 2000",
    "tier": "premium",
    "customer_since": "2020-04-01",
    "city": "Austin",
    "country": "US",
}
ORDERS = {
    "results": [
        {
            "number": "DO-1",
            "status": "shipped",
            "placed_at": "2025-01-02T10:00:00Z",
            "total_cents": 8900,
            "currency": "USD",
            "items": [
                {"sku": "B2", "name": "Buds 2", "quantity": 1, "unit_price_cents": 8900},
            ],
        }
    ]
}
TRANSACTIONS = [
    {
        "reference": "TX-1",
        "kind": "payment",
        "amount_cents": 8900,
        "currency": "USD",
        "created_at": "2025-01-02T10:01:00Z",
        "order_number": "DO-1",
        "method": "visa •••• 4242",
    }
]


def test_http_provider_maps_dayone_answers_and_sends_the_token_when_dayone_answers(
    dayone, customer
):
    dayone.routes = {
        "/profile": answer(200, PROFILE),
        "/orders": answer(200, ORDERS),
        "/transactions": answer(200, TRANSACTIONS),
    }
    provider = dayone.provider()

    profile = provider.profile(customer=customer)
    orders = provider.orders(customer=customer, limit=5)
    transactions = provider.transactions(customer=customer, limit=5)

    assert profile["full_name"] == "Amara Okafor"
    assert profile["customer_ref"] == "cust_a"
    assert orders[0]["items"][0]["name"] == "Buds 2"
    assert transactions[0]["order_number"] == "DO-1"
    paths = [path for path, _ in dayone.requests]
    assert paths == [
        "/v1/customers/cust_a/profile",
        "/v1/customers/cust_a/orders?limit=5",
        "/v1/customers/cust_a/transactions?limit=5",
    ]
    assert all(h.get("Authorization") == "Bearer s3cret" for _, h in dayone.requests)


def test_http_provider_reports_an_outage_when_dayone_answers_500(dayone, customer):
    dayone.routes = {"/profile": answer(500, {"error": "boom"})}
    with pytest.raises(CustomerDataUnavailable) as caught:
        dayone.provider().profile(customer=customer)
    assert caught.value.http_status == 503
    assert "(500)" in caught.value.detail


def test_http_provider_reports_an_outage_when_dayone_is_too_slow(dayone, customer):
    def slow(_request: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        time.sleep(1.0)
        return 200, json.dumps(PROFILE).encode()

    dayone.routes = {"/profile": slow}
    started = time.monotonic()
    with pytest.raises(CustomerDataUnavailable) as caught:
        dayone.provider(timeout_s=0.2).profile(customer=customer)
    assert time.monotonic() - started < 0.9
    assert "did not answer within 0.2 s" in caught.value.detail


def test_http_provider_reports_an_outage_when_dayone_sends_bad_json(dayone, customer):
    dayone.routes = {"/orders": lambda _r: (200, b"<html>gateway</html>")}
    with pytest.raises(CustomerDataUnavailable) as caught:
        dayone.provider().orders(customer=customer, limit=5)
    assert "could not read" in caught.value.detail


@pytest.mark.parametrize(
    "payload",
    [
        {"results": [{"number": "DO-1"}]},  # no status, no total
        {"results": [{**ORDERS["results"][0], "total_cents": "lots"}]},
        {"results": "nope"},
        ["not an object"],
    ],
)
def test_http_provider_reports_an_outage_when_dayone_json_has_the_wrong_shape(
    dayone, customer, payload
):
    dayone.routes = {"/orders": answer(200, payload)}
    with pytest.raises(CustomerDataUnavailable):
        dayone.provider().orders(customer=customer, limit=5)


def test_http_provider_says_not_found_when_dayone_does_not_know_the_customer(dayone, customer):
    with pytest.raises(CustomerDataNotFound):
        dayone.provider().profile(customer=customer)


def test_http_provider_reports_an_outage_when_nothing_listens(customer):
    dead = HttpProvider(base_url="http://127.0.0.1:1/v1", token="t", timeout_s=1)
    with pytest.raises(CustomerDataUnavailable) as caught:
        dead.transactions(customer=customer, limit=5)
    assert "cannot be reached" in caught.value.detail


def test_http_provider_reports_it_is_not_configured_when_base_url_is_empty(customer):
    with pytest.raises(CustomerDataUnavailable) as caught:
        HttpProvider(base_url="", token="", timeout_s=1).profile(customer=customer)
    assert "DAYONE_API_BASE_URL" in caught.value.detail


def test_http_provider_escapes_the_customer_reference_when_it_has_odd_characters():
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(200, json=PROFILE)

    odd = User.objects.create_user(username="a/b@c", password="pw")
    provider = HttpProvider(
        base_url="https://dayone.test/v1",
        token="t",
        timeout_s=1,
        transport=httpx.MockTransport(handler),
    )
    provider.profile(customer=odd)
    assert seen == ["/v1/customers/a%2Fb%40c/profile"]


def test_api_answers_503_and_still_logs_the_read_when_dayone_is_down(
    client, settings, agent, customer, dayone
):
    settings.DAYONE_DATA_PROVIDER = "http"
    settings.DAYONE_API_BASE_URL = dayone.base_url
    settings.DAYONE_API_TOKEN = "s3cret"
    dayone.routes = {"/transactions": answer(502, {"error": "bad gateway"})}
    session = make_session(customer, agent, SessionStatus.ACTIVE)
    client.force_login(agent.user)

    response = client.get(url(session, "transactions"))

    assert response.status_code == 503
    assert response.json()["code"] == "customer_data_unavailable"
    assert "(502)" in response.json()["detail"]
    log = CustomerDataAccess.objects.get()
    assert (log.what, log.ok) == ("transactions", True)


def test_api_relays_dayone_data_when_the_http_provider_is_configured(
    client, settings, agent, customer, dayone
):
    settings.DAYONE_DATA_PROVIDER = "http"
    settings.DAYONE_API_BASE_URL = dayone.base_url
    dayone.routes = {"/profile": answer(200, PROFILE)}
    session = make_session(customer, agent, SessionStatus.OFFERED)
    client.force_login(agent.user)

    response = client.get(url(session, "profile"))

    assert response.status_code == 200
    assert response.json()["full_name"] == "Amara Okafor"
    assert response.json()["source"] == "http"


def test_read_function_refuses_without_touching_the_provider_when_access_is_denied(agent, customer):
    class Exploding:
        name = "exploding"

        def profile(self, *, customer: User) -> None:
            raise AssertionError("the provider must not be asked")

    session = make_session(customer, make_agent("agent_c"), SessionStatus.ACTIVE)
    with pytest.raises(CustomerDataForbidden):
        customer_data_read(
            user=agent.user, session_id=session.id, what="profile", provider=Exploding()
        )
