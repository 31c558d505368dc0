"""Rate limits: the login lockout (API and admin form alike), session creation, REST messages.

Counters live in the real Redis (this run's db number); each test uses users of its own, so
counters of earlier runs cannot interfere (known users' counters are keyed by their password
hash, which a new run's users never share; unknown usernames carry a random suffix).
"""

from __future__ import annotations

import time
import uuid

import pytest
from django.test import Client
from rest_framework.test import APIClient

from chat.models import Message, SessionStatus
from tests.e2e.helpers import token_for
from tests.factories import AgentFactory, CustomerFactory, SessionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def limits(settings):
    settings.LOGIN_MAX_FAILURES = 3
    settings.LOGIN_LOCKOUT_S = 60
    settings.SESSION_CREATE_RATE_COUNT = 3
    settings.SESSION_CREATE_RATE_WINDOW_S = 3600
    settings.MESSAGE_RATE_COUNT = 4
    settings.MESSAGE_RATE_WINDOW_S = 3600
    return settings


def login(username: str, password: str):
    return APIClient().post(
        "/api/auth/token", {"username": username, "password": password}, format="json"
    )


def bearer(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
    return client


def test_login_is_refused_even_with_the_right_password_when_the_username_failed_too_often(limits):
    customer = CustomerFactory()
    for _ in range(3):
        assert login(customer.username, "wrong").status_code == 401
    locked = login(customer.username, "dayone")
    assert locked.status_code == 429
    body = locked.json()
    assert body["code"] == "login_locked"
    assert 0 < body["retry_after"] <= 60
    assert "access" not in body


def test_other_usernames_still_log_in_when_one_is_locked(limits):
    victim, bystander = CustomerFactory(), CustomerFactory()
    for _ in range(3):
        login(victim.username, "wrong")
    assert login(bystander.username, "dayone").status_code == 200


def test_login_works_again_when_the_lockout_window_has_passed(limits):
    limits.LOGIN_LOCKOUT_S = 1
    customer = CustomerFactory()
    for _ in range(3):
        login(customer.username, "wrong")
    assert login(customer.username, "dayone").status_code == 429
    time.sleep(2.1)  # Redis expires the counter in real time
    assert login(customer.username, "dayone").status_code == 200


def test_a_success_clears_the_count_when_the_username_is_not_yet_locked(limits):
    customer = CustomerFactory()
    for _ in range(2):
        login(customer.username, "wrong")
    assert login(customer.username, "dayone").status_code == 200
    for _ in range(2):
        assert login(customer.username, "wrong").status_code == 401
    assert login(customer.username, "dayone").status_code == 200


def test_unknown_usernames_lock_like_known_ones_when_guessed_repeatedly(limits):
    # The same answers for both, so the lockout does not reveal which accounts exist.
    ghost = f"nobody-{uuid.uuid4().hex[:8]}"
    answers = [login(ghost, "wrong").status_code for _ in range(4)]
    assert answers == [401, 401, 401, 429]


def test_admin_login_form_refuses_a_locked_username_when_the_password_is_right(limits):
    agent = AgentFactory()
    username = agent.user.username
    for _ in range(3):
        assert login(username, "wrong").status_code == 401
    browser = Client()
    answer = browser.post(
        "/admin/login/?next=/console/", {"username": username, "password": "dayone"}
    )
    assert answer.status_code == 200  # the form again, with its error: no redirect, no session
    assert "_auth_user_id" not in browser.session
    assert browser.get("/console/").status_code == 302


def test_admin_login_failures_count_towards_the_api_lockout_when_mixed(limits):
    agent = AgentFactory()
    username = agent.user.username
    for _ in range(3):
        Client().post("/admin/login/", {"username": username, "password": "wrong"})
    assert login(username, "dayone").status_code == 429


def test_session_creation_is_throttled_when_a_customer_opens_and_cancels_in_a_loop(limits):
    customer = CustomerFactory()
    api = bearer(customer)
    for _ in range(3):
        created = api.post("/api/sessions", {}, format="json")
        assert created.status_code == 201
        ended = api.post(f"/api/sessions/{created.json()['id']}/end", format="json")
        assert ended.json()["status"] == SessionStatus.ENDED
    refused = api.post("/api/sessions", {}, format="json")
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled"
    assert int(refused["Retry-After"]) > 0
    # Someone else is not slowed down by it, and reading is not throttled.
    assert bearer(CustomerFactory()).post("/api/sessions", {}, format="json").status_code == 201
    assert api.get("/api/sessions").status_code == 200


def test_rest_messages_are_throttled_and_not_stored_when_a_client_posts_too_fast(limits):
    session = SessionFactory()
    api = bearer(session.customer)
    url = f"/api/sessions/{session.id}/messages"
    codes = [
        api.post(url, {"client_msg_id": str(uuid.uuid4()), "body": f"m{n}"}, format="json")
        for n in range(6)
    ]
    assert [c.status_code for c in codes] == [201, 201, 201, 201, 429, 429]
    assert codes[-1].json()["code"] == "throttled"
    assert Message.objects.filter(session=session).count() == 4
    assert api.get(url).status_code == 200
