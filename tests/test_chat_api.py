"""The customer REST API of PROTOCOL.md through DRF's APIClient, with real bearer tokens."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from chat import services
from chat.models import ChatSession, Message, Role, SessionStatus
from matching import services as matching_services
from tests.e2e.helpers import token_for
from tests.factories import AgentFactory, CustomerFactory, SessionFactory, available_agent

pytestmark = pytest.mark.django_db(transaction=True)


def client_for(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
    return client


def active_session(customer=None, agent=None) -> tuple[ChatSession, object]:
    """A session matched (after commit, inline) and accepted by the agent it was offered to
    (``agent`` is made available first; an earlier-freed seat may win: that is fairness)."""
    if agent is None:
        available_agent()
    session = SessionFactory(customer=customer or CustomerFactory())
    session.refresh_from_db()
    assert session.status == SessionStatus.OFFERED
    matching_services.offer_accept(session_id=session.id, agent=session.agent)
    session.refresh_from_db()
    return session, session.agent


def post_message(session, user, role, body="hi", client_msg_id=None):
    return services.message_post(
        session_id=session.id,
        author=user,
        role=role,
        client_msg_id=client_msg_id or uuid.uuid4(),
        body=body,
    )


# --- auth ----------------------------------------------------------------------------------


def test_token_is_issued_when_the_password_is_right():
    CustomerFactory(username="carla")
    answer = APIClient().post(
        "/api/auth/token", {"username": "carla", "password": "dayone"}, format="json"
    )
    assert answer.status_code == 200
    assert set(answer.json()) == {"access", "refresh"}
    me = client_for()
    me.credentials(HTTP_AUTHORIZATION=f"Bearer {answer.json()['access']}")
    assert me.get("/api/sessions").status_code == 200


def test_token_is_refused_with_401_and_a_code_when_the_password_is_wrong():
    CustomerFactory(username="carla")
    answer = APIClient().post(
        "/api/auth/token", {"username": "carla", "password": "nope"}, format="json"
    )
    assert answer.status_code == 401
    assert answer.json()["code"] == "invalid_credentials"
    assert answer.json()["detail"]


def test_token_request_is_refused_with_400_when_a_field_is_missing():
    answer = APIClient().post("/api/auth/token", {"username": "carla"}, format="json")
    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid"


def test_garbage_bearer_token_is_refused_with_401_and_the_error_shape():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    answer = client.get("/api/sessions")
    assert answer.status_code == 401
    assert set(answer.json()) >= {"code", "detail"}


def test_ws_ticket_is_issued_when_authenticated():
    answer = client_for(CustomerFactory()).post("/api/auth/ws-ticket")
    assert answer.status_code == 200
    assert answer.json()["expires_in"] == 30
    assert len(answer.json()["ticket"]) >= 32


def test_ws_ticket_is_refused_when_anonymous():
    answer = client_for().post("/api/auth/ws-ticket")
    assert answer.status_code == 401
    assert answer.json()["code"] == "not_authenticated"


# --- create ----------------------------------------------------------------------------------


def test_session_is_created_waiting_when_the_customer_has_none_live():
    answer = client_for(CustomerFactory()).post(
        "/api/sessions", {"topic": "card blocked"}, format="json"
    )
    assert answer.status_code == 201
    body = answer.json()
    assert body["status"] == "waiting"
    assert body["topic"] == "card blocked"
    assert body["position"] == 1
    assert body["last_seq"] == 0
    assert body["last_message"] is None
    assert body["agent"] is None
    for key in ("id", "created_at", "ended_at", "end_reason", "estimated_wait_s", "resumable"):
        assert key in body


def test_second_session_is_refused_with_409_when_one_is_live():
    customer = CustomerFactory()
    first = client_for(customer).post("/api/sessions", {}, format="json").json()
    answer = client_for(customer).post("/api/sessions", {}, format="json")
    assert answer.status_code == 409
    assert answer.json()["code"] == "live_session_exists"
    assert answer.json()["session_id"] == first["id"]


def test_create_is_refused_when_anonymous():
    assert client_for().post("/api/sessions", {}, format="json").status_code == 401
    assert ChatSession.objects.count() == 0


def test_create_is_refused_with_400_when_the_topic_is_too_long():
    answer = client_for(CustomerFactory()).post(
        "/api/sessions", {"topic": "x" * 201}, format="json"
    )
    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid"


# --- one session -------------------------------------------------------------------------------


def test_session_is_shown_to_its_customer_and_its_agent_only():
    session, agent = active_session()
    mine = client_for(session.customer).get(f"/api/sessions/{session.id}")
    assert mine.status_code == 200
    assert mine.json()["status"] == "active"
    assert mine.json()["agent"] == {"display_name": agent.display_name}
    as_agent = client_for(agent.user).get(f"/api/sessions/{session.id}")
    assert as_agent.status_code == 200
    assert as_agent.json()["customer"]["display_name"]
    for stranger in (CustomerFactory(), AgentFactory().user):
        answer = client_for(stranger).get(f"/api/sessions/{session.id}")
        assert answer.status_code == 404
        assert answer.json()["code"] == "not_found"
    assert client_for().get(f"/api/sessions/{session.id}").status_code == 401


def test_unknown_session_is_404_when_the_id_exists_nowhere():
    answer = client_for(CustomerFactory()).get(f"/api/sessions/{uuid.uuid4()}")
    assert answer.status_code == 404
    assert answer.json() == {"code": "not_found", "detail": answer.json()["detail"]}


# --- messages ----------------------------------------------------------------------------------


def test_message_is_stored_once_when_the_client_msg_id_is_repeated():
    session, _ = active_session()
    client = client_for(session.customer)
    body = {"client_msg_id": str(uuid.uuid4()), "body": "my card is blocked"}
    first = client.post(f"/api/sessions/{session.id}/messages", body, format="json")
    again = client.post(f"/api/sessions/{session.id}/messages", body, format="json")
    assert first.status_code == 201
    assert again.status_code == 200
    assert first.json() == again.json()
    assert first.json()["seq"] == 1
    assert first.json()["sender"] == "customer"
    assert Message.objects.filter(session=session).count() == 1


def test_message_is_posted_by_the_assigned_agent_as_agent():
    session, agent = active_session()
    answer = client_for(agent.user).post(
        f"/api/sessions/{session.id}/messages",
        {"client_msg_id": str(uuid.uuid4()), "body": "hello, how can I help?"},
        format="json",
    )
    assert answer.status_code == 201
    assert answer.json()["sender"] == "agent"


def test_message_post_is_refused_for_strangers_and_anonymous_callers():
    session, _ = active_session()
    body = {"client_msg_id": str(uuid.uuid4()), "body": "let me in"}
    for stranger in (CustomerFactory(), AgentFactory().user):
        answer = client_for(stranger).post(
            f"/api/sessions/{session.id}/messages", body, format="json"
        )
        assert answer.status_code == 404
    assert (
        client_for().post(f"/api/sessions/{session.id}/messages", body, format="json").status_code
        == 401
    )
    assert Message.objects.count() == 0


def test_message_post_is_refused_with_a_code_when_the_body_is_empty_or_too_long(settings):
    settings.MAX_MESSAGE_CHARS = 10
    session, _ = active_session()
    client = client_for(session.customer)
    for body, code in (("   ", "body_empty"), ("x" * 11, "body_too_long")):
        answer = client.post(
            f"/api/sessions/{session.id}/messages",
            {"client_msg_id": str(uuid.uuid4()), "body": body},
            format="json",
        )
        assert answer.status_code == 400
        assert answer.json()["code"] == code
    bad_id = client.post(
        f"/api/sessions/{session.id}/messages",
        {"client_msg_id": "nope", "body": "hi"},
        format="json",
    )
    assert bad_id.status_code == 400
    assert bad_id.json()["code"] == "invalid"
    assert Message.objects.count() == 0


def test_messages_are_paged_by_seq_when_listing():
    session, agent = active_session()
    for n in range(5):
        post_message(session, session.customer, Role.CUSTOMER, body=f"m{n}")
    client = client_for(session.customer)
    first = client.get(f"/api/sessions/{session.id}/messages?after_seq=0&limit=2").json()
    assert [m["seq"] for m in first["results"]] == [1, 2]
    assert first["next_after_seq"] == 2
    rest = client.get(f"/api/sessions/{session.id}/messages?after_seq=2&limit=10").json()
    assert [m["seq"] for m in rest["results"]] == [3, 4, 5]
    assert rest["next_after_seq"] is None
    assert rest["results"][0]["body"] == "m2"
    assert set(rest["results"][0]) == {"seq", "sender", "body", "created_at", "client_msg_id"}
    as_agent = client_for(agent.user).get(f"/api/sessions/{session.id}/messages")
    assert len(as_agent.json()["results"]) == 5


def test_messages_listing_is_refused_when_the_limit_is_over_500_or_the_caller_is_a_stranger():
    session, _ = active_session()
    over = client_for(session.customer).get(f"/api/sessions/{session.id}/messages?limit=501")
    assert over.status_code == 400
    assert over.json()["code"] == "invalid"
    assert (
        client_for(CustomerFactory()).get(f"/api/sessions/{session.id}/messages").status_code == 404
    )
    assert (
        client_for(AgentFactory().user).get(f"/api/sessions/{session.id}/messages").status_code
        == 404
    )
    assert client_for().get(f"/api/sessions/{session.id}/messages").status_code == 401


# --- end and resume ----------------------------------------------------------------------------


def test_end_cancels_at_once_when_the_session_is_still_waiting():
    customer = CustomerFactory()
    session = SessionFactory(customer=customer)
    answer = client_for(customer).post(f"/api/sessions/{session.id}/end")
    assert answer.status_code == 200
    assert answer.json()["status"] == "ended"
    assert answer.json()["end_reason"] == "cancelled"


def test_end_needs_both_sides_when_the_session_is_active():
    session, agent = active_session()
    asked = client_for(session.customer).post(f"/api/sessions/{session.id}/end")
    assert asked.status_code == 200
    assert asked.json()["status"] == "active"
    assert asked.json()["end_requested_by"] == "customer"
    confirmed = client_for(agent.user).post(f"/api/sessions/{session.id}/end")
    assert confirmed.json()["status"] == "ended"
    assert confirmed.json()["end_reason"] == "mutual"


def test_end_and_resume_are_refused_for_strangers_and_anonymous_callers():
    session, _ = active_session()
    for path in ("end", "resume"):
        for stranger in (CustomerFactory(), AgentFactory().user):
            assert (
                client_for(stranger).post(f"/api/sessions/{session.id}/{path}").status_code == 404
            )
        assert client_for().post(f"/api/sessions/{session.id}/{path}").status_code == 401
    session.refresh_from_db()
    assert session.status == SessionStatus.ACTIVE
    assert session.end_requested_by == ""


def test_resume_puts_an_incomplete_session_back_in_the_queue():
    session, _ = active_session()
    ChatSession.objects.filter(pk=session.pk).update(
        customer_left_at=timezone.now() - timedelta(hours=1)
    )
    assert services.session_customer_gone(session_id=session.id, gone_before=timezone.now())
    answer = client_for(session.customer).post(f"/api/sessions/{session.id}/resume")
    assert answer.status_code == 200
    assert answer.json()["status"] in ("waiting", "offered")


def test_resume_is_refused_with_409_when_the_session_ended():
    customer = CustomerFactory()
    session = SessionFactory(customer=customer)
    client_for(customer).post(f"/api/sessions/{session.id}/end")
    answer = client_for(customer).post(f"/api/sessions/{session.id}/resume")
    assert answer.status_code == 409
    assert answer.json()["code"] == "not_resumable"


# --- the history listing -----------------------------------------------------------------------


def make_history(customer, count: int) -> list[ChatSession]:
    """``count`` ended sessions with two messages each, one hour apart, newest last."""
    made = []
    for n in range(count):
        session, agent = active_session(customer=customer)
        post_message(session, customer, Role.CUSTOMER, body=f"question {n}")
        post_message(session, agent.user, Role.AGENT, body=f"answer {n}")
        services.session_end_request(session_id=session.id, user=customer, role=Role.CUSTOMER)
        services.session_end_confirm(session_id=session.id, user=agent.user, role=Role.AGENT)
        ChatSession.objects.filter(pk=session.pk).update(
            created_at=timezone.now() - timedelta(hours=count - n)
        )
        made.append(session)
    return made


def test_history_lists_newest_first_with_last_messages_when_paged_by_cursor():
    customer = CustomerFactory()
    made = make_history(customer, 5)
    client = client_for(customer)
    first = client.get("/api/sessions?limit=2").json()
    assert [s["id"] for s in first["results"]] == [str(made[4].id), str(made[3].id)]
    assert first["results"][0]["last_message"]["body"] == "answer 4"
    assert first["results"][0]["status"] == "ended"
    assert first["next"]
    second = client.get(first["next"]).json()
    third = client.get(second["next"]).json()
    assert [s["id"] for s in second["results"] + third["results"]] == [
        str(made[2].id),
        str(made[1].id),
        str(made[0].id),
    ]
    assert third["next"] is None


def test_history_leaves_out_sessions_older_than_history_days_and_other_customers(settings):
    customer = CustomerFactory()
    made = make_history(customer, 2)
    make_history(CustomerFactory(), 1)
    ChatSession.objects.filter(pk=made[0].pk).update(
        created_at=timezone.now() - timedelta(days=settings.HISTORY_DAYS, seconds=1)
    )
    listed = client_for(customer).get("/api/sessions").json()["results"]
    assert [s["id"] for s in listed] == [str(made[1].id)]


def test_history_uses_the_same_number_of_queries_when_the_page_is_larger():
    customer = CustomerFactory()
    make_history(customer, 6)
    SessionFactory(customer=customer)  # a waiting one: position and estimate too
    client = client_for(customer)
    counts = []
    for limit in (2, 7):
        with CaptureQueriesContext(connection) as queries:
            answer = client.get(f"/api/sessions?limit={limit}")
        assert answer.status_code == 200
        assert len(answer.json()["results"]) == limit
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_history_is_refused_when_anonymous_or_the_cursor_is_forged():
    assert client_for().get("/api/sessions").status_code == 401
    answer = client_for(CustomerFactory()).get("/api/sessions?cursor=bm9wZQ")
    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_cursor"


# --- agent ---------------------------------------------------------------------------------------


def test_agent_me_answers_the_agent_state_when_the_caller_is_an_agent():
    agent = available_agent()
    answer = client_for(agent.user).get("/api/agent/me")
    assert answer.status_code == 200
    assert answer.json()["status"] == "available"
    assert answer.json()["capacity"] == 2
    assert [s["session_id"] for s in answer.json()["seats"]] == [None, None]


def test_agent_me_is_refused_for_customers_and_anonymous_callers():
    answer = client_for(CustomerFactory()).get("/api/agent/me")
    assert answer.status_code == 403
    assert answer.json()["code"] == "not_an_agent"
    assert client_for().get("/api/agent/me").status_code == 401
