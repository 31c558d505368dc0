"""Sessions in admin as a support lead uses them: filters, search, transcript, interventions."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.utils import timezone

from chat.models import ChatSession, EndReason, SessionStatus
from matching import services as matching_services
from tests import history_builders as build
from tests.factories import CustomerFactory, SessionFactory, available_agent

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/chat/chatsession/"


def active_session(agent=None, customer=None) -> ChatSession:
    """A chat the services made ACTIVE: created, matched, accepted."""
    agent = agent or available_agent()
    session = SessionFactory(**({"customer": customer} if customer else {}))
    matching_services.match_run()
    matching_services.offer_accept(session_id=session.pk, agent=agent)
    session.refresh_from_db()
    assert session.status == SessionStatus.ACTIVE
    return session


def act(client, action: str, *sessions: ChatSession):
    return client.post(
        CHANGELIST,
        {
            "action": action,
            "_selected_action": [str(s.pk) for s in sessions],
            "index": "0",
            "select_across": "0",
        },
        follow=True,
    )


@pytest.fixture
def lead_client(client):
    client.force_login(build.lead())
    return client


def page_messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_changelist_loads_for_a_lead_when_sessions_exist(lead_client):
    chat = active_session()
    response = lead_client.get(CHANGELIST)
    assert response.status_code == 200
    assert str(chat.pk)[:8] in response.text
    assert "Close the selected sessions" in response.text
    assert "Send the selected chats back to the queue" in response.text


def test_changelist_filters_by_status_date_and_agent_when_asked(lead_client):
    agent = available_agent()
    chat = active_session(agent=agent)
    with time_machine.travel(timezone.now() - timedelta(days=3)):
        old = build.session(status=SessionStatus.ENDED)
    waiting = SessionFactory()

    def ids(query: str) -> set[str]:
        response = lead_client.get(CHANGELIST + query)
        assert response.status_code == 200
        return {str(s.pk) for s in response.context["cl"].result_list}

    assert ids("?status__exact=active") == {str(chat.pk)}
    assert ids("?status__exact=waiting") == {str(waiting.pk)}
    assert ids(f"?agent__id__exact={agent.pk}") == {str(chat.pk)}
    # The "Today" link of the date filter (aware datetimes, as the filter itself writes them).
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    since = "?" + urlencode(
        {"created_at__gte": str(today), "created_at__lt": str(today + timedelta(days=1))}
    )
    assert ids(since) == {str(chat.pk), str(waiting.pk)}
    assert str(old.pk) in ids("")


def test_changelist_finds_a_customer_when_searching_their_username(lead_client):
    alice = CustomerFactory(username="alice_k")
    hers = SessionFactory(customer=alice)
    SessionFactory(customer=CustomerFactory(username="bob_m"))
    response = lead_client.get(CHANGELIST + "?q=alice")
    assert [s.pk for s in response.context["cl"].result_list] == [hers.pk]


def test_change_page_shows_the_transcript_read_only_when_a_lead_opens_it(lead_client):
    chat = build.session(status=SessionStatus.ENDED)
    build.message(chat, body="My parcel never came")
    build.message(chat, body="Let me look that up", sender="agent")
    response = lead_client.get(f"{CHANGELIST}{chat.pk}/change/")
    assert response.status_code == 200
    text = response.text
    assert text.index("My parcel never came") < text.index("Let me look that up")
    assert 'name="messages-0-body"' not in text  # no form fields: read-only
    assert 'name="_save"' not in text
    assert "Close session" not in text  # ended: nothing to intervene on


def test_change_page_offers_the_interventions_when_the_chat_is_active(lead_client):
    chat = active_session()
    text = lead_client.get(f"{CHANGELIST}{chat.pk}/change/").text
    assert "Close session" in text
    assert "Send back to the queue" in text


def test_close_action_ends_the_chat_through_the_service_when_a_lead_selects_it(lead_client):
    chat = active_session()
    response = act(lead_client, "close_sessions", chat)
    chat.refresh_from_db()
    assert chat.status == SessionStatus.ENDED
    assert chat.end_reason == EndReason.CLOSED_BY_LEAD
    assert chat.seat_id is None  # the seat is free again
    assert "1 session(s) closed." in page_messages(response)


def test_requeue_action_puts_the_chat_back_with_its_ticket_when_a_lead_selects_it(lead_client):
    chat = active_session()
    ticket = chat.ticket
    response = act(lead_client, "requeue_sessions", chat)
    chat.refresh_from_db()
    assert chat.status == SessionStatus.WAITING
    assert chat.ticket == ticket
    assert chat.seat_id is None
    assert "1 session(s) sent back to the queue." in page_messages(response)


def test_requeue_action_reports_the_refusal_when_the_chat_is_not_seated(lead_client):
    ended = build.session(status=SessionStatus.ENDED)
    response = act(lead_client, "requeue_sessions", ended)
    ended.refresh_from_db()
    assert ended.status == SessionStatus.ENDED
    assert any("Only an offered or active chat" in m for m in page_messages(response))


def test_close_button_ends_the_chat_when_a_lead_posts_it(lead_client):
    chat = active_session()
    response = lead_client.post(f"{CHANGELIST}{chat.pk}/close/")
    assert response.status_code == 302
    assert response["Location"] == f"{CHANGELIST}{chat.pk}/change/"
    chat.refresh_from_db()
    assert chat.end_reason == EndReason.CLOSED_BY_LEAD


def test_requeue_button_puts_the_chat_back_when_a_lead_posts_it(lead_client):
    chat = active_session()
    lead_client.post(f"{CHANGELIST}{chat.pk}/requeue/")
    chat.refresh_from_db()
    assert chat.status == SessionStatus.WAITING


def test_close_button_changes_nothing_when_fetched_with_get(lead_client):
    chat = active_session()
    assert lead_client.get(f"{CHANGELIST}{chat.pk}/close/").status_code == 405
    chat.refresh_from_db()
    assert chat.status == SessionStatus.ACTIVE


def test_admin_refuses_an_agent_when_they_open_sessions_or_post_an_action(client):
    agent = available_agent()
    chat = active_session(agent=agent)
    client.force_login(agent.user)
    assert client.get(CHANGELIST).status_code == 403
    assert client.get(f"{CHANGELIST}{chat.pk}/change/").status_code == 403
    assert act(client, "close_sessions", chat).status_code == 403
    assert client.post(f"{CHANGELIST}{chat.pk}/close/").status_code == 403
    chat.refresh_from_db()
    assert chat.status == SessionStatus.ACTIVE


def test_actions_are_withheld_when_staff_may_only_view_sessions(client):
    viewer = build.user("viewer", staff=True)
    viewer.user_permissions.add(
        Permission.objects.get(codename="view_chatsession"),
        Permission.objects.get(codename="view_message"),
    )
    client.force_login(viewer)
    chat = active_session()
    response = client.get(CHANGELIST)
    assert response.status_code == 200
    assert "Close the selected sessions" not in response.text
    act(client, "close_sessions", chat)
    assert client.post(f"{CHANGELIST}{chat.pk}/close/").status_code == 403
    chat.refresh_from_db()
    assert chat.status == SessionStatus.ACTIVE


def test_admin_sends_a_customer_to_the_login_page_when_they_are_not_staff(client):
    client.force_login(CustomerFactory())
    response = client.get(CHANGELIST)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_nobody_edits_or_deletes_a_session_in_admin_when_even_a_superuser_tries(admin_client):
    chat = active_session()
    assert admin_client.get(f"{CHANGELIST}{chat.pk}/delete/").status_code == 403
    assert admin_client.get(CHANGELIST + "add/").status_code == 403
    response = admin_client.post(f"{CHANGELIST}{chat.pk}/change/", {"status": "ended"})
    assert response.status_code == 403
    chat.refresh_from_db()
    assert chat.status == SessionStatus.ACTIVE
