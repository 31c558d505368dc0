"""The authorisation matrix: who may do what, for every REST endpoint, socket and admin page.

Six callers: anonymous, the session's customer, another customer, the session's agent, another
agent, and a support lead. One world per cell: customer C has an ACTIVE session S with agent A
(one message in it); customer C2 has none; agent A2 is available with free seats; the lead is
in the "Support lead" group and has no agent profile. Every cell of the tables below is one test
(REST and admin) or one connection (sockets). docs/security.md reproduces the tables.

Mutating cells (POSTs) also check that a refused call changed nothing.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import URLResolver, get_resolver
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from agents.demo_data import seed_customer_data
from agents.models import Agent
from chat import services
from chat.models import ChatSession, Message, Role, SessionStatus
from dayone_chat.routing import websocket_application as app
from matching.services import match_run, offer_accept
from tests import history_builders as build
from tests.e2e.helpers import Socket, adb, flush_layer, new_id, refused_with, token_for
from tests.factories import CustomerFactory, SessionFactory, available_agent

PERSONAS = ("anonymous", "customer", "other_customer", "agent", "other_agent", "lead")


@dataclass
class World:
    people: dict[str, User | None]
    session: ChatSession
    agent: Agent
    other_agent: Agent


def build_world() -> World:
    customer, other_customer = CustomerFactory(), CustomerFactory()
    seed_customer_data(customer)
    agent = available_agent()
    session = SessionFactory(customer=customer, topic="Refund")
    match_run()  # the matcher runs after commit, which a rolled-back test never reaches
    session = offer_accept(session_id=session.id, agent=agent)
    services.message_post(
        session_id=session.id,
        author=customer,
        role=Role.CUSTOMER,
        client_msg_id=uuid.uuid4(),
        body="first",
    )
    other_agent = available_agent()
    people: dict[str, User | None] = {
        "anonymous": None,
        "customer": customer,
        "other_customer": other_customer,
        "agent": agent.user,
        "other_agent": other_agent.user,
        "lead": build.lead(),
    }
    people["lead"].set_password("dayone")
    people["lead"].save(update_fields=["password"])
    session.refresh_from_db()
    return World(people=people, session=session, agent=agent, other_agent=other_agent)


def rest_client(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
    return client


# --- REST ------------------------------------------------------------------------------------

S = "{session}"
A = "{agent}"
# (method, path, body): expected status per persona, in PERSONAS order.
REST: dict[tuple[str, str], tuple[int, ...]] = {
    # Public by design: logging in. Token refresh with a token of the caller's own.
    ("POST", "/api/auth/token"): (200, 200, 200, 200, 200, 200),
    ("POST", "/api/auth/token/refresh"): (200, 200, 200, 200, 200, 200),
    ("POST", "/api/auth/ws-ticket"): (401, 200, 200, 200, 200, 200),
    ("GET", "/api/sessions"): (401, 200, 200, 200, 200, 200),
    ("POST", "/api/sessions"): (401, 409, 201, 403, 403, 403),
    ("GET", f"/api/sessions/{S}"): (401, 200, 404, 200, 404, 404),
    ("GET", f"/api/sessions/{S}/messages"): (401, 200, 404, 200, 404, 404),
    ("POST", f"/api/sessions/{S}/messages"): (401, 201, 404, 201, 404, 404),
    ("POST", f"/api/sessions/{S}/resume"): (401, 200, 404, 404, 404, 404),
    ("POST", f"/api/sessions/{S}/end"): (401, 200, 404, 200, 404, 404),
    ("GET", "/api/agent/me"): (401, 403, 403, 200, 200, 403),
    ("GET", "/api/agent/queue"): (401, 403, 403, 200, 200, 403),
    ("GET", f"/api/agent/customers/{S}/profile"): (401, 403, 403, 200, 403, 403),
    ("GET", f"/api/agent/customers/{S}/orders"): (401, 403, 403, 200, 403, 403),
    ("GET", f"/api/agent/customers/{S}/transactions"): (401, 403, 403, 200, 403, 403),
    ("GET", "/api/ops/queue"): (401, 403, 403, 403, 403, 200),
    ("GET", "/api/ops/queue/history"): (401, 403, 403, 403, 403, 200),
    # Public by design: the schema and its viewer describe the API, they hold no data.
    ("GET", "/api/schema/"): (200, 200, 200, 200, 200, 200),
    ("GET", "/api/docs/"): (200, 200, 200, 200, 200, 200),
}
BODIES = {
    "/api/sessions": {"topic": "hello"},
    f"/api/sessions/{S}/messages": {"client_msg_id": "{uuid}", "body": "hi"},
}


def _fill(path: str, world: World) -> str:
    return path.replace(S, str(world.session.id)).replace(A, str(world.agent.id))


REST_CELLS = [
    pytest.param(method, path, persona, expected[i], id=f"{method} {path} as {persona}")
    for (method, path), expected in REST.items()
    for i, persona in enumerate(PERSONAS)
]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path", "persona", "expected"), REST_CELLS)
def test_rest_answers_each_caller_as_the_matrix_says_when_called(method, path, persona, expected):
    world = build_world()
    before = (
        ChatSession.objects.filter(pk=world.session.pk).values().get(),
        Message.objects.count(),
        ChatSession.objects.count(),
    )
    client = rest_client(world.people[persona])
    url = _fill(path, world)
    if method == "GET":
        answer = client.get(url)
    else:
        body = dict(BODIES.get(path, {}))
        if body.get("client_msg_id") == "{uuid}":
            body["client_msg_id"] = str(uuid.uuid4())
        # Logging in: each caller with its own account (the anonymous with the customer's).
        who = world.people[persona] or world.people["customer"]
        if path == "/api/auth/token":
            body = {"username": who.username, "password": "dayone"}
        elif path == "/api/auth/token/refresh":
            body = {"refresh": str(RefreshToken.for_user(who))}
        answer = client.post(url, body, format="json")
    assert answer.status_code == expected, answer.content[:300]
    if answer.status_code >= 400:
        assert set(answer.json()) >= {"code", "detail"}
        after = (
            ChatSession.objects.filter(pk=world.session.pk).values().get(),
            Message.objects.count(),
            ChatSession.objects.count(),
        )
        assert after == before, "a refused call changed something"


def _routes(patterns: list, prefix: str = "") -> list[str]:
    routes = []
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            routes.extend(_routes(pattern.url_patterns, route))
        else:
            routes.append(route)
    return routes


def test_rest_matrix_covers_every_api_route_when_a_route_is_added():
    # A new endpoint without a row in the matrix fails here, not silently.
    mounted = {
        "/" + re.sub(r"<[^>]+>", S, route).rstrip("$").lstrip("^")
        for route in _routes(get_resolver().url_patterns)
        if route.startswith("api/")
    }
    covered = {path for _, path in REST}
    assert mounted - covered == set()


@pytest.mark.django_db
@pytest.mark.parametrize("persona", PERSONAS[1:])
def test_session_list_shows_only_the_callers_own_sessions_when_anyone_lists(persona):
    world = build_world()
    listed = rest_client(world.people[persona]).get("/api/sessions").json()["results"]
    ids = {row["id"] for row in listed}
    assert (str(world.session.id) in ids) == (persona == "customer")


@pytest.mark.django_db
def test_session_cookie_posts_are_refused_without_a_csrf_token_when_an_agent_is_logged_in():
    # The console talks to REST with its session cookie: a cross-site form must not ride on it.
    world = build_world()
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(world.people["agent"])
    answer = browser.post(
        f"/api/sessions/{world.session.id}/messages",
        {"client_msg_id": new_id(), "body": "forged"},
        content_type="application/json",
    )
    assert answer.status_code == 403
    assert Message.objects.filter(body="forged").count() == 0


# --- admin and pages -------------------------------------------------------------------------

OK, LOGIN, DENIED = 200, 302, 403
# Pages are GETs; "302" means "sent to the login page". Agents are staff without model
# permissions: the admin shows them an index with nothing in it and refuses every model page.
PAGES: dict[str, tuple[int, ...]] = {
    "/": (OK, OK, OK, OK, OK, OK),
    "/console/": (LOGIN, DENIED, DENIED, OK, OK, DENIED),
    "/admin/": (LOGIN, LOGIN, LOGIN, OK, OK, OK),
    "/admin/dashboard/": (LOGIN, LOGIN, LOGIN, DENIED, DENIED, OK),
    "/admin/chat/chatsession/": (LOGIN, LOGIN, LOGIN, DENIED, DENIED, OK),
    f"/admin/chat/chatsession/{S}/change/": (LOGIN, LOGIN, LOGIN, DENIED, DENIED, OK),
    "/admin/agents/agent/": (LOGIN, LOGIN, LOGIN, DENIED, DENIED, OK),
    f"/admin/agents/agent/{A}/change/": (LOGIN, LOGIN, LOGIN, DENIED, DENIED, OK),
    "/admin/agents/shift/": (LOGIN, LOGIN, LOGIN, DENIED, DENIED, OK),
    "/admin/agents/shift/add/": (LOGIN, LOGIN, LOGIN, DENIED, DENIED, OK),
    "/admin/agents/customerdataaccess/": (LOGIN, LOGIN, LOGIN, DENIED, DENIED, OK),
    "/admin/matching/assignment/": (LOGIN, LOGIN, LOGIN, DENIED, DENIED, OK),
    "/admin/history/purgerecord/": (LOGIN, LOGIN, LOGIN, DENIED, DENIED, OK),
    # Accounts are the superusers' business, not the leads'.
    "/admin/auth/user/": (LOGIN, LOGIN, LOGIN, DENIED, DENIED, DENIED),
    "/admin/auth/group/": (LOGIN, LOGIN, LOGIN, DENIED, DENIED, DENIED),
}
PAGE_CELLS = [
    pytest.param(path, persona, expected[i], id=f"{path} as {persona}")
    for path, expected in PAGES.items()
    for i, persona in enumerate(PERSONAS)
]


def browser_for(user: User | None) -> Client:
    browser = Client()
    if user is not None:
        browser.force_login(user)
    return browser


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "persona", "expected"), PAGE_CELLS)
def test_pages_answer_each_caller_as_the_matrix_says_when_opened(path, persona, expected):
    world = build_world()
    answer = browser_for(world.people[persona]).get(_fill(path, world))
    assert answer.status_code == expected
    if expected == LOGIN:
        assert "/login/" in answer["Location"]


# Interventions: POSTs that change a session or an agent. Only the lead may.
ACTIONS: dict[str, tuple[int, ...]] = {
    f"/admin/chat/chatsession/{S}/close/": (LOGIN, LOGIN, LOGIN, DENIED, DENIED, LOGIN),
    f"/admin/chat/chatsession/{S}/requeue/": (LOGIN, LOGIN, LOGIN, DENIED, DENIED, LOGIN),
}
ACTION_CELLS = [
    pytest.param(path, persona, expected[i], id=f"POST {path} as {persona}")
    for path, expected in ACTIONS.items()
    for i, persona in enumerate(PERSONAS)
]


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "persona", "expected"), ACTION_CELLS)
def test_admin_interventions_are_the_leads_alone_when_posted(path, persona, expected):
    world = build_world()
    browser = browser_for(world.people[persona])
    answer = browser.post(_fill(path, world))
    assert answer.status_code == expected
    status = ChatSession.objects.get(pk=world.session.pk).status
    if persona == "lead":
        # A redirect back to the session's page (not to the login), and the session moved.
        assert "/login/" not in answer["Location"]
        assert status != SessionStatus.ACTIVE
    else:
        assert status == SessionStatus.ACTIVE


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("persona", "expected"),
    [
        ("anonymous", LOGIN),
        ("customer", LOGIN),
        ("other_customer", LOGIN),
        ("agent", DENIED),
        ("other_agent", DENIED),
        ("lead", OK),
    ],
)
def test_force_offline_action_is_the_leads_alone_when_posted(persona, expected):
    world = build_world()
    answer = browser_for(world.people[persona]).post(
        "/admin/agents/agent/",
        {
            "action": "force_offline",
            "_selected_action": [str(world.agent.pk)],
            "index": "0",
            "select_across": "0",
        },
    )
    if expected == OK:
        assert answer.status_code == LOGIN  # the changelist again, after the action
        assert Agent.objects.get(pk=world.agent.pk).status == "offline"
    else:
        # Agents get the changelist refused; the anonymous are sent to log in.
        assert answer.status_code == expected
        assert Agent.objects.get(pk=world.agent.pk).status == "available"


# --- sockets ---------------------------------------------------------------------------------

# Close code per persona, or "open" when the socket is accepted and streams.
SOCKETS: dict[str, tuple[object, ...]] = {
    f"/ws/sessions/{S}/": (4401, "open", 4404, 4404, 4404, 4404),
    "/ws/agent/": (4401, 4403, 4403, "open", "open", 4403),
    "/ws/nowhere/": (4401, 4404, 4404, 4404, 4404, 4404),
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_sockets_answer_each_caller_as_the_matrix_says_when_opened():
    await flush_layer()
    world = await adb(build_world)()
    failures = []
    for path, expected in SOCKETS.items():
        url = _fill(path, world)
        for persona, want in zip(PERSONAS, expected, strict=True):
            user = world.people[persona]
            if want == "open":
                socket = await Socket.open(app, url, user=user)
                first = await socket.recv()
                got: object = "open" if first["type"] in ("session.state", "agent.state") else first
                await socket.close()
            else:
                got = await refused_with(app, url, user=user)
            if got != want:
                failures.append(f"{url} as {persona}: {got!r}, expected {want!r}")
    assert failures == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_another_agents_console_gets_errors_and_changes_nothing_when_it_names_the_session():
    await flush_layer()
    world = await adb(build_world)()
    sid = str(world.session.id)
    socket = await Socket.open(app, "/ws/agent/", user=world.people["other_agent"])
    await socket.expect("agent.state")
    frames = [
        {"type": "message.send", "session_id": sid, "client_msg_id": new_id(), "body": "x"},
        {"type": "sync", "session_id": sid, "after_seq": 0},
        {"type": "typing", "session_id": sid},
        {"type": "read", "session_id": sid, "seq": 1},
        {"type": "end.request", "session_id": sid},
        {"type": "end.confirm", "session_id": sid},
        {"type": "offer.accept", "session_id": sid},
        {"type": "offer.decline", "session_id": sid},
    ]
    for frame in frames:
        await socket.send(frame)
        answer = await socket.expect("error")
        assert answer["code"] in {"not_found", "forbidden", "no_offer"}, (
            frame,
            answer,
        )
    # Nothing of the session leaked to the stranger, and nothing changed.
    rest = await socket.drain(0.3)
    assert not [f for f in socket.seen + rest if f["type"] in ("message", "session.state")]
    await socket.close()
    session = await adb(ChatSession.objects.get)(pk=world.session.pk)
    assert (session.status, session.last_seq, session.end_requested_by) == (
        SessionStatus.ACTIVE,
        1,
        world.session.end_requested_by,
    )
