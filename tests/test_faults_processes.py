"""Process faults on the real system: two daphne servers, a Celery worker and beat (tests/e2e).

* kill -9 of the daphne a customer is on, mid-conversation;
* kill -9 of the Celery worker while an offer should expire (and beat piles up ticks);
* a second beat started by mistake;
* a client that stops reading while its session is flooded.

Each test restores what it broke, so the next starts from a whole system. Tunables are small
(OFFER_TIMEOUT_S=3, CUSTOMER_GRACE_S=6) so the sweeps act within seconds.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from typing import Any

import pytest
import redis
import websockets
from channels.layers import get_channel_layer
from django.conf import settings

from agents.models import Agent, AgentStatus
from chat import events
from chat.models import ChatSession, SessionStatus
from matching.models import Assignment
from tests.e2e.client import WsClient
from tests.e2e.fixtures import stack_fixture
from tests.e2e.flows import people
from tests.e2e.helpers import adb
from tests.e2e.stack import ASGI_APP, BIN, Stack, free_port
from tests.test_faults_helpers import (
    A,
    B,
    Side,
    assert_exactly_once,
    await_for,
    finish,
    healthy,
    kill_proc,
    login,
    respawn,
    rss_mb,
    start_chat,
    stored,
    talk,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

stack = stack_fixture(
    env={
        "OFFER_TIMEOUT_S": "3",
        "CUSTOMER_GRACE_S": "6",
        "AGENT_GRACE_S": "60",
        "PRESENCE_HEARTBEAT_S": "1",
        "MATCH_TICK_S": "1",
        "LOG_LEVEL": "INFO",
    }
)


def _session(session_id: str) -> ChatSession:
    return ChatSession.objects.select_related("agent").get(pk=session_id)


# --- daphne ---------------------------------------------------------------------------------


async def test_clients_move_to_the_other_server_and_lose_nothing_when_one_daphne_is_killed(stack):
    customer_name, agent_name = await people("kill-daphne")
    customer, agent, session_id = await start_chat(stack, customer_name, agent_name)
    before = await adb(_session)(session_id)
    sent: list[str] = []
    await talk(customer, agent, ["one", "two", "three"], sent)

    # A message leaves the phone, and server A dies before (or just after) answering: the
    # client cannot know whether it was stored, so it sends it again, same client_msg_id.
    in_flight = str(uuid.uuid4())
    assert customer.conn is not None
    await customer.conn.send(
        {"type": "message.send", "client_msg_id": in_flight, "body": "in flight"}
    )
    stack.kill_server(A)
    killed_at = time.monotonic()
    seq = await customer.send_until_acked("in flight", client_msg_id=in_flight)
    sent.append("in flight")
    assert seq == len(sent)
    # The agent (on B) keeps talking; the customer, now on B too, hears it, and answers.
    await talk(agent, customer, ["four", "five", "six"], sent)
    for side in (customer, agent):
        await side.pump(0.5)
    assert_exactly_once(customer, sent, strict=True)
    assert_exactly_once(agent, sent, strict=False)
    assert await stored(stack, customer.token, session_id, B) == list(enumerate(sent, start=1))
    # The session did not move: same agent, still active, past the customer's grace period
    # (the dead server's socket never said goodbye; the customer was back on B long before).
    await asyncio.sleep(max(0.0, 8 - (time.monotonic() - killed_at)))
    after = await adb(_session)(session_id)
    assert (after.status, after.agent_id, after.ticket) == (
        SessionStatus.ACTIVE,
        before.agent_id,
        before.ticket,
    )
    assert after.customer_left_at is None
    await finish(customer, agent)
    respawn(stack, "daphne0")
    wait_for(lambda: healthy(stack, A), timeout=60, what="daphne A back")


# --- Celery worker --------------------------------------------------------------------------


def _queue_length() -> int:
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return int(client.llen(settings.CELERY_TASK_DEFAULT_QUEUE))
    finally:
        client.close()


def _send_twice(app: Any, task: str) -> None:
    """Send a task twice, as two beats would, to this run's broker and queue. Explicitly: the
    app's own connection settings are read once per process, and a test that points settings
    at another broker for a moment (test_foundation_health) would leave them pointing there."""
    with app.connection_for_write(settings.CELERY_BROKER_URL) as connection:
        for _ in range(2):
            app.send_task(task, connection=connection, queue=settings.CELERY_TASK_DEFAULT_QUEUE)


def _assignments(session_id: str) -> list[tuple[int, str]]:
    return list(
        Assignment.objects.filter(session_id=session_id)
        .order_by("offered_at")
        .values_list("agent_id", "outcome")
    )


async def _two_agents_and_a_waiting_customer(stack: Stack, prefix: str):
    """Agents X (on B) and Y (on A) start their shifts; a customer opens a chat, which the
    matcher (inline, after commit) offers to X, whose seat has been free the longest."""
    customer_name, x_name = await people(prefix)
    _, y_name = await people(prefix + "-y")
    x = await WsClient.connect(
        stack.ws_url(B, "/ws/agent/"), token=await login(stack, x_name), name="x"
    )
    await x.expect("agent.state")
    await x.send({"type": "shift.start"})
    await x.expect("agent.state", lambda f: f["status"] == "available")
    await asyncio.sleep(0.05)  # X's seats are free strictly before Y's
    y = await WsClient.connect(
        stack.ws_url(A, "/ws/agent/"), token=await login(stack, y_name), name="y"
    )
    await y.expect("agent.state")
    await y.send({"type": "shift.start"})
    await y.expect("agent.state", lambda f: f["status"] == "available")
    token = await login(stack, customer_name)
    async with stack.aapi(A, token) as api:
        created = await api.post("/api/sessions", json={"topic": "worker"})
    assert created.status_code == 201, created.text
    session_id = created.json()["id"]
    offer = await x.expect("offer", timeout=15)
    assert offer["session_id"] == session_id
    return session_id, token, x, y, x_name, y_name


async def _cancel(stack: Stack, token: str, session_id: str) -> None:
    async with stack.aapi(A, token) as api:
        await api.post(f"/api/sessions/{session_id}/end")


def _agent(username: str) -> Agent:
    return Agent.objects.get(user__username=username)


async def test_offer_expiry_and_rematching_resume_once_when_the_worker_comes_back(stack):
    kill_proc(stack, "worker")
    session_id, token, x, y, x_name, y_name = await _two_agents_and_a_waiting_customer(
        stack, "kill-worker"
    )
    # The offer times out after 3 s, but only the worker's tick acts on it: nothing happens.
    await asyncio.sleep(6)
    session = await adb(_session)(session_id)
    assert session.status == SessionStatus.OFFERED
    backlog = await asyncio.to_thread(_queue_length)
    assert backlog >= 3, "beat should have queued ticks for the missing worker"
    respawn(stack, "worker")
    frame = await x.expect("offer.expired", timeout=30)
    assert frame["session_id"] == session_id
    offer = await y.expect("offer", timeout=15)
    assert offer["session_id"] == session_id
    # The backlog of ticks drains, and running it did nothing twice.
    await await_for(
        lambda: asyncio.to_thread(lambda: _queue_length() == 0), within=30, what="backlog"
    )
    await asyncio.sleep(1.5)
    rest_x = await x.drain(0.5)
    rest_y = await y.drain(0.5)
    assert [f for f in x.seen + rest_x if f["type"] == "offer.expired"] == [frame]
    assert [f for f in y.seen + rest_y if f["type"] == "offer"] == [offer]
    x_agent, y_agent = await adb(_agent)(x_name), await adb(_agent)(y_name)
    assert await adb(_assignments)(session_id) == [
        (x_agent.id, "expired"),
        (y_agent.id, "offered"),
    ]
    assert x_agent.status == AgentStatus.AWAY
    await _cancel(stack, token, session_id)
    await x.send({"type": "shift.end"})
    await y.send({"type": "shift.end"})
    await x.close()
    await y.close()
    wait_for(lambda: healthy(stack, A) and healthy(stack, B), timeout=30, what="worker healthy")


# --- two beats ----------------------------------------------------------------------------------


async def test_a_second_beat_started_by_mistake_has_no_double_effect(stack):
    beat = next(p for p in stack.procs if p.name == "beat")
    stack._spawn("beat2", [*beat.popen.args[:-1], str(stack.workdir / "beat2")])
    try:
        session_id, _, x, y, _, _ = await _two_agents_and_a_waiting_customer(stack, "two-beats")
        # Two ticks a second now: the offer still expires once and is made again once.
        frame = await x.expect("offer.expired", timeout=20)
        offer = await y.expect("offer", timeout=15)
        await y.send({"type": "offer.accept", "session_id": session_id})
        await y.expect("session.state", lambda f: f["session"]["status"] == "active")
        await asyncio.sleep(3)  # a few more double ticks
        rest_x, rest_y = await x.drain(0.5), await y.drain(0.5)
        assert [f for f in x.seen + rest_x if f["type"] == "offer.expired"] == [frame]
        assert [f for f in y.seen + rest_y if f["type"] == "offer"] == [offer]
        outcomes = [outcome for _, outcome in await adb(_assignments)(session_id)]
        assert outcomes == ["expired", "accepted"]
        # That two samplers store one queue sample is tested in test_history_ops_queue.py.
        await y.send({"type": "end.request", "session_id": session_id})
        await x.send({"type": "shift.end"})
        await x.close()
        await y.close()
    finally:
        kill_proc(stack, "beat2")
        stack.procs[:] = [p for p in stack.procs if p.name != "beat2"]


# --- a client that stops reading -----------------------------------------------------------------


class RssSampler(threading.Thread):
    """The peak resident memory of a process, sampled every 50 ms until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = rss_mb(pid)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.peak = max(self.peak, rss_mb(self.pid))

    def stop(self) -> float:
        self.done.set()
        self.join()
        return self.peak


async def read_forever(client: WsClient) -> None:
    while True:
        await client.conn.recv()


async def read_until_closed(conn: websockets.ClientConnection) -> None:
    """What the kernel kept arrives, then the end: the server gave up on this client."""
    while True:
        await asyncio.wait_for(conn.recv(), 5)


# --- a client that stops reading -----------------------------------------------------------------


async def test_a_client_that_stops_reading_neither_grows_the_server_nor_slows_others(stack):
    # A server of our own with short keepalives (production keeps daphne's 20 s + 30 s).
    port = free_port()
    stack._spawn(
        "daphne-slow",
        [
            str(BIN / "daphne"),
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "--ping-interval",
            "3",
            "--ping-timeout",
            "3",
            ASGI_APP,
        ],
    )
    stack.ports.append(port)
    slow_index = len(stack.ports) - 1
    wait_for(lambda: healthy(stack, slow_index), timeout=60, what="the extra daphne")
    server_pid = next(p for p in stack.procs if p.name == "daphne-slow").popen.pid
    try:
        # The flooded chat, and a bystander's chat on the same server.
        flooded_customer, flooded_agent = await people("slow-flooded")
        c1, a1, flooded_id = await start_chat(stack, flooded_customer, flooded_agent)
        await a1.close()
        other_customer, other_agent = await people("slow-bystander")
        c2, a2, other_id = await start_chat(stack, other_customer, other_agent)
        await c1.close()
        await c2.close()
        # A small receive buffer, so the kernel cannot hide the backlog on the client's side.
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", port))
        raw.setblocking(False)
        slow = await websockets.connect(
            stack.ws_url(slow_index, f"/ws/sessions/{flooded_id}/"),
            sock=raw,
            additional_headers={"Authorization": f"Bearer {c1.token}"},
            ping_interval=None,
            max_size=2**24,
        )
        json.loads(await slow.recv())  # session.state, then nothing more is read
        slow.transport.pause_reading()
        # The same customer on another device that reads everything: the chat stays live
        # after the server gives up on the silent one (presence needs one socket).
        keeper = await WsClient.connect(
            stack.ws_url(B, f"/ws/sessions/{flooded_id}/"), token=c1.token, name="keeper"
        )
        keeping = asyncio.ensure_future(read_forever(keeper))
        bystander = Side(
            stack, "customer", f"/ws/sessions/{other_id}/", c2.token, [slow_index], other_id
        )
        await bystander.connect()
        await asyncio.sleep(0.5)
        baseline = rss_mb(server_pid)
        # The flood: frames the server relays without the database (the other side typing,
        # with a 3.5 KB field riding along), as fast as Redis takes them.
        layer = get_channel_layer()
        group = events.session_group(flooded_id)
        count, pad = 3000, "x" * 3500
        sampler = RssSampler(server_pid)
        sampler.start()
        for n in range(count):
            event = {"type": events.TYPING, "session_id": flooded_id, "sender": "agent"}
            await layer.group_send(
                group, {"type": events.LAYER_TYPE, "event": {**event, "n": n, "pad": pad}}
            )
        # The bystander's chat goes on meanwhile, at its usual pace.
        seq = await a2.send_until_acked("bystander during the flood")

        async def heard() -> bool:
            await bystander.pump(0.2)
            return seq in bystander.seqs()

        await await_for(heard, within=15, what="the bystander's message")
        await asyncio.sleep(8)  # the keepalive gives up on the silent client
        peak = sampler.stop()
        settled = rss_mb(server_pid)
        growth = peak - baseline
        print(
            f"slow consumer: daphne rss {baseline:.0f} MB before, peak {peak:.0f} MB, "
            f"{settled:.0f} MB after the keepalive dropped the client; "
            f"flood {count} x 3.5 KB = {count * 3.5 / 1024:.1f} MB"
        )
        # 10 MB were pushed at a client that read none of it. A generous bound: the server
        # must not hold it several times over, nor keep it once the client is dropped.
        assert growth < 96, f"daphne grew {growth:.0f} MB"
        assert settled - baseline < 64
        slow.transport.resume_reading()
        with pytest.raises(websockets.ConnectionClosed):
            await read_until_closed(slow)
        keeping.cancel()
        await keeper.close()
        await bystander.close()
        await a2.close()
    finally:
        kill_proc(stack, "daphne-slow")
        stack.procs[:] = [p for p in stack.procs if p.name != "daphne-slow"]
        stack.ports.pop()


# --- what the processes log ----------------------------------------------------------------------


async def test_process_logs_hold_no_token_ticket_or_body_when_people_chat_at_info_level(stack):
    customer_name, agent_name = await people("logs")
    customer, agent, session_id = await start_chat(stack, customer_name, agent_name)
    words = [f"secret {uuid.uuid4().hex}" for _ in range(4)]
    await talk(customer, agent, words, [])
    async with stack.aapi(A, customer.token) as api:
        ticket = (await api.post("/api/auth/ws-ticket")).json()["ticket"]
        await api.post(
            f"/api/sessions/{session_id}/messages",
            json={"client_msg_id": "not-a-uuid", "body": words[0] + " refused"},
        )
        refresh = await api.post(
            "/api/auth/token", json={"username": customer_name, "password": "dayone"}
        )
    by_ticket = await WsClient.connect(
        stack.ws_url(A, f"/ws/sessions/{session_id}/?ticket={ticket}")
    )
    await by_ticket.expect("session.state")
    await by_ticket.close()
    await finish(customer, agent)
    await asyncio.sleep(1)  # let the processes flush their logs
    logs = "\n".join(p.log.read_text(errors="replace") for p in stack.procs)
    assert "WSCONNECT" in logs  # the access log is on: the capture sees what a deploy would
    secrets_ = {
        "customer token": customer.token,
        "agent token": agent.token,
        "refresh token": refresh.json()["refresh"],
        "ticket": ticket,
        **{f"message {n}": body for n, body in enumerate(words)},
    }
    leaked = [name for name, value in secrets_.items() if value in logs]
    assert leaked == []
