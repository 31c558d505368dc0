"""The customer socket /ws/sessions/{id}/ over the real Redis channel layer."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from channels.layers import get_channel_layer
from django.contrib.auth import SESSION_KEY
from django.test import Client

from chat import events, services
from chat.models import ChatSession, Connection, Message, Role, SessionStatus
from dayone_chat.routing import websocket_application as app
from matching import services as matching_services
from tests.e2e.helpers import Socket, adb, flush_layer, new_id, refused_with
from tests.factories import AgentFactory, CustomerFactory, SessionFactory, available_agent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture(autouse=True)
async def _clean_layer():
    await flush_layer()
    return


def _active_session() -> tuple[ChatSession, object]:
    available_agent()
    session = SessionFactory(customer=CustomerFactory())
    session.refresh_from_db()
    matching_services.offer_accept(session_id=session.id, agent=session.agent)
    session = ChatSession.objects.select_related("customer", "agent__user").get(pk=session.pk)
    return session, session.agent


def _post(session_id, user, role, body="hello", client_msg_id=None):
    return services.message_post(
        session_id=session_id,
        author=user,
        role=role,
        client_msg_id=client_msg_id or uuid.uuid4(),
        body=body,
    )


def _waiting_session() -> ChatSession:
    session = SessionFactory()
    return ChatSession.objects.select_related("customer").get(pk=session.pk)


active_session = adb(_active_session)
waiting_session = adb(_waiting_session)
post = adb(_post)


def path_of(session, after_seq=None) -> str:
    query = f"?after_seq={after_seq}" if after_seq is not None else ""
    return f"/ws/sessions/{session.id}/{query}"


async def open_customer(session, after_seq=None) -> Socket:
    socket = await Socket.open(app, path_of(session, after_seq), user=session.customer)
    first = await socket.recv()
    assert first["type"] == "session.state"
    return socket


# --- authentication and authorisation -------------------------------------------------------


async def test_socket_is_closed_4401_when_there_are_no_credentials():
    session = await waiting_session()
    assert await refused_with(app, path_of(session)) == 4401


async def test_socket_is_closed_4401_when_the_token_is_invalid():
    session = await waiting_session()
    headers = [(b"authorization", b"Bearer nonsense")]
    assert await refused_with(app, path_of(session), headers=headers) == 4401


async def test_socket_is_closed_4404_when_the_session_is_another_customers():
    session = await waiting_session()
    stranger = await adb(CustomerFactory)()
    assert await refused_with(app, path_of(session), user=stranger) == 4404
    assert await adb(Connection.objects.count)() == 0


async def test_socket_is_closed_4404_when_an_agent_opens_a_customer_socket():
    session, agent = await active_session()
    assert await refused_with(app, path_of(session), user=agent.user) == 4404
    other = await adb(lambda: AgentFactory().user)()
    assert await refused_with(app, path_of(session), user=other) == 4404


async def test_socket_is_closed_4404_when_the_path_is_unknown():
    customer = await adb(CustomerFactory)()
    assert await refused_with(app, "/ws/nothing/", user=customer) == 4404


async def test_socket_is_closed_4403_when_the_origin_is_foreign(settings):
    session = await waiting_session()
    headers = [(b"origin", b"https://evil.example"), (b"host", b"chat.dayone.example")]
    assert await refused_with(app, path_of(session), user=session.customer, headers=headers) == (
        4403
    )


async def test_socket_is_accepted_when_the_origin_is_in_the_allowlist(settings):
    settings.WS_ALLOWED_ORIGINS = ["https://app.dayone.example"]
    session = await waiting_session()
    headers = [(b"origin", b"https://app.dayone.example"), (b"host", b"api.dayone.example")]
    socket = await Socket.open(app, path_of(session), user=session.customer, headers=headers)
    assert (await socket.recv())["type"] == "session.state"
    await socket.close()
    # ... and exactly: a different port of the same host is another origin.
    headers = [(b"origin", b"https://app.dayone.example:8443"), (b"host", b"api.dayone.example")]
    assert await refused_with(app, path_of(session), user=session.customer, headers=headers) == (
        4403
    )


def _session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def test_socket_is_accepted_with_the_session_cookie_when_the_origin_is_the_same_host():
    session = await waiting_session()
    cookie = await adb(_session_cookie)(session.customer)
    headers = [
        (b"cookie", cookie),
        (b"origin", b"http://chat.local:8080"),
        (b"host", b"chat.local:8080"),
    ]
    socket = await Socket.open(app, path_of(session), headers=headers)
    state = await socket.recv()
    assert state["session"]["id"] == str(session.id)
    await socket.close()


async def test_socket_is_closed_4401_when_the_session_cookie_is_logged_out():
    session = await waiting_session()
    cookie = await adb(_session_cookie)(session.customer)
    from django.contrib.sessions.models import Session

    await adb(
        lambda: [s.delete() for s in Session.objects.all() if SESSION_KEY in s.get_decoded()]
    )()
    assert await refused_with(app, path_of(session), headers=[(b"cookie", cookie)]) == 4401


def _ticket(user) -> str:
    from chat.api.authentication import ticket_issue

    return ticket_issue(user=user)


async def test_ticket_opens_one_socket_only_when_used_twice():
    session = await waiting_session()
    ticket = await adb(_ticket)(session.customer)
    socket = await Socket.open(app, f"/ws/sessions/{session.id}/?ticket={ticket}")
    assert (await socket.recv())["type"] == "session.state"
    await socket.close()
    assert await refused_with(app, f"/ws/sessions/{session.id}/?ticket={ticket}") == 4401


async def test_ticket_is_refused_when_it_expired(settings):
    settings.WS_TICKET_TTL_S = 1
    session = await waiting_session()
    ticket = await adb(_ticket)(session.customer)
    await asyncio.sleep(1.2)
    assert await refused_with(app, f"/ws/sessions/{session.id}/?ticket={ticket}") == 4401


async def test_socket_is_closed_4400_when_after_seq_is_not_a_number():
    session = await waiting_session()
    path = f"/ws/sessions/{session.id}/?after_seq=abc"
    assert await refused_with(app, path, user=session.customer) == 4400


# --- connect: state, replay, live -----------------------------------------------------------


async def test_connect_sends_state_then_the_messages_after_after_seq():
    session, _ = await active_session()
    for n in range(4):
        await post(session.id, session.customer, Role.CUSTOMER, body=f"m{n + 1}")
    socket = await Socket.open(app, path_of(session, after_seq=2), user=session.customer)
    state = await socket.recv()
    assert state["type"] == "session.state"
    assert state["session"]["status"] == "active"
    assert state["session"]["last_seq"] == 4
    replay = [await socket.recv(), await socket.recv()]
    assert [(f["type"], f["message"]["seq"]) for f in replay] == [("message", 3), ("message", 4)]
    assert replay[0]["message"]["body"] == "m3"
    assert await socket.drain() == []
    await socket.close()


async def test_frames_carry_the_v1_object_fields_at_the_top_level_when_sent():
    # PROTOCOL.md v1: a `message` frame's fields are the message object's, a `session.state`
    # frame's the session object's. The nested copy is an extension and must agree with them.
    session, agent = await active_session()
    socket = await Socket.open(app, path_of(session), user=session.customer)
    state = await socket.recv()
    assert state["id"] == str(session.id)
    assert state["status"] == "active"
    assert state["agent"] == {"display_name": agent.display_name}
    assert {k: state[k] for k in state["session"]} == state["session"]
    await post(session.id, agent.user, Role.AGENT, body="How can I help?")
    live = await socket.recv()
    assert live["type"] == "message"
    assert (live["seq"], live["sender"], live["body"]) == (1, "agent", "How can I help?")
    assert live["created_at"]
    assert "client_msg_id" in live
    assert {k: live[k] for k in live["message"]} == live["message"]
    await socket.close()


async def test_live_messages_follow_the_replay_exactly_once_when_posted_during_connect():
    """Messages committed while the socket connects and replays arrive exactly once, in order."""
    session, agent = await active_session()
    await post(session.id, session.customer, Role.CUSTOMER, body="before")
    total = 40
    started = threading.Event()

    def writer():
        started.set()
        for n in range(total):
            _post(session.id, agent.user, Role.AGENT, body=f"live {n}")

    thread = threading.Thread(target=writer)
    thread.start()
    started.wait()
    socket = await Socket.open(app, path_of(session, after_seq=0), user=session.customer)
    await socket.recv()  # session.state
    seqs = []
    while len(seqs) < total + 1:
        frame = await socket.expect("message", timeout=15)
        seqs.append(frame["message"]["seq"])
    await asyncio.to_thread(thread.join)
    seqs += [f["message"]["seq"] for f in await socket.drain() if f["type"] == "message"]
    assert seqs == list(range(1, total + 2))
    await socket.close()


async def test_gap_is_filled_from_the_database_when_a_live_event_was_lost():
    session, agent = await active_session()
    socket = await open_customer(session)
    channel = await adb(
        lambda: Connection.objects.get(session_id=session.id, role=Role.CUSTOMER).channel_name
    )()
    layer = get_channel_layer()
    group = events.session_group(session.id)
    # The event of message 1 never reaches this socket (as if Redis dropped it) ...
    await layer.group_discard(group, channel)
    await post(session.id, agent.user, Role.AGENT, body="lost")
    await layer.group_add(group, channel)
    # ... so message 2 arrives with a gap, and the socket reads 1 from the database.
    await post(session.id, agent.user, Role.AGENT, body="found")
    first = await socket.expect("message")
    second = await socket.expect("message")
    assert [first["message"]["body"], second["message"]["body"]] == ["lost", "found"]
    # A late duplicate of an already-sent message is dropped.
    await layer.group_send(group, {"type": events.LAYER_TYPE, "event": first})
    assert [f for f in await socket.drain() if f["type"] == "message"] == []
    await socket.close()


async def test_client_claiming_more_than_exists_gets_new_messages_when_after_seq_is_too_high():
    session, agent = await active_session()
    socket = await open_customer(session, after_seq=99)
    await post(session.id, agent.user, Role.AGENT, body="first")
    frame = await socket.expect("message")
    assert frame["message"]["seq"] == 1
    await socket.close()


# --- message.send --------------------------------------------------------------------------


async def test_message_send_is_acked_and_broadcast_once_when_the_client_msg_id_is_repeated():
    session, _ = await active_session()
    socket = await open_customer(session)
    client_msg_id = new_id()
    frame = {"type": "message.send", "client_msg_id": client_msg_id, "body": "card blocked"}
    await socket.send(frame)
    ack = await socket.expect("message.ack")
    assert ack["client_msg_id"] == client_msg_id
    assert ack["seq"] == 1
    echoed = await socket.expect("message")
    assert echoed["message"]["sender"] == "customer"
    assert echoed["message"]["client_msg_id"] == client_msg_id
    await socket.send(frame)
    again = await socket.expect("message.ack")
    assert again["seq"] == 1
    assert [f for f in await socket.drain() if f["type"] == "message"] == []
    assert await adb(Message.objects.filter(session_id=session.id).count)() == 1
    await socket.close()


async def test_message_send_is_refused_with_an_error_when_the_session_ended():
    session = await waiting_session()
    socket = await open_customer(session)
    await socket.send({"type": "end.request"})
    await socket.expect("session.ended")
    await socket.send({"type": "message.send", "client_msg_id": new_id(), "body": "hello?"})
    error = await socket.expect("error")
    assert error["code"] == "session_closed"
    assert "client_msg_id" in error
    await socket.close()


# --- bad input --------------------------------------------------------------------------------


async def test_bad_frames_get_errors_and_the_socket_stays_open_when_input_is_invalid(settings):
    settings.MAX_MESSAGE_CHARS = 50
    settings.WS_MAX_FRAME_BYTES = 1000
    session, _ = await active_session()
    socket = await open_customer(session)
    cases = [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ('{"no": "type"}', "unknown_type"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "message.send", "body": "hi"}', "missing_field"),
        ('{"type": "message.send", "client_msg_id": "nope", "body": "hi"}', "invalid_field"),
        (f'{{"type": "message.send", "client_msg_id": "{new_id()}", "body": 5}}', "invalid_field"),
        (f'{{"type": "message.send", "client_msg_id": "{new_id()}"}}', "missing_field"),
        (
            f'{{"type": "message.send", "client_msg_id": "{new_id()}", "body": "{"x" * 51}"}}',
            "body_too_long",
        ),
        (f'{{"type": "message.send", "client_msg_id": "{new_id()}", "body": "  "}}', "body_empty"),
        ('{"type": "read", "seq": -1}', "invalid_field"),
        ('{"type": "read", "seq": true}', "invalid_field"),
        ('{"type": "sync"}', "missing_field"),
        ('{"type": "typing", "pad": "' + "é" * 600 + '"}', "frame_too_large"),
    ]
    for text, code in cases:
        await socket.send_text(text)
        error = await socket.recv()
        assert error["type"] == "error", text
        assert error["code"] == code, text
        assert error["detail"]
    await socket.comm.send_to(bytes_data=b"\x00\x01")
    assert (await socket.recv())["code"] == "binary_frame"
    assert await adb(Message.objects.count)() == 0
    # Still open and working.
    await socket.send({"type": "message.send", "client_msg_id": new_id(), "body": "ok"})
    assert (await socket.expect("message.ack"))["seq"] == 1
    await socket.close()


async def test_frames_over_the_rate_limit_are_refused_when_sent_too_fast(settings):
    settings.WS_RATE_LIMIT_COUNT = 5
    settings.WS_RATE_LIMIT_WINDOW_S = 1
    session, _ = await active_session()
    socket = await open_customer(session)
    for n in range(7):
        await socket.send({"type": "message.send", "client_msg_id": new_id(), "body": f"m{n}"})
    frames = []
    while len([f for f in frames if f["type"] in ("message.ack", "error")]) < 7:
        frames.append(await socket.recv())
    acks = [f for f in frames if f["type"] == "message.ack"]
    errors = [f for f in frames if f["type"] == "error"]
    assert len(acks) == 5
    assert [e["code"] for e in errors] == ["rate_limited", "rate_limited"]
    assert await adb(Message.objects.count)() == 5
    await asyncio.sleep(1.05)
    await socket.send({"type": "message.send", "client_msg_id": new_id(), "body": "later"})
    assert (await socket.expect("message.ack"))["seq"] == 6
    await socket.close()


# --- typing, read, end, sync ----------------------------------------------------------------


async def test_typing_and_read_reach_the_other_side_only_when_sent():
    session, agent = await active_session()
    customer = await open_customer(session)
    console = await Socket.open(app, "/ws/agent/", user=agent.user)
    await console.expect("session.state")
    await customer.send({"type": "typing"})
    typing = await console.expect("typing")
    assert typing == {"type": "typing", "session_id": str(session.id), "sender": "customer"}
    await customer.send({"type": "read", "seq": 0})
    read = await console.expect("read")
    assert read["seq"] == 0
    assert read["sender"] == "customer"
    assert [f["type"] for f in await customer.drain()] == []  # no echo of one's own
    await customer.close()
    await console.close()


async def test_end_takes_both_sides_when_the_session_is_active():
    session, agent = await active_session()
    customer = await open_customer(session)
    console = await Socket.open(app, "/ws/agent/", user=agent.user)
    await console.expect("session.state")
    await customer.send({"type": "end.request"})
    assert (await customer.expect("end.requested"))["by"] == "customer"
    assert (await console.expect("end.requested"))["by"] == "customer"
    await console.send({"type": "end.decline", "session_id": str(session.id)})
    assert (await customer.expect("end.declined"))["by"] == "agent"
    await customer.send({"type": "end.request"})
    await console.expect("end.requested")
    await console.send({"type": "end.confirm", "session_id": str(session.id)})
    ended = await customer.expect("session.ended")
    assert ended["reason"] == "mutual"
    assert (await console.expect("session.ended"))["reason"] == "mutual"
    # The state (ended) comes first, then session.ended: both reached the customer.
    states = [f for f in customer.seen if f["type"] == "session.state"]
    assert states[-1]["session"]["status"] == "ended"
    assert states[-1]["session"]["end_reason"] == "mutual"
    await customer.close()
    await console.close()


async def test_end_confirm_is_refused_with_an_error_when_nobody_asked():
    session, _ = await active_session()
    customer = await open_customer(session)
    await customer.send({"type": "end.confirm"})
    assert (await customer.expect("error"))["code"] == "no_end_request"
    await customer.close()


async def test_sync_resends_every_message_after_after_seq():
    session, agent = await active_session()
    for n in range(3):
        await post(session.id, agent.user, Role.AGENT, body=f"a{n}")
    customer = await open_customer(session, after_seq=3)
    await customer.send({"type": "sync", "after_seq": 1})
    frames = [await customer.expect("message"), await customer.expect("message")]
    assert [f["message"]["seq"] for f in frames] == [2, 3]
    await customer.close()


# --- presence ----------------------------------------------------------------------------------


async def test_presence_is_registered_and_cleared_when_the_socket_opens_and_closes(settings):
    settings.PRESENCE_HEARTBEAT_S = 0.2
    session, _ = await active_session()
    customer = await open_customer(session)
    conn = await adb(Connection.objects.get)(session_id=session.id)
    assert conn.role == Role.CUSTOMER
    await asyncio.sleep(0.6)
    beat = await adb(Connection.objects.get)(pk=conn.pk)
    assert beat.last_seen_at > conn.last_seen_at
    await customer.close()
    assert await adb(Connection.objects.filter(session_id=session.id).exists)() is False
    refreshed = await adb(ChatSession.objects.get)(pk=session.id)
    assert refreshed.customer_left_at is not None


# --- queue position --------------------------------------------------------------------------


async def test_waiting_customer_moves_up_when_someone_ahead_leaves_the_queue():
    first = await waiting_session()
    second = await waiting_session()
    third = await waiting_session()
    socket = await Socket.open(app, path_of(third), user=third.customer)
    state = await socket.recv()
    assert state["session"]["position"] == 3
    await adb(services.session_end_request)(
        session_id=first.id, user=first.customer, role=Role.CUSTOMER
    )
    moved = await socket.expect("session.state", lambda f: f["session"]["position"] == 2)
    assert moved["session"]["status"] == "waiting"
    await adb(services.session_end_request)(
        session_id=second.id, user=second.customer, role=Role.CUSTOMER
    )
    await socket.expect("session.state", lambda f: f["session"]["position"] == 1)
    await socket.close()


async def test_position_frames_are_coalesced_when_the_queue_moves_in_a_burst(settings):
    settings.QUEUE_POSITION_MIN_INTERVAL_MS = 1500
    ahead = [await waiting_session() for _ in range(6)]
    last = await waiting_session()
    socket = await Socket.open(app, path_of(last), user=last.customer)
    assert (await socket.recv())["session"]["position"] == 7
    # Six customers ahead leave within the interval: one frame at once, one at its end with
    # the final position, none in between.
    for session in ahead:
        await adb(services.session_end_request)(
            session_id=session.id, user=session.customer, role=Role.CUSTOMER
        )
    frames = [f for f in await socket.drain(2.5) if f["type"] == "session.state"]
    positions = [f["session"]["position"] for f in frames]
    assert len(positions) == 2, positions
    assert positions[-1] == 1
    assert positions[0] > 1
    await socket.close()


async def test_each_position_change_is_sent_when_the_interval_is_zero(settings):
    settings.QUEUE_POSITION_MIN_INTERVAL_MS = 0
    ahead = [await waiting_session() for _ in range(3)]
    last = await waiting_session()
    socket = await Socket.open(app, path_of(last), user=last.customer)
    assert (await socket.recv())["session"]["position"] == 4
    for left, session in enumerate(ahead, start=1):
        await adb(services.session_end_request)(
            session_id=session.id, user=session.customer, role=Role.CUSTOMER
        )
        frame = await socket.recv()
        assert (frame["type"], frame["session"]["position"]) == ("session.state", 4 - left)
    frames = [f for f in await socket.drain(0.5) if f["type"] == "session.state"]
    assert frames == []
    await socket.close()


async def test_one_subscription_per_process_carries_the_queue_to_every_waiting_socket():
    layer = get_channel_layer()
    ahead = await waiting_session()
    behind = [await waiting_session() for _ in range(5)]
    sockets = [await Socket.open(app, path_of(s), user=s.customer) for s in behind]
    for n, socket in enumerate(sockets, start=2):
        assert (await socket.recv())["session"]["position"] == n
    # The queue group holds one channel of this process, not one per waiting socket.
    assert len(layer.local_members(events.QUEUE_GROUP)) == 1
    await adb(services.session_end_request)(
        session_id=ahead.id, user=ahead.customer, role=Role.CUSTOMER
    )
    for n, socket in enumerate(sockets, start=1):
        moved = await socket.expect("session.state")
        assert moved["session"]["position"] == n
    for socket in sockets:
        await socket.close()
    # The last waiting socket gone, the process leaves the queue group.
    for _ in range(50):
        if not layer.local_members(events.QUEUE_GROUP):
            break
        await asyncio.sleep(0.05)
    assert layer.local_members(events.QUEUE_GROUP) == frozenset()


async def test_waiting_customer_stays_put_when_someone_behind_leaves():
    first = await waiting_session()
    second = await waiting_session()
    socket = await Socket.open(app, path_of(first), user=first.customer)
    assert (await socket.recv())["session"]["position"] == 1
    await adb(services.session_end_request)(
        session_id=second.id, user=second.customer, role=Role.CUSTOMER
    )
    frames = await socket.drain(0.5)
    assert [f for f in frames if f["type"] == "session.state"] == []
    await socket.close()


async def test_waiting_customer_sees_the_offer_and_the_agent_when_matched():
    session = await waiting_session()
    socket = await open_customer(session)
    agent = await adb(available_agent)()
    offered = await socket.expect("session.state", lambda f: f["session"]["status"] == "offered")
    assert offered["session"]["position"] == 1
    await adb(matching_services.offer_accept)(session_id=session.id, agent=agent)
    active = await socket.expect("session.state", lambda f: f["session"]["status"] == "active")
    assert active["session"]["agent"]["display_name"] == agent.display_name
    assert active["session"]["position"] is None
    await socket.close()
    refreshed = await adb(ChatSession.objects.get)(pk=session.id)
    assert refreshed.status == SessionStatus.ACTIVE


async def test_waiting_customer_moves_back_when_a_declined_offer_returns_ahead(settings):
    settings.QUEUE_POSITION_MIN_INTERVAL_MS = 0  # every move is a frame (1 -> 2 -> 1 in 1 s)
    first = await waiting_session()
    second = await waiting_session()
    socket = await Socket.open(app, path_of(second), user=second.customer)
    assert (await socket.recv())["session"]["position"] == 2
    agent = await adb(lambda: available_agent(capacity=1))()
    # The first customer is offered to the agent: the second moves to the head.
    await socket.expect("session.state", lambda f: f["session"]["position"] == 1)
    await adb(matching_services.offer_decline)(session_id=first.id, agent=agent)
    # Declined: the first goes back ahead of the second, with its old ticket.
    await socket.expect("session.state", lambda f: f["session"]["position"] == 2)
    await socket.close()
