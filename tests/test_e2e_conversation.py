"""End to end on real processes: two daphne servers, a Celery worker and beat, real sockets.

The customer talks to server A, the agent to server B: everything between them crosses the
Redis channel layer. Only the `websockets` client and HTTP are used to drive the system.
"""

from __future__ import annotations

import uuid

import pytest

from chat.models import Message
from tests.e2e import Transcript, WsClient
from tests.e2e.fixtures import save_transcript, stack_fixture
from tests.e2e.flows import A, B, people, start_chat
from tests.e2e.helpers import adb

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

stack = stack_fixture(
    env={
        "OFFER_TIMEOUT_S": "20",
        "CUSTOMER_GRACE_S": "60",
        "AGENT_GRACE_S": "60",
        "PRESENCE_HEARTBEAT_S": "2",
        "MATCH_TICK_S": "1",
    }
)


async def test_whole_conversation_when_customer_and_agent_are_on_different_servers(stack):
    transcript = Transcript()
    session_id, customer_token, _, customer, agent = await start_chat(stack, "conv", transcript)

    hello = str(uuid.uuid4())
    await customer.send(
        {"type": "message.send", "client_msg_id": hello, "body": "My card was declined."}
    )
    assert (await customer.expect("message.ack"))["seq"] == 1
    got = await agent.expect("message")
    assert got["session_id"] == session_id
    assert got["message"]["body"] == "My card was declined."

    await agent.send({"type": "typing", "session_id": session_id})
    assert (await customer.expect("typing"))["sender"] == "agent"
    await agent.send({"type": "read", "session_id": session_id, "seq": 1})
    assert (await customer.expect("read"))["seq"] == 1
    await agent.send(
        {
            "type": "message.send",
            "session_id": session_id,
            "client_msg_id": str(uuid.uuid4()),
            "body": "Let me check that for you.",
        }
    )
    assert (await agent.expect("message.ack"))["seq"] == 2
    assert (await customer.expect("message"))["message"]["sender"] == "agent"

    await customer.send({"type": "end.request"})
    assert (await agent.expect("end.requested"))["by"] == "customer"
    await agent.send({"type": "end.confirm", "session_id": session_id})
    assert (await customer.expect("session.ended"))["reason"] == "mutual"
    assert (await agent.expect("session.ended"))["reason"] == "mutual"
    # The seat was freed in the same transaction: its agent.state came just before.
    await agent.drain()
    seats = [f["seats"] for f in agent.seen if f["type"] == "agent.state"]
    assert [s["session_id"] for s in seats[-1]] == [None, None]
    await customer.close()
    await agent.close()
    save_transcript(transcript, "conversation")

    async with stack.aapi(A, customer_token) as api:
        history = (await api.get("/api/sessions")).json()
        messages = (await api.get(f"/api/sessions/{session_id}/messages")).json()
    assert history["results"][0]["id"] == session_id
    assert history["results"][0]["status"] == "ended"
    assert history["results"][0]["last_message"]["body"] == "Let me check that for you."
    assert [m["seq"] for m in messages["results"]] == [1, 2]


async def test_reconnect_with_after_seq_gets_exactly_the_missed_messages_once(stack):
    session_id, customer_token, _, customer, agent = await start_chat(stack, "drop")
    await customer.send({"type": "message.send", "client_msg_id": str(uuid.uuid4()), "body": "hi"})
    await customer.expect("message", lambda f: f["message"]["seq"] == 1)
    # The phone drops the connection: no close handshake.
    customer.conn.transport.abort()
    for n in range(3):
        await agent.send(
            {
                "type": "message.send",
                "session_id": session_id,
                "client_msg_id": str(uuid.uuid4()),
                "body": f"answer {n + 1}",
            }
        )
        await agent.expect("message.ack")
    again = await WsClient.connect(
        stack.ws_url(A, f"/ws/sessions/{session_id}/?after_seq=1"), token=customer_token
    )
    state = await again.recv()
    assert state["type"] == "session.state"
    assert state["session"]["status"] == "active"
    frames = [await again.recv() for _ in range(3)]
    assert [(f["type"], f["message"]["seq"]) for f in frames] == [
        ("message", 2),
        ("message", 3),
        ("message", 4),
    ]
    assert [f["message"]["body"] for f in frames] == ["answer 1", "answer 2", "answer 3"]
    rest = await again.drain(0.8)
    assert [f for f in rest if f["type"] == "message"] == []
    await again.close()
    await agent.close()


async def test_retried_client_msg_id_is_stored_once_when_the_client_resends_after_a_drop(stack):
    session_id, customer_token, _, customer, agent = await start_chat(stack, "retry")
    client_msg_id = str(uuid.uuid4())
    frame = {"type": "message.send", "client_msg_id": client_msg_id, "body": "only once"}
    await customer.send(frame)
    customer.conn.transport.abort()  # the ack is lost with the connection
    again = await WsClient.connect(
        stack.ws_url(A, f"/ws/sessions/{session_id}/?after_seq=1"), token=customer_token
    )
    await again.expect("session.state")
    await again.send(frame)
    ack = await again.expect("message.ack")
    assert ack == {
        "type": "message.ack",
        "session_id": session_id,
        "client_msg_id": client_msg_id,
        "seq": 1,
    }
    async with stack.aapi(A, customer_token) as api:
        rest = await api.post(
            f"/api/sessions/{session_id}/messages",
            json={"client_msg_id": client_msg_id, "body": "only once"},
        )
    assert rest.status_code == 200
    assert rest.json()["seq"] == 1
    received = [await agent.expect("message")] + await agent.drain(0.8)
    assert [f["message"]["seq"] for f in received if f["type"] == "message"] == [1]
    assert await adb(Message.objects.filter(client_msg_id=client_msg_id).count)() == 1
    await again.close()
    await agent.close()


async def test_strangers_are_refused_on_every_socket_and_endpoint(stack):
    session_id, _, _, customer, agent = await start_chat(stack, "owner")
    stranger_name, other_agent_name = await people("stranger")
    stranger = await stack.alogin(A, stranger_name, "dayone")
    other_agent = await stack.alogin(B, other_agent_name, "dayone")
    path = f"/ws/sessions/{session_id}/"

    anonymous = await WsClient.connect(stack.ws_url(A, path))
    assert await anonymous.closed_with() == 4401
    for token in (stranger, other_agent):
        intruder = await WsClient.connect(stack.ws_url(B, path), token=token)
        assert await intruder.closed_with() == 4404
    console = await WsClient.connect(stack.ws_url(A, "/ws/agent/"), token=other_agent)
    await console.expect("agent.state")
    await console.send({"type": "sync", "session_id": session_id, "after_seq": 0})
    assert (await console.expect("error"))["code"] == "not_found"
    await console.close()

    calls = [
        ("get", f"/api/sessions/{session_id}", None),
        ("get", f"/api/sessions/{session_id}/messages", None),
        ("post", f"/api/sessions/{session_id}/messages", {"client_msg_id": str(uuid.uuid4())}),
        ("post", f"/api/sessions/{session_id}/resume", None),
        ("post", f"/api/sessions/{session_id}/end", None),
    ]
    for method, url, body in calls:
        if body is not None:
            body = {**body, "body": "intrusion"}
        for token, expected in ((None, 401), (stranger, 404), (other_agent, 404)):
            async with stack.aapi(A, token) as api:
                answer = await api.request(method, url, json=body)
            assert answer.status_code == expected, (method, url, token is None)
            assert set(answer.json()) >= {"code", "detail"}
    await customer.close()
    await agent.close()
