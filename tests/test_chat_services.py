"""The session state machine (chat/services.py) on the real PostgreSQL and Redis."""

from __future__ import annotations

import uuid
from datetime import timedelta
from itertools import product

import pytest
from django.db import transaction
from django.utils import timezone

from chat import services
from chat.errors import DomainError, InvalidInput, NotFound
from chat.events import agent_group, session_group
from chat.models import ChatSession, Message, SessionStatus
from matching.models import Assignment, WaitSpan
from matching.services import match_run, offer_accept, offer_decline, tick
from tests.factories import (
    CustomerFactory,
    GroupTap,
    LeadFactory,
    SessionFactory,
    active_session,
    available_agent,
    ended_session,
    incomplete_session,
    offered_session,
)

pytestmark = pytest.mark.django_db

St = SessionStatus
W, OF, A, INC, E = St.WAITING, St.OFFERED, St.ACTIVE, St.INCOMPLETE, St.ENDED

# Written out here, not imported: changing the code's table must fail this test.
ALLOWED = {
    (W, OF), (W, A), (W, INC), (W, E),
    (OF, A), (OF, W), (OF, INC), (OF, E),
    (A, E), (A, INC), (A, W),
    (INC, W), (INC, E),
}  # fmt: skip


def _in_state(status: str) -> ChatSession:
    if status == W:
        return SessionFactory()
    if status == OF:
        return offered_session()[0]
    if status == A:
        return active_session()[0]
    if status == INC:
        return incomplete_session()
    return ended_session()


@pytest.mark.parametrize(("frm", "to"), list(product([W, OF, A, INC, E], repeat=2)))
def test_transition_table_allows_exactly_the_designed_pairs_when_checked(frm, to):
    if (frm, to) in ALLOWED:
        services.check_session_transition(frm, to)
    else:
        with pytest.raises(DomainError) as caught:
            services.check_session_transition(frm, to)
        assert caught.value.code == "invalid_transition"


@pytest.mark.parametrize(
    ("frm", "to"), [p for p in product([W, OF, A, INC, E], repeat=2) if p not in ALLOWED]
)
def test_transition_function_refuses_and_writes_nothing_when_pair_not_allowed(frm, to):
    session = _in_state(frm)
    before = ChatSession.objects.get(pk=session.pk)
    with pytest.raises(DomainError), transaction.atomic():
        services._session_transition([session], to, now=timezone.now())
    after = ChatSession.objects.get(pk=session.pk)
    assert after.status == before.status == frm


# Each allowed transition, performed by the named operation that makes it.
def _waiting_to_offered():
    s = SessionFactory()
    available_agent()
    match_run()
    return s


def _waiting_to_active(settings):
    settings.AUTO_ACCEPT = True
    s = SessionFactory()
    available_agent()
    match_run()
    return s


def _customer_gone(session):
    services.customer_connected(session_id=session.id, user=session.customer, channel_name="c.x")
    services.customer_disconnected(channel_name="c.x", at=timezone.now() - timedelta(days=1))
    assert services.session_customer_gone(session_id=session.id, gone_before=timezone.now())
    return session


def _cancel(session):
    return services.session_end_request(
        session_id=session.id, user=session.customer, role="customer"
    )


def _mutual(session):
    agent_user = session.agent.user
    services.session_end_request(session_id=session.id, user=agent_user, role="agent")
    return services.session_end_confirm(
        session_id=session.id, user=session.customer, role="customer"
    )


def _requeue(session):
    return services.session_requeue_by_lead(session_id=session.id, lead=LeadFactory())


def _resume(session):
    return services.session_resume(session_id=session.id, customer=session.customer)


def _expire_incomplete(session):
    ChatSession.objects.filter(pk=session.pk).update(created_at=timezone.now() - timedelta(days=30))
    assert services.session_expire_incomplete(session_id=session.id, created_before=timezone.now())
    return session


NAMED = [
    ("match", W, OF, lambda s: _waiting_to_offered()),
    ("customer_gone", W, INC, lambda s: _customer_gone(SessionFactory())),
    ("cancel", W, E, lambda s: _cancel(SessionFactory())),
    ("accept", OF, A, lambda s: _accept(offered_session())),
    ("decline", OF, W, lambda s: _decline(offered_session())),
    ("customer_gone", OF, INC, lambda s: _customer_gone(offered_session()[0])),
    ("cancel", OF, E, lambda s: _cancel(offered_session()[0])),
    ("mutual_end", A, E, lambda s: _mutual(active_session()[0])),
    ("customer_gone", A, INC, lambda s: _customer_gone(active_session()[0])),
    ("requeue_by_lead", A, W, lambda s: _requeue(active_session()[0])),
    ("resume", INC, W, lambda s: _resume(incomplete_session())),
    ("expire_incomplete", INC, E, lambda s: _expire_incomplete(incomplete_session())),
]


def _accept(pair):
    session, agent = pair
    return offer_accept(session_id=session.id, agent=agent)


def _decline(pair):
    session, agent = pair
    return offer_decline(session_id=session.id, agent=agent)


@pytest.mark.parametrize(("name", "frm", "to", "perform"), NAMED, ids=[n[0] for n in NAMED])
def test_named_operation_moves_session_along_the_table_when_allowed(name, frm, to, perform):
    session = perform(None)
    session = ChatSession.objects.get(pk=session.pk)
    assert session.status == to
    assert (frm, to) in ALLOWED


def test_auto_accept_moves_waiting_straight_to_active_when_enabled(settings):
    session = _waiting_to_active(settings)
    session.refresh_from_db()
    assert session.status == A
    assert session.accepted_at is not None
    assert Assignment.objects.get(session=session).outcome == "accepted"


# --- create ------------------------------------------------------------------------------------


def test_create_takes_increasing_tickets_when_customers_arrive():
    first, second = SessionFactory(), SessionFactory()
    assert first.status == W
    assert second.ticket > first.ticket
    assert WaitSpan.objects.filter(session=first, ended_at=None).count() == 1


def test_create_refuses_with_live_session_id_when_customer_has_one():
    session = SessionFactory()
    with pytest.raises(DomainError) as caught:
        services.session_create(customer=session.customer)
    assert caught.value.code == "live_session_exists"
    assert caught.value.http_status == 409
    assert caught.value.extra["session_id"] == str(session.id)


def test_create_is_allowed_again_when_previous_session_ended():
    session = ended_session()
    again = services.session_create(customer=session.customer)
    assert again.status == W


# --- messages ----------------------------------------------------------------------------------


def test_message_post_numbers_messages_in_order_when_both_sides_write():
    session, agent = active_session()
    m1 = services.message_post(
        session_id=session.id,
        author=session.customer,
        role="customer",
        client_msg_id=uuid.uuid4(),
        body="hello",
    )
    m2 = services.message_post(
        session_id=session.id,
        author=agent.user,
        role="agent",
        client_msg_id=uuid.uuid4(),
        body="hi",
    )
    assert (m1.message.seq, m2.message.seq) == (1, 2)
    assert m2.message.sender == "agent"
    session.refresh_from_db()
    assert session.last_seq == 2


def test_message_post_returns_stored_message_when_client_id_repeats():
    session = SessionFactory()
    cid = uuid.uuid4()
    first = services.message_post(
        session_id=session.id, author=session.customer, role="customer", client_msg_id=cid, body="a"
    )
    again = services.message_post(
        session_id=session.id, author=session.customer, role="customer", client_msg_id=cid, body="b"
    )
    assert first.created is True
    assert again.created is False
    assert again.message.pk == first.message.pk
    assert Message.objects.filter(session=session).count() == 1


@pytest.mark.parametrize(("body", "code"), [("   ", "body_empty"), ("x" * 11, "body_too_long")])
def test_message_post_refuses_body_when_empty_or_too_long(settings, body, code):
    settings.MAX_MESSAGE_CHARS = 10
    session = SessionFactory()
    with pytest.raises(InvalidInput) as caught:
        services.message_post(
            session_id=session.id,
            author=session.customer,
            role="customer",
            client_msg_id=uuid.uuid4(),
            body=body,
        )
    assert caught.value.code == code


def test_message_post_strips_body_and_accepts_max_length_when_padded(settings):
    settings.MAX_MESSAGE_CHARS = 10
    session = SessionFactory()
    post = services.message_post(
        session_id=session.id,
        author=session.customer,
        role="customer",
        client_msg_id=uuid.uuid4(),
        body="  " + "x" * 10 + "\n",
    )
    assert post.message.body == "x" * 10


def test_message_post_is_not_found_when_customer_is_not_the_owner():
    session = SessionFactory()
    with pytest.raises(NotFound):
        services.message_post(
            session_id=session.id,
            author=CustomerFactory(),
            role="customer",
            client_msg_id=uuid.uuid4(),
            body="x",
        )


def test_message_post_refuses_agent_when_session_only_offered():
    session, agent = offered_session()
    with pytest.raises(DomainError) as caught:
        services.message_post(
            session_id=session.id,
            author=agent.user,
            role="agent",
            client_msg_id=uuid.uuid4(),
            body="x",
        )
    assert caught.value.code == "not_active"


def test_message_post_refuses_customer_when_session_ended():
    session = ended_session()
    with pytest.raises(DomainError) as caught:
        services.message_post(
            session_id=session.id,
            author=session.customer,
            role="customer",
            client_msg_id=uuid.uuid4(),
            body="x",
        )
    assert caught.value.code == "session_closed"


def test_message_post_publishes_to_the_session_group_only_when_created(
    django_capture_on_commit_callbacks,
):
    session, agent = active_session()
    tap = GroupTap(session_group(session.id), agent_group(agent.pk))
    cid = uuid.uuid4()
    with django_capture_on_commit_callbacks(execute=True):
        services.message_post(
            session_id=session.id,
            author=session.customer,
            role="customer",
            client_msg_id=cid,
            body="hi",
        )
    with django_capture_on_commit_callbacks(execute=True) as again:
        services.message_post(
            session_id=session.id,
            author=session.customer,
            role="customer",
            client_msg_id=cid,
            body="hi",
        )
    assert again == []
    messages = [e for e in tap.events() if e["type"] == "message"]
    assert len(messages) == 1  # to the session group only: the console is in it too
    assert messages[0]["message"]["seq"] == 1
    assert messages[0]["session_id"] == str(session.id)


@pytest.mark.django_db(transaction=True)
def test_state_reaches_clients_before_the_rematch_when_a_declined_offer_goes_to_another_agent():
    # Real commits: the after-commit matcher commits (and publishes) on its own, so only a real
    # transaction shows whether "waiting" from the decline goes out before the new "offered".
    decliner = available_agent(capacity=1)
    session = SessionFactory()
    match_run()
    helper = available_agent(capacity=1)
    assert ChatSession.objects.get(pk=session.pk).agent_id == decliner.pk
    tap = GroupTap(session_group(session.id))
    offer_decline(session_id=session.id, agent=decliner)
    states = [e["session"]["status"] for e in tap.events() if e["type"] == "session.state"]
    assert states == ["waiting", "offered"]
    assert ChatSession.objects.get(pk=session.pk).agent_id == helper.pk


# --- ending ------------------------------------------------------------------------------------


def test_end_request_waits_for_other_side_when_session_active(django_capture_on_commit_callbacks):
    session, agent = active_session()
    tap = GroupTap(session_group(session.id))
    with django_capture_on_commit_callbacks(execute=True):
        services.session_end_request(session_id=session.id, user=session.customer, role="customer")
    session.refresh_from_db()
    assert session.status == A
    assert session.end_requested_by == "customer"
    types = [e["type"] for e in tap.events()]
    assert "end.requested" in types
    ended = services.session_end_confirm(session_id=session.id, user=agent.user, role="agent")
    assert ended.status == E
    assert ended.end_reason == "mutual"


def test_end_confirm_refuses_when_nobody_asked():
    session, agent = active_session()
    with pytest.raises(DomainError) as caught:
        services.session_end_confirm(session_id=session.id, user=agent.user, role="agent")
    assert caught.value.code == "no_end_request"


def test_end_confirm_refuses_when_same_side_confirms_own_request():
    session, _agent = active_session()
    services.session_end_request(session_id=session.id, user=session.customer, role="customer")
    with pytest.raises(DomainError):
        services.session_end_confirm(session_id=session.id, user=session.customer, role="customer")


def test_end_decline_clears_the_request_when_other_side_refuses():
    session, agent = active_session()
    services.session_end_request(session_id=session.id, user=agent.user, role="agent")
    services.session_end_decline(session_id=session.id, user=session.customer, role="customer")
    session.refresh_from_db()
    assert session.status == A
    assert session.end_requested_by == ""


def test_session_end_confirms_when_other_side_already_asked():
    session, agent = active_session()
    services.session_end(session_id=session.id, user=agent.user, role="agent")
    ended = services.session_end(session_id=session.id, user=session.customer, role="customer")
    assert ended.status == E
    assert ended.end_reason == "mutual"


def test_end_frees_the_seat_when_session_ends():
    session, _agent = active_session()
    seat_id = session.seat_id
    _mutual(session)
    from agents.models import Seat

    assert Seat.objects.get(pk=seat_id).free_since is not None


def test_customer_cancels_at_once_when_session_waiting():
    session = SessionFactory()
    ended = _cancel(session)
    assert ended.status == E
    assert ended.end_reason == "cancelled"
    assert WaitSpan.objects.get(session=session).ended_at is not None


def test_end_is_idempotent_when_session_already_ended():
    session = ended_session()
    again = _cancel(session)
    assert again.status == E


def test_agent_cannot_end_when_session_only_offered():
    session, agent = offered_session()
    with pytest.raises(DomainError):
        services.session_end_request(session_id=session.id, user=agent.user, role="agent")


def test_idle_close_refuses_when_customer_recently_active(settings):
    settings.IDLE_CLOSE_S = 900
    session, agent = active_session()
    with pytest.raises(DomainError) as caught:
        services.session_close_idle(session_id=session.id, agent=agent)
    assert caught.value.code == "customer_not_idle"


def test_idle_close_ends_session_when_customer_silent_long_enough(settings):
    settings.IDLE_CLOSE_S = 900
    session, agent = active_session()
    ChatSession.objects.filter(pk=session.pk).update(
        last_customer_activity_at=timezone.now() - timedelta(seconds=901)
    )
    closed = services.session_close_idle(session_id=session.id, agent=agent)
    assert closed.status == E
    assert closed.end_reason == "idle_closed"


def test_close_by_lead_refuses_when_user_is_not_staff():
    session = SessionFactory()
    with pytest.raises(DomainError) as caught:
        services.session_close_by_lead(session_id=session.id, lead=CustomerFactory())
    assert caught.value.code == "forbidden"


def test_close_by_lead_refuses_when_user_is_an_agent_without_lead_permissions():
    session, agent = active_session()
    with pytest.raises(DomainError) as caught:
        services.session_close_by_lead(session_id=session.id, lead=agent.user)
    assert caught.value.code == "forbidden"
    assert ChatSession.objects.get(pk=session.pk).status == "active"


def test_close_by_lead_ends_session_when_lead_closes_it():
    session, _ = active_session()
    closed = services.session_close_by_lead(session_id=session.id, lead=LeadFactory())
    assert closed.status == E
    assert closed.end_reason == "closed_by_lead"


def test_requeue_by_lead_keeps_old_ticket_when_session_active():
    session, _ = active_session()
    ticket = session.ticket
    back = _requeue(session)
    assert back.status == W
    assert back.ticket == ticket
    assert back.agent_id is None


# --- resume ------------------------------------------------------------------------------------


def test_resume_keeps_old_ticket_when_within_keep_place_window(settings):
    settings.RESUME_KEEP_PLACE_S = 600
    session = incomplete_session()
    ticket = session.ticket
    resumed = _resume(session)
    assert resumed.status == W
    assert resumed.ticket == ticket


def test_resume_takes_new_ticket_when_keep_place_window_passed(settings):
    settings.RESUME_KEEP_PLACE_S = 600
    session = incomplete_session()
    ticket = session.ticket
    ChatSession.objects.filter(pk=session.pk).update(
        incomplete_at=timezone.now() - timedelta(seconds=601)
    )
    resumed = _resume(session)
    assert resumed.status == W
    assert resumed.ticket > ticket


def test_resume_returns_session_unchanged_when_still_live():
    session, _ = active_session()
    resumed = _resume(session)
    assert resumed.status == A


@pytest.mark.parametrize("how", ["ended", "too_old"])
def test_resume_refuses_when_session_ended_or_too_old(how):
    if how == "ended":
        session = ended_session()
    else:
        session = incomplete_session()
        ChatSession.objects.filter(pk=session.pk).update(
            created_at=timezone.now() - timedelta(days=15)
        )
    with pytest.raises(DomainError) as caught:
        _resume(session)
    assert caught.value.code == "not_resumable"


def test_resume_refuses_when_customer_has_another_live_session():
    session = incomplete_session()
    other = services.session_create(customer=session.customer)
    with pytest.raises(DomainError) as caught:
        _resume(session)
    assert caught.value.code == "live_session_exists"
    assert caught.value.extra["session_id"] == str(other.id)


def test_resume_is_not_found_when_session_is_someone_elses():
    session = incomplete_session()
    with pytest.raises(NotFound):
        services.session_resume(session_id=session.id, customer=CustomerFactory())


# --- presence ----------------------------------------------------------------------------------


def test_customer_left_at_set_only_when_last_socket_closes():
    session = SessionFactory()
    for channel in ("c.1", "c.2"):
        services.customer_connected(
            session_id=session.id, user=session.customer, channel_name=channel
        )
    services.customer_disconnected(channel_name="c.1")
    session.refresh_from_db()
    assert session.customer_left_at is None
    services.customer_disconnected(channel_name="c.2")
    session.refresh_from_db()
    assert session.customer_left_at is not None


def test_customer_back_within_grace_changes_nothing_when_tick_runs(settings):
    settings.CUSTOMER_GRACE_S = 120
    session, _ = active_session()
    services.customer_connected(session_id=session.id, user=session.customer, channel_name="c.1")
    services.customer_disconnected(channel_name="c.1", at=timezone.now() - timedelta(seconds=100))
    services.customer_connected(session_id=session.id, user=session.customer, channel_name="c.2")
    tick()
    session.refresh_from_db()
    assert session.status == A
    assert session.customer_left_at is None


def test_customer_connected_is_not_found_when_session_is_someone_elses():
    session = SessionFactory()
    with pytest.raises(NotFound):
        services.customer_connected(session_id=session.id, user=CustomerFactory(), channel_name="x")


def test_heartbeat_refreshes_last_seen_when_socket_alive():
    from chat.models import Connection

    session = SessionFactory()
    services.customer_connected(session_id=session.id, user=session.customer, channel_name="c.h")
    Connection.objects.filter(channel_name="c.h").update(
        last_seen_at=timezone.now() - timedelta(minutes=5)
    )
    services.connections_heartbeat(channel_names=["c.h"])
    seen = Connection.objects.get(channel_name="c.h").last_seen_at
    assert timezone.now() - seen < timedelta(seconds=5)


def test_state_change_publishes_session_state_when_committed(django_capture_on_commit_callbacks):
    session, agent = offered_session()
    tap_customer = GroupTap(session_group(session.id))
    tap_agent = GroupTap(agent_group(agent.pk))
    with django_capture_on_commit_callbacks(execute=True):
        offer_accept(session_id=session.id, agent=agent)
    states = [e for e in tap_customer.events() if e["type"] == "session.state"]
    assert states[-1]["session"]["status"] == "active"
    assert "customer" not in states[-1]["session"]
    agent_states = [e for e in tap_agent.events() if e["type"] == "session.state"]
    assert agent_states[-1]["session"]["customer"]["display_name"]
    assert agent_states[-1]["session_id"] == str(session.id)
