"""End to end on real processes, with the clock-driven parts of DESIGN.md made small.

The beat's tick (every second) expires offers and grace periods; these tests wait for it.
"""

from __future__ import annotations

import uuid

import pytest

from tests.e2e import WsClient
from tests.e2e.fixtures import stack_fixture
from tests.e2e.flows import A, B, people, start_chat

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

stack = stack_fixture(
    env={
        "OFFER_TIMEOUT_S": "2",
        "CUSTOMER_GRACE_S": "2",
        "AGENT_GRACE_S": "60",
        "PRESENCE_HEARTBEAT_S": "1",
        "MATCH_TICK_S": "1",
    }
)


async def test_offer_expires_and_the_agent_goes_away_when_not_accepted_in_time(stack):
    customer_name, agent_name = await people("slow")
    agent = await WsClient.connect(
        stack.ws_url(B, "/ws/agent/"), token=await stack.alogin(B, agent_name, "dayone")
    )
    await agent.expect("agent.state")
    await agent.send({"type": "shift.start"})
    await agent.expect("agent.state", lambda f: f["status"] == "available")
    customer_token = await stack.alogin(A, customer_name, "dayone")
    async with stack.aapi(A, customer_token) as api:
        session_id = (await api.post("/api/sessions", json={})).json()["id"]
    customer = await WsClient.connect(
        stack.ws_url(A, f"/ws/sessions/{session_id}/"), token=customer_token
    )
    await customer.expect("session.state")
    await agent.expect("offer")
    # Nobody accepts: after OFFER_TIMEOUT_S the tick takes the offer back.
    expired = await agent.expect("offer.expired", timeout=10)
    assert expired["session_id"] == session_id
    await agent.drain()
    states = [f["status"] for f in agent.seen if f["type"] == "agent.state"]
    assert states[-1] == "away"
    back = await customer.expect("session.state", lambda f: f["session"]["status"] == "waiting")
    assert back["session"]["position"] == 1
    # Too late to accept now.
    await agent.send({"type": "offer.accept", "session_id": session_id})
    assert (await agent.expect("error"))["code"] in ("no_offer", "offer_expired")
    # Back to available: the same customer is offered again (still at the head).
    await agent.send({"type": "available"})
    again = await agent.expect("offer", timeout=10)
    assert again["session_id"] == session_id
    await agent.send({"type": "offer.accept", "session_id": session_id})
    await customer.expect("session.state", lambda f: f["session"]["status"] == "active")
    await customer.close()
    await agent.close()


async def test_break_starts_when_the_last_chat_ends(stack):
    session_id, _, _, customer, agent = await start_chat(stack, "brk")
    await agent.send({"type": "break.request"})
    await agent.expect("agent.state", lambda f: f["status"] == "break_pending")
    # Chats go on while the break is pending.
    await agent.send(
        {
            "type": "message.send",
            "session_id": session_id,
            "client_msg_id": str(uuid.uuid4()),
            "body": "one more thing",
        }
    )
    await customer.expect("message")
    await agent.send({"type": "end.request", "session_id": session_id})
    await customer.expect("end.requested")
    await customer.send({"type": "end.confirm"})
    await customer.expect("session.ended")
    await agent.expect("agent.state", lambda f: f["status"] == "on_break")
    await customer.close()
    await agent.close()


async def test_away_customer_goes_incomplete_then_resumes_with_a_new_offer_and_the_transcript(
    stack,
):
    session_id, customer_token, _, customer, agent = await start_chat(stack, "away")
    for n, body in enumerate(["where is my parcel?", "it was due monday"]):
        await customer.send(
            {"type": "message.send", "client_msg_id": str(uuid.uuid4()), "body": body}
        )
        await customer.expect("message.ack", lambda f, n=n: f["seq"] == n + 1)
    await agent.send(
        {
            "type": "message.send",
            "session_id": session_id,
            "client_msg_id": str(uuid.uuid4()),
            "body": "checking",
        }
    )
    await customer.expect("message", lambda f: f["message"]["seq"] == 3)
    await customer.close()
    # Past CUSTOMER_GRACE_S the tick makes it incomplete and frees the agent's seat.
    gone = await agent.expect(
        "session.state", lambda f: f["session"]["status"] == "incomplete", timeout=15
    )
    assert gone["session_id"] == session_id
    async with stack.aapi(A, customer_token) as api:
        listed = (await api.get("/api/sessions")).json()["results"][0]
        assert listed["status"] == "incomplete"
        assert listed["resumable"] is True
        resumed = await api.post(f"/api/sessions/{session_id}/resume")
    assert resumed.status_code == 200
    assert resumed.json()["status"] in ("waiting", "offered")
    offer = await agent.expect("offer", lambda f: f["session_id"] == session_id)
    await agent.send({"type": "offer.accept", "session_id": offer["session_id"]})
    await agent.expect("session.state", lambda f: f["session"]["status"] == "active")
    back = await WsClient.connect(
        stack.ws_url(A, f"/ws/sessions/{session_id}/?after_seq=0"), token=customer_token
    )
    state = await back.expect("session.state")
    assert state["session"]["status"] == "active"
    transcript = [(await back.expect("message"))["message"]["body"] for _ in range(3)]
    assert transcript == ["where is my parcel?", "it was due monday", "checking"]
    await agent.send({"type": "sync", "session_id": session_id, "after_seq": 0})
    seqs = [(await agent.expect("message"))["message"]["seq"] for _ in range(3)]
    assert seqs == [1, 2, 3]
    await back.close()
    await agent.close()
