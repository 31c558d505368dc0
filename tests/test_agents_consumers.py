"""The agent console socket /ws/agent/ over the real Redis channel layer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from agents.models import Agent
from chat import services
from chat.models import ChatSession, Message, Role, SessionStatus
from dayone_chat.routing import websocket_application as app
from matching import services as matching_services
from tests.e2e.helpers import Frame, Socket, adb, flush_layer, new_id, refused_with
from tests.factories import (
    AgentFactory,
    CustomerFactory,
    LeadFactory,
    SessionFactory,
    available_agent,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture(autouse=True)
async def _clean_layer():
    await flush_layer()


def _agent(available: bool = True) -> Agent:
    agent = available_agent() if available else AgentFactory()
    return Agent.objects.select_related("user").get(pk=agent.pk)


def _agent_with(**kwargs: object) -> Agent:
    agent = available_agent(**kwargs)
    return Agent.objects.select_related("user").get(pk=agent.pk)


def _session(customer=None) -> ChatSession:
    session = SessionFactory(**({"customer": customer} if customer else {}))
    return ChatSession.objects.select_related("customer", "agent__user").get(pk=session.pk)


def _accepted(agent: Agent) -> ChatSession:
    session = _session()
    assert session.agent_id == agent.pk, "the offer went to another agent"
    matching_services.offer_accept(session_id=session.id, agent=agent)
    return ChatSession.objects.select_related("customer", "agent__user").get(pk=session.pk)


make_agent = adb(_agent)
make_session = adb(_session)
accepted = adb(_accepted)


async def console_of(agent: Agent) -> Socket:
    socket = await Socket.open(app, "/ws/agent/", user=agent.user)
    first = await socket.recv()
    assert first["type"] == "agent.state"
    return socket


async def customer_of(session: ChatSession) -> Socket:
    socket = await Socket.open(app, f"/ws/sessions/{session.id}/", user=session.customer)
    assert (await socket.recv())["type"] == "session.state"
    return socket


# --- who may connect -----------------------------------------------------------------------


async def test_agent_socket_is_closed_4403_when_the_user_is_not_an_agent():
    customer = await adb(CustomerFactory)()
    assert await refused_with(app, "/ws/agent/", user=customer) == 4403


async def test_agent_socket_is_closed_4401_when_anonymous():
    assert await refused_with(app, "/ws/agent/") == 4401


# --- connect ---------------------------------------------------------------------------------


async def test_connect_sends_agent_state_then_each_seated_session():
    agent = await make_agent()
    first = await accepted(agent)
    second = await make_session()  # offered to the same agent's second seat
    socket = await Socket.open(app, "/ws/agent/", user=agent.user)
    state = await socket.recv()
    assert state["type"] == "agent.state"
    assert state["status"] == "available"
    assert {s["session_id"] for s in state["seats"]} == {str(first.id), str(second.id)}
    frames = [await socket.recv(), await socket.recv()]
    assert [f["type"] for f in frames] == ["session.state", "session.state"]
    by_id = {f["session_id"]: f["session"] for f in frames}
    assert by_id[str(first.id)]["status"] == "active"
    assert by_id[str(second.id)]["status"] == "offered"
    assert by_id[str(first.id)]["customer"]["display_name"]
    assert await socket.drain() == []
    await socket.close()
    refreshed = await adb(Agent.objects.get)(pk=agent.pk)
    assert refreshed.disconnected_at is not None


# --- shifts and breaks ---------------------------------------------------------------------


async def test_shift_frames_change_the_agent_state_when_sent():
    agent = await make_agent(available=False)
    socket = await console_of(agent)
    await socket.send({"type": "shift.start"})
    assert (await socket.expect("agent.state"))["status"] == "available"
    await socket.send({"type": "break.request"})
    assert (await socket.expect("agent.state"))["status"] == "on_break"
    await socket.send({"type": "break.end"})
    assert (await socket.expect("agent.state"))["status"] == "available"
    await socket.send({"type": "shift.end"})
    assert (await socket.expect("agent.state"))["status"] == "offline"
    await socket.send({"type": "break.end"})
    error = await socket.expect("error")
    assert error["code"]
    await socket.close()


async def test_break_starts_when_the_last_chat_ends():
    agent = await make_agent()
    session = await accepted(agent)
    console = await console_of(agent)
    await console.expect("session.state")
    await console.send({"type": "break.request"})
    assert (await console.expect("agent.state"))["status"] == "break_pending"
    await console.send({"type": "end.request", "session_id": str(session.id)})
    await console.expect("end.requested")
    await adb(services.session_end_confirm)(
        session_id=session.id, user=session.customer, role=Role.CUSTOMER
    )
    on_break = await console.expect("agent.state", lambda f: f["status"] == "on_break")
    assert [s["session_id"] for s in on_break["seats"]] == [None, None]
    await console.close()


# --- offers ----------------------------------------------------------------------------------


async def test_offer_reaches_the_console_and_accepting_makes_the_chat_active():
    agent = await make_agent()
    console = await console_of(agent)
    session = await make_session()
    offer = await console.expect("offer")
    assert offer["session_id"] == str(session.id)
    assert offer["customer"]["display_name"]
    assert offer["topic"] == session.topic
    assert offer["expires_at"]
    customer = await customer_of(session)
    await console.send({"type": "offer.accept", "session_id": str(session.id)})
    active = await console.expect("session.state", lambda f: f["session"]["status"] == "active")
    assert active["session"]["customer"]["display_name"] == offer["customer"]["display_name"]
    await customer.expect("session.state", lambda f: f["session"]["status"] == "active")
    # One change, one frame on the console, although it is in both groups.
    later = await console.drain()
    assert [f for f in later if f["type"] == "session.state"] == []
    await console.close()
    await customer.close()


async def test_declined_offer_leaves_the_console_and_goes_to_the_next_agent():
    first = await adb(lambda: _agent_with(capacity=1))()
    console = await console_of(first)
    second = await make_agent()
    other_console = await console_of(second)
    session = await make_session()
    assert session.agent_id == first.pk  # its seat has been free longest
    await console.expect("offer")
    await console.send({"type": "offer.decline", "session_id": str(session.id)})
    gone = await console.expect("session.state")
    assert gone["session"]["status"] == "waiting"
    assert (await other_console.expect("offer"))["session_id"] == str(session.id)
    # The console let go of it: nothing more about it reaches the first agent.
    await console.send({"type": "typing", "session_id": str(session.id)})
    assert (await console.expect("error"))["code"] == "not_found"
    await console.close()
    await other_console.close()


async def test_offer_expires_and_the_agent_goes_away_when_not_accepted_in_time(settings):
    settings.OFFER_TIMEOUT_S = 1
    agent = await make_agent()
    console = await console_of(agent)
    session = await make_session()
    await console.expect("offer")
    await asyncio.sleep(1.1)
    await adb(matching_services.tick)()
    expired = await console.expect("offer.expired")
    assert expired["session_id"] == str(session.id)
    await console.drain()
    assert [f["status"] for f in console.seen if f["type"] == "agent.state"][-1] == "away"
    await console.send({"type": "available"})
    await console.expect("agent.state", lambda f: f["status"] == "available")
    await console.close()


async def test_offer_accept_is_refused_when_the_offer_is_another_agents():
    owner = await make_agent()
    session = await make_session()
    assert session.agent_id == owner.pk
    other = await make_agent(available=False)
    console = await console_of(other)
    await console.send({"type": "offer.accept", "session_id": str(session.id)})
    error = await console.expect("error")
    assert error["code"] == "no_offer"
    assert error["session_id"] == str(session.id)
    refreshed = await adb(ChatSession.objects.get)(pk=session.id)
    assert refreshed.status == SessionStatus.OFFERED
    await console.close()


# --- conversation ----------------------------------------------------------------------------


async def test_agent_message_reaches_the_customer_and_the_console_once_when_sent():
    agent = await make_agent()
    session = await accepted(agent)
    console = await console_of(agent)
    await console.expect("session.state")
    customer = await customer_of(session)
    client_msg_id = new_id()
    await console.send(
        {
            "type": "message.send",
            "session_id": str(session.id),
            "client_msg_id": client_msg_id,
            "body": "Hello, I'm here to help.",
        }
    )
    ack = await console.expect("message.ack")
    assert ack == {
        "type": "message.ack",
        "session_id": str(session.id),
        "client_msg_id": client_msg_id,
        "seq": 1,
    }
    got = await customer.expect("message")
    assert got["message"]["sender"] == "agent"
    assert got["message"]["body"] == "Hello, I'm here to help."
    await customer.send({"type": "message.send", "client_msg_id": new_id(), "body": "thanks"})
    frames = await console.drain(0.5)
    messages = [f["message"]["seq"] for f in frames if f["type"] == "message"]
    # Published to the session group and to the agent group: shown once each.
    assert messages == [1, 2]
    await console.close()
    await customer.close()


async def test_agent_typing_and_read_reach_the_customer_when_sent():
    agent = await make_agent()
    session = await accepted(agent)
    console = await console_of(agent)
    await console.expect("session.state")
    customer = await customer_of(session)
    await console.send({"type": "typing", "session_id": str(session.id)})
    assert (await customer.expect("typing"))["sender"] == "agent"
    await console.send({"type": "read", "session_id": str(session.id), "seq": 0})
    assert (await customer.expect("read"))["sender"] == "agent"
    await console.close()
    await customer.close()


async def test_console_frames_are_refused_when_the_session_is_not_the_agents():
    owner = await make_agent()
    session = await accepted(owner)
    await adb(services.message_post)(
        session_id=session.id,
        author=session.customer,
        role=Role.CUSTOMER,
        client_msg_id=uuid.uuid4(),
        body="private",
    )
    other = await make_agent(available=False)
    console = await console_of(other)
    sid = str(session.id)
    frames = [
        {"type": "message.send", "session_id": sid, "client_msg_id": new_id(), "body": "hi"},
        {"type": "typing", "session_id": sid},
        {"type": "read", "session_id": sid, "seq": 1},
        {"type": "sync", "session_id": sid, "after_seq": 0},
        {"type": "end.request", "session_id": sid},
        {"type": "end.confirm", "session_id": sid},
        {"type": "end.decline", "session_id": sid},
        {"type": "offer.decline", "session_id": sid},
    ]
    for frame in frames:
        await console.send(frame)
        error = await console.expect("error")
        assert error["code"] in ("not_found", "no_offer"), frame
        assert error["session_id"] == sid
    received = await console.drain()
    assert [f for f in received if f["type"] == "message"] == []
    assert await adb(Message.objects.count)() == 1
    refreshed = await adb(ChatSession.objects.get)(pk=session.id)
    assert refreshed.status == SessionStatus.ACTIVE
    assert refreshed.end_requested_by == ""
    await console.close()


async def test_console_frames_are_refused_when_the_session_id_is_missing_or_bad():
    agent = await make_agent()
    console = await console_of(agent)
    await console.send({"type": "typing"})
    assert (await console.expect("error"))["code"] == "missing_field"
    await console.send({"type": "offer.accept", "session_id": "x"})
    assert (await console.expect("error"))["code"] == "invalid_field"
    await console.close()


async def test_sync_on_the_console_resends_the_transcript_when_asked():
    agent = await make_agent()
    session = await accepted(agent)
    for n in range(3):
        await adb(services.message_post)(
            session_id=session.id,
            author=session.customer,
            role=Role.CUSTOMER,
            client_msg_id=uuid.uuid4(),
            body=f"c{n}",
        )
    console = await console_of(agent)
    await console.expect("session.state")
    await console.send({"type": "sync", "session_id": str(session.id), "after_seq": 0})
    seqs = [(await console.expect("message"))["message"]["seq"] for _ in range(3)]
    assert seqs == [1, 2, 3]
    await console.close()


async def test_console_leaves_a_session_when_it_ends_and_hears_no_more_of_it():
    agent = await make_agent()
    session = await accepted(agent)
    console = await console_of(agent)
    await console.expect("session.state")
    await adb(services.session_end_request)(
        session_id=session.id, user=session.customer, role=Role.CUSTOMER
    )
    await adb(services.session_end_confirm)(session_id=session.id, user=agent.user, role=Role.AGENT)
    await console.expect("session.ended")
    frames = await console.drain()
    assert [f["type"] for f in frames].count("session.ended") == 0  # the duplicate was dropped
    await console.send({"type": "typing", "session_id": str(session.id)})
    assert (await console.expect("error"))["code"] == "not_found"
    await console.close()


async def test_console_gets_messages_sent_while_offered_once_when_it_accepts():
    agent = await make_agent()
    console = await console_of(agent)
    session = await make_session()
    await console.expect("offer")
    customer = await customer_of(session)
    await customer.send({"type": "message.send", "client_msg_id": new_id(), "body": "anyone?"})
    await customer.expect("message.ack")
    await console.send({"type": "offer.accept", "session_id": str(session.id)})
    await console.expect("session.state", lambda f: f["session"]["status"] == "active")
    await console.drain(0.5)
    assert [f["message"]["body"] for f in console.seen if f["type"] == "message"] == ["anyone?"]
    await console.close()
    await customer.close()


async def test_console_rate_limit_scales_with_its_seats_when_frames_come_fast(settings):
    settings.WS_RATE_LIMIT_COUNT = 3
    settings.WS_RATE_LIMIT_WINDOW_S = 10
    agent = await make_agent()  # two seats: six frames per window
    session = await accepted(agent)
    console = await console_of(agent)
    await console.expect("session.state")
    for _ in range(7):
        await console.send({"type": "typing", "session_id": str(session.id)})
    errors = [f for f in await console.drain() if f["type"] == "error"]
    assert [e["code"] for e in errors] == ["rate_limited"]
    await console.close()


# --- every message once, published to the session group only ----------------------------------


class _HookedLayer:
    """The real Redis layer, with a coroutine run once right before the socket next joins a
    session group: it posts a message in the moment between "the session is the agent's" and
    "the console is in its session group"."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.before_session_join: Callable[[uuid.UUID], Awaitable[None]] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def group_add(self, group: str, channel: str) -> None:
        hook = self.before_session_join
        if hook is not None and group.startswith("session."):
            self.before_session_join = None
            await hook(uuid.UUID(group.split(".", 1)[1]))
        await self.real.group_add(group, channel)

    def post_before_joining(self, body: str) -> None:
        async def hook(session_id: uuid.UUID) -> None:
            session = await adb(ChatSession.objects.select_related("customer").get)(pk=session_id)
            await post(session, body)

        self.before_session_join = hook


@pytest.fixture
def hooked_layer():
    from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

    real = channel_layers[DEFAULT_CHANNEL_LAYER]
    hooked = _HookedLayer(real)
    channel_layers.backends[DEFAULT_CHANNEL_LAYER] = hooked
    try:
        yield hooked
    finally:
        channel_layers.backends[DEFAULT_CHANNEL_LAYER] = real


def _post(session: ChatSession, body: str) -> int:
    return services.message_post(
        session_id=session.id,
        author=session.customer,
        role=Role.CUSTOMER,
        client_msg_id=uuid.uuid4(),
        body=body,
    ).message.seq


post = adb(_post)


def _state_of(console: Socket, session: ChatSession) -> Frame:
    """The session.state that gave the console the session (the first one about it)."""
    return next(
        f
        for f in console.seen
        if f["type"] == "session.state" and f["session_id"] == str(session.id)
    )


def _shown_once(console: Socket, session: ChatSession) -> list[int]:
    """What the console shows of the session: the messages up to the ``last_seq`` of the state
    that gave it the session (the page syncs those), then every live message frame.
    Fails on a message frame sent twice or one the state already counted."""
    live = [
        f["message"]["seq"]
        for f in console.seen
        if f["type"] == "message" and f["session_id"] == str(session.id)
    ]
    assert len(live) == len(set(live)), f"a message sent twice: {live}"
    baseline = _state_of(console, session)["session"]["last_seq"]
    assert all(seq > baseline for seq in live), f"{live} repeats the state's {baseline}"
    return [*range(1, baseline + 1), *sorted(live)]


async def test_console_shows_each_message_once_when_one_is_posted_while_the_offer_is_made(
    hooked_layer,
):
    agent = await make_agent()
    console = await console_of(agent)
    hooked_layer.post_before_joining("are you there?")
    session = await make_session()
    await console.expect("offer")
    assert hooked_layer.before_session_join is None  # the hook ran: message 1 is stored
    await console.drain()
    # Shown without a later message that would reveal a gap.
    assert _shown_once(console, session) == [1]
    assert await post(session, "hello?") == 2
    await console.expect("message", lambda f: f["message"]["seq"] == 2)
    await console.drain()
    assert _shown_once(console, session) == [1, 2]
    await console.close()


async def test_console_shows_each_message_once_when_messages_come_before_and_after_accepting():
    agent = await make_agent()
    console = await console_of(agent)
    session = await make_session()
    await console.expect("offer")
    await post(session, "one")
    await console.expect("message", lambda f: f["message"]["seq"] == 1)
    await console.send({"type": "offer.accept", "session_id": str(session.id)})
    await post(session, "two")  # racing the accept
    await console.expect("session.state", lambda f: f["session"]["status"] == "active")
    await post(session, "three")
    await console.expect("message", lambda f: f["message"]["seq"] == 3)
    await console.drain()
    assert _shown_once(console, session) == [1, 2, 3]
    await console.close()


async def test_console_shows_each_message_once_when_it_reconnects(hooked_layer):
    agent = await make_agent()
    session = await accepted(agent)
    console = await console_of(agent)
    await console.expect("session.state")
    await post(session, "one")
    await console.expect("message")
    await console.close()
    await post(session, "two")  # while the console is away
    hooked_layer.post_before_joining("three")  # while it joins again, before its snapshot
    again = await console_of(agent)
    await again.expect("session.state")
    await post(session, "four")
    await again.expect("message", lambda f: f["message"]["seq"] == 4)
    await again.drain()
    assert _shown_once(again, session) == [1, 2, 3, 4]
    await again.close()


async def test_console_shows_each_message_once_when_offered_between_its_two_connect_reads(
    hooked_layer,
):
    agent = await make_agent()
    made: list[ChatSession] = []

    real_add = hooked_layer.group_add

    async def group_add(group: str, channel: str) -> None:
        # Right after the agent's group: the first read is done, the snapshot is not.
        await real_add(group, channel)
        if group.startswith("agent.") and not made:
            made.append(await make_session())
            hooked_layer.post_before_joining("posted before the console joined")

    hooked_layer.group_add = group_add  # type: ignore[method-assign]
    console = await console_of(agent)
    (session,) = made
    await console.expect("session.state", lambda f: f["session_id"] == str(session.id))
    await console.drain()
    assert _shown_once(console, session) == [1]
    await post(session, "and after")
    await console.expect("message", lambda f: f["message"]["seq"] == 2)
    await console.drain()
    assert _shown_once(console, session) == [1, 2]
    await console.close()


async def test_console_shows_each_message_once_when_a_lead_requeues_to_another_agent(
    hooked_layer,
):
    first = await adb(lambda: _agent_with(capacity=1))()
    session = await accepted(first)
    second = await make_agent()  # its seat is free longer than the one the requeue frees
    old = await console_of(first)
    await old.expect("session.state")
    new = await console_of(second)
    await post(session, "one")
    await old.expect("message")
    lead = await adb(LeadFactory)()
    hooked_layer.post_before_joining("two")  # while the second console joins
    await adb(services.session_requeue_by_lead)(session_id=session.id, lead=lead)
    offer = await new.expect("offer")
    assert offer["session_id"] == str(session.id)
    await new.drain()
    assert _shown_once(new, session) == [1, 2]
    await post(session, "three")
    await new.expect("message", lambda f: f["message"]["seq"] == 3)
    await new.drain()
    assert _shown_once(new, session) == [1, 2, 3]
    await old.drain()
    assert [f["message"]["seq"] for f in old.seen if f["type"] == "message"] == [1]
    await old.close()
    await new.close()
