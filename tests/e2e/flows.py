"""Scripted steps the e2e tests share: people to log in as, a chat brought to ACTIVE."""

from __future__ import annotations

from tests.e2e.client import Transcript, WsClient
from tests.e2e.helpers import adb
from tests.e2e.stack import Stack
from tests.factories import AgentFactory, CustomerFactory

# Server indexes: the customer talks to A, the agent to B.
A, B = 0, 1


async def people(prefix: str) -> tuple[str, str]:
    """A customer and an (offline) agent with password "dayone"; their usernames."""

    def make() -> tuple[str, str]:
        customer = CustomerFactory(username=f"{prefix}-customer", first_name="Dana", last_name="")
        agent = AgentFactory(user__username=f"{prefix}-agent", display_name="Sam")
        return customer.username, agent.user.username

    return await adb(make)()


async def start_chat(
    stack: Stack, prefix: str, transcript: Transcript | None = None
) -> tuple[str, str, str, WsClient, WsClient]:
    """Agent on B starts the shift; customer on A opens a chat; the agent accepts it."""
    customer_name, agent_name = await people(prefix)
    customer_token = await stack.alogin(A, customer_name, "dayone")
    agent_token = await stack.alogin(B, agent_name, "dayone")
    agent = await WsClient.connect(
        stack.ws_url(B, "/ws/agent/"), token=agent_token, name="agent", transcript=transcript
    )
    assert (await agent.expect("agent.state"))["status"] == "offline"
    await agent.send({"type": "shift.start"})
    await agent.expect("agent.state", lambda f: f["status"] == "available")
    async with stack.aapi(A, customer_token) as api:
        created = await api.post("/api/sessions", json={"topic": "Card declined"})
    assert created.status_code == 201, created.text
    session_id = created.json()["id"]
    customer = await WsClient.connect(
        stack.ws_url(A, f"/ws/sessions/{session_id}/"),
        token=customer_token,
        name="customer",
        transcript=transcript,
    )
    await customer.expect("session.state")
    offer = await agent.expect("offer")
    assert offer["session_id"] == session_id
    await agent.send({"type": "offer.accept", "session_id": session_id})
    await agent.expect("session.state", lambda f: f["session"]["status"] == "active")
    await customer.expect("session.state", lambda f: f["session"]["status"] == "active")
    return session_id, customer_token, agent_token, customer, agent
