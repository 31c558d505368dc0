"""Security controls, each checked where it acts: socket tickets, the Origin allowlist, what the
logs may hold, size and depth limits on REST bodies and socket frames, and the security headers
of the production settings.

docs/security.md names the threat each control stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import uuid

import pytest
import redis
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from rest_framework.test import APIClient

from chat.api.authentication import TICKET_KEY_PREFIX
from chat.models import ChatSession, Message
from dayone_chat.routing import websocket_application as app
from tests.e2e.helpers import Socket, adb, flush_layer, new_id, refused_with, token_for
from tests.factories import CustomerFactory, SessionFactory, active_session
from tests.proc import PYTHON, ROOT, project_env

pytestmark = pytest.mark.django_db(transaction=True)


async def outcome(path: str, *, user=None, headers=None) -> object:
    """ "open" when the socket is accepted and streams, else the server's close code."""
    all_headers = list(headers or [])
    if user is not None:
        token = await adb(token_for)(user)
        all_headers.append((b"authorization", f"Bearer {token}".encode()))
    comm = WebsocketCommunicator(app, path, headers=all_headers)
    connected, code = await comm.connect(timeout=10)
    if not connected:
        return code
    first = await comm.receive_output(10)
    await comm.disconnect(timeout=10)
    return "open" if first["type"] == "websocket.send" else first.get("code")


def _waiting() -> ChatSession:
    return ChatSession.objects.select_related("customer").get(pk=SessionFactory().pk)


waiting = adb(_waiting)


def bearer(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
    return client


# --- socket tickets ----------------------------------------------------------------------------


def test_ticket_lives_thirty_seconds_in_redis_when_issued():
    customer = CustomerFactory()
    answer = bearer(customer).post("/api/auth/ws-ticket")
    body = answer.json()
    assert body["expires_in"] == 30
    ticket = body["ticket"]
    assert len(ticket) >= 40  # 32 random bytes, URL-safe
    assert ticket.count(".") == 0  # not a JWT: nothing long-lived goes into a URL
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    try:
        ttl = client.ttl(TICKET_KEY_PREFIX + ticket)
    finally:
        client.close()
    assert 25 <= ttl <= 30


@pytest.mark.asyncio
async def test_ticket_opens_exactly_one_socket_when_two_race_to_use_it():
    session = await waiting()
    ticket = (await adb(lambda: bearer(session.customer).post("/api/auth/ws-ticket"))()).json()[
        "ticket"
    ]
    path = f"/ws/sessions/{session.id}/?ticket={ticket}"
    results = await asyncio.gather(outcome(path), outcome(path))
    assert sorted(results, key=str) == [4401, "open"]


@pytest.mark.asyncio
@pytest.mark.parametrize("query", ["token={jwt}", "ticket={jwt}", "access={jwt}"])
async def test_long_lived_tokens_are_refused_when_put_in_the_url(query):
    session = await waiting()
    jwt = await adb(token_for)(session.customer)
    path = f"/ws/sessions/{session.id}/?{query.format(jwt=jwt)}"
    assert await refused_with(app, path) == 4401


@pytest.mark.asyncio
async def test_ticket_of_one_customer_cannot_open_another_customers_session():
    session = await waiting()
    stranger = await adb(CustomerFactory)()
    ticket = (await adb(lambda: bearer(stranger).post("/api/auth/ws-ticket"))()).json()["ticket"]
    assert await refused_with(app, f"/ws/sessions/{session.id}/?ticket={ticket}") == 4404


# --- Origin allowlist -----------------------------------------------------------------------

ALLOWED = "https://chat.dayone.example"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("origin", "accepted"),
    [
        ("https://chat.dayone.example", True),
        ("https://chat.dayone.example/", True),  # a trailing slash is the same origin
        ("HTTPS://CHAT.DAYONE.EXAMPLE", True),  # origins compare case-insensitively
        ("http://chat.dayone.example", False),  # another scheme
        ("https://chat.dayone.example:8443", False),  # another port
        ("https://chat.dayone.example.evil.example", False),  # suffix trick
        ("https://evilchat.dayone.example", False),
        ("https://sub.chat.dayone.example", False),  # subdomains are other origins
        ("https://evil.example/https://chat.dayone.example", False),
        ("null", False),  # sandboxed iframes and file:// pages
        ("", False),
    ],
)
async def test_origin_must_be_exactly_an_allowed_one_when_a_browser_connects(
    settings, origin, accepted
):
    settings.WS_ALLOWED_ORIGINS = [ALLOWED]
    session = await waiting()
    headers = [(b"origin", origin.encode()), (b"host", b"chat.dayone.example")]
    if accepted:
        socket = await Socket.open(
            app, f"/ws/sessions/{session.id}/", user=session.customer, headers=headers
        )
        assert (await socket.recv())["type"] == "session.state"
        await socket.close()
    else:
        # Refused before the credentials are even looked at: valid ones do not help.
        code = await refused_with(
            app, f"/ws/sessions/{session.id}/", user=session.customer, headers=headers
        )
        assert code == 4403


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("origin", "host", "accepted"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("http://127.0.0.1:8001", "127.0.0.1:8000", False),
        ("http://localhost:8000", "127.0.0.1:8000", False),
        ("http://127.0.0.1:8000.evil.example", "127.0.0.1:8000", False),
    ],
)
async def test_origin_must_name_the_requested_host_when_no_allowlist_is_set(
    settings, origin, host, accepted
):
    settings.WS_ALLOWED_ORIGINS = []
    session = await waiting()
    headers = [(b"origin", origin.encode()), (b"host", host.encode())]
    got = await outcome(f"/ws/sessions/{session.id}/", user=session.customer, headers=headers)
    assert got == ("open" if accepted else 4403)


# --- logs -------------------------------------------------------------------------------------


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("factory"):
            return  # factory_boy (test tooling) logs the test users' passwords at DEBUG
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(f"{record.name} {text}")


@pytest.fixture
def every_log_line():
    """Everything logged at any level by any logger while the test runs."""
    root = logging.getLogger()
    handler = Collect()
    old_level = root.level
    quiet = {
        name: logging.getLogger(name).level
        for name in ("daphne", "django.channels.server", "django.db.backends", "celery")
    }
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in quiet:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)


@pytest.mark.asyncio
async def test_tokens_tickets_passwords_and_bodies_never_reach_the_logs_when_people_chat(
    every_log_line,
):
    await flush_layer()

    def make():
        session, agent = active_session()
        return session, agent, session.customer, agent.user

    session, _agent, customer, agent_user = await adb(make)()
    password = "dayone"
    secret_words = f"my card number is {secrets.token_hex(8)}"
    agent_words = f"your code is {secrets.token_hex(8)}"
    rest_words = f"rest body {secrets.token_hex(8)}"

    def rest_calls() -> dict[str, str]:
        api = APIClient()
        pair = api.post(
            "/api/auth/token",
            {"username": customer.username, "password": password},
            format="json",
        ).json()
        api.post(
            "/api/auth/token", {"username": customer.username, "password": "wrong"}, format="json"
        )
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {pair['access']}")
        ticket = api.post("/api/auth/ws-ticket").json()["ticket"]
        api.post(
            f"/api/sessions/{session.id}/messages",
            {"client_msg_id": new_id(), "body": rest_words},
            format="json",
        )
        # Refused and failing calls log too: their bodies must not go with them.
        api.post(
            f"/api/sessions/{session.id}/messages",
            {"client_msg_id": "not-a-uuid", "body": rest_words + " again"},
            format="json",
        )
        bad = APIClient()
        bad.credentials(HTTP_AUTHORIZATION=f"Bearer {pair['access']}x")
        bad.get("/api/sessions")
        return {**pair, "ticket": ticket}

    secrets_of_run = await adb(rest_calls)()
    customer_socket = await Socket.open(
        app, f"/ws/sessions/{session.id}/?ticket={secrets_of_run['ticket']}"
    )
    agent_socket = await Socket.open(app, "/ws/agent/", user=agent_user)
    await customer_socket.expect("session.state")
    await agent_socket.expect("agent.state")
    await customer_socket.send(
        {"type": "message.send", "client_msg_id": new_id(), "body": secret_words}
    )
    await agent_socket.expect("message", lambda f: f["message"]["body"] == secret_words)
    await agent_socket.send(
        {
            "type": "message.send",
            "session_id": str(session.id),
            "client_msg_id": new_id(),
            "body": agent_words,
        }
    )
    await customer_socket.expect("message", lambda f: f["message"]["body"] == agent_words)
    # A refused frame that carries a body.
    await customer_socket.send({"type": "message.send", "client_msg_id": 5, "body": secret_words})
    await customer_socket.expect("error")
    await customer_socket.close()
    await agent_socket.close()

    log = "\n".join(every_log_line)
    assert log, "nothing was logged at all: the capture is broken"
    for name, value in {
        "access token": secrets_of_run["access"],
        "refresh token": secrets_of_run["refresh"],
        "ticket": secrets_of_run["ticket"],
        "customer's words": secret_words,
        "agent's words": agent_words,
        "REST body": rest_words,
    }.items():
        assert value not in log, f"the {name} was logged"
    assert f"password={password}" not in log
    assert f"'{password}'" not in log
    assert f'"{password}"' not in log


# --- size and depth limits ---------------------------------------------------------------------


def test_rest_body_is_refused_with_413_when_larger_than_the_limit(settings):
    session = SessionFactory()
    body = json.dumps({"client_msg_id": new_id(), "body": "x" * (70 * 1024)})
    answer = bearer(session.customer).post(
        f"/api/sessions/{session.id}/messages", body, content_type="application/json"
    )
    assert answer.status_code == 413
    assert answer.json()["code"] == "body_too_large"
    assert Message.objects.filter(session=session).count() == 0


def test_rest_body_is_refused_with_400_when_its_json_nests_deeper_than_python_recurses():
    session = SessionFactory()
    deep = "[" * 20000 + "]" * 20000  # 40 KB: under the size limit
    answer = bearer(session.customer).post(
        f"/api/sessions/{session.id}/messages", deep, content_type="application/json"
    )
    assert answer.status_code == 400
    assert answer.json()["code"] == "parse_error"


def test_rest_message_body_is_refused_when_over_max_message_chars():
    session = SessionFactory()
    answer = bearer(session.customer).post(
        f"/api/sessions/{session.id}/messages",
        {"client_msg_id": new_id(), "body": "é" * 4001},
        format="json",
    )
    assert answer.status_code == 400
    assert answer.json()["code"] == "body_too_long"


@pytest.mark.asyncio
async def test_socket_answers_oversized_and_too_deep_frames_with_errors_and_stays_open():
    await flush_layer()
    session = await waiting()
    socket = await Socket.open(app, f"/ws/sessions/{session.id}/", user=session.customer)
    await socket.expect("session.state")
    limit = django_settings.WS_MAX_FRAME_BYTES
    cases = [
        ("x" * (limit + 1), "frame_too_large"),
        # Multi-byte characters: the limit is in bytes, not characters.
        (json.dumps({"type": "typing", "pad": "€" * (limit // 3 + 1)}, ensure_ascii=False), None),
        ("[" * 8000 + "]" * 8000, "invalid_json"),
        ('{"a":' * 2500 + "1" + "}" * 2500, "invalid_json"),
    ]
    for text, code in cases:
        await socket.send_text(text)
        answer = await socket.expect("error")
        assert answer["code"] == (code or "frame_too_large"), (len(text.encode()), answer)
    body = "b" * (django_settings.MAX_MESSAGE_CHARS + 1)
    await socket.send({"type": "message.send", "client_msg_id": new_id(), "body": body})
    assert (await socket.expect("error"))["code"] == "body_too_long"
    # Still open and working.
    await socket.send({"type": "message.send", "client_msg_id": new_id(), "body": "fine"})
    assert (await socket.expect("message.ack"))["seq"] == 1
    await socket.close()
    assert await adb(Message.objects.filter(session_id=session.id).count)() == 1


# --- headers --------------------------------------------------------------------------------

PRINT_HEADERS = """
import json, django
django.setup()
from django.test import Client
client = Client(HTTP_HOST="chat.example.com")
out = {}
for path in ["/", "/console/", "/admin/login/", "/api/sessions", "/api/schema/"]:
    answer = client.get(path, HTTP_X_FORWARDED_PROTO="https")
    out[path] = {"status": answer.status_code, "headers": dict(answer.headers)}
plain = client.get("/api/sessions")
out["plain-http"] = {"status": plain.status_code, "headers": dict(plain.headers)}
health = client.get("/healthz")
out["plain-healthz"] = {"status": health.status_code, "headers": dict(health.headers)}
print(json.dumps(out))
"""


def test_production_answers_carry_the_security_headers_when_behind_the_tls_proxy():
    import subprocess

    env = project_env(
        DJANGO_SETTINGS_MODULE="dayone_chat.settings.production",
        SECRET_KEY=secrets.token_urlsafe(60),
        ALLOWED_HOSTS="chat.example.com",
    )
    done = subprocess.run(
        [PYTHON, "-c", PRINT_HEADERS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    for path in ["/", "/console/", "/admin/login/", "/api/sessions", "/api/schema/"]:
        headers = got[path]["headers"]
        assert headers["Strict-Transport-Security"] == (
            "max-age=31536000; includeSubDomains; preload"
        ), path
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["X-Frame-Options"] == "DENY", path
        assert headers["Referrer-Policy"] == "same-origin", path
    for page in ["/", "/admin/login/"]:
        csp = got[page]["headers"]["Content-Security-Policy"]
        script_src = csp.split("script-src")[1].split(";")[0]
        assert script_src.strip() == "'self'", page
        assert "frame-ancestors 'none'" in csp
        assert "object-src 'none'" in csp
    assert got["/"]["headers"]["Content-Security-Policy"].count("connect-src") == 1
    assert got["/console/"]["status"] == 302  # to the login page, over https
    # Plain HTTP is sent to HTTPS (the proxy should never let it through, but if it does) ...
    assert got["plain-http"]["status"] == 301
    assert got["plain-http"]["headers"]["Location"].startswith("https://chat.example.com/")
    # ... except the health check, which load balancers call over plain HTTP.
    assert got["plain-healthz"]["status"] in (200, 503)


def test_admin_pages_get_a_strict_policy_and_the_dashboard_its_exception_when_served(client):
    from tests import history_builders as build

    client.force_login(build.lead())
    for path in ["/admin/", "/admin/chat/chatsession/", "/admin/login/"]:
        csp = client.get(path)["Content-Security-Policy"]
        assert "script-src 'self';" in csp, path
    dashboard = client.get("/admin/dashboard/")["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in dashboard
    # JSON answers need no policy; pages that set their own keep it.
    assert "Content-Security-Policy" not in client.get("/api/ops/queue")
    assert "connect-src" in client.get("/")["Content-Security-Policy"]


def test_session_and_csrf_cookies_are_secure_and_http_only_when_production_logs_someone_in():
    import subprocess

    code = """
import json, sys, django
django.setup()
from django.test import Client
from django.contrib.auth.models import User
user = User.objects.create_user(
    username="cookie-" + sys.argv[1], password="dayone-pass-123", is_staff=True
)
client = Client(HTTP_HOST="chat.example.com")
first = client.get("/admin/login/", HTTP_X_FORWARDED_PROTO="https")
login = client.post(
    "/admin/login/",
    {"username": user.username, "password": "dayone-pass-123", "next": "/admin/"},
    HTTP_X_FORWARDED_PROTO="https",
)
assert login.status_code == 302, login.status_code
cookies = {name: {"secure": bool(c["secure"]), "httponly": bool(c["httponly"]),
                  "samesite": c["samesite"]}
           for answer in (first, login) for name, c in answer.cookies.items()}
user.delete()
print(json.dumps(cookies))
"""
    env = project_env(
        DJANGO_SETTINGS_MODULE="dayone_chat.settings.production",
        SECRET_KEY=secrets.token_urlsafe(60),
        ALLOWED_HOSTS="chat.example.com",
    )
    done = subprocess.run(
        [PYTHON, "-c", code, uuid.uuid4().hex[:8]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    cookies = json.loads(done.stdout.strip().splitlines()[-1])
    assert cookies["sessionid"]["secure"]
    assert cookies["sessionid"]["httponly"]
    assert cookies["sessionid"]["samesite"] == "Lax"
    assert cookies["csrftoken"]["secure"]


def test_security_headers_are_unchanged_when_an_error_page_is_served(client):
    # The JSON 404 of an unknown address still denies framing and sniffing.
    answer = client.get(f"/nothing-here-{uuid.uuid4().hex}")
    assert answer.status_code == 404
    assert answer.json()["code"] == "not_found"
    assert answer["X-Content-Type-Options"] == "nosniff"
    assert answer["X-Frame-Options"] == "DENY"
