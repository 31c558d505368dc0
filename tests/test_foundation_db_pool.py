"""The ASGI server's database connections come from a bounded pool (DB_POOL_MAX_SIZE).

Django keeps one connection per thread and daphne runs each HTTP request in a fresh thread, so
with persistent connections a burst of requests left one connection per request behind: the
benchmark ran PostgreSQL out of connections ("too many clients already") at 100 agents. Here
one real daphne (pool of 4) takes a burst of 60 concurrent requests that each read the
database, with persistent connections configured, and never holds more than 4.
"""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest
from django.db import connection

from tests.e2e.fixtures import stack_fixture
from tests.e2e.helpers import adb
from tests.factories import CustomerFactory, SessionFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

POOL = 4
REQUESTS = 60

# Persistent connections asked for (what leaked before), and a pool for the server.
stack = stack_fixture(env={"DB_CONN_MAX_AGE": "60", "DB_POOL_MAX_SIZE": str(POOL)}, servers=1)


def server_connections(app_name: str) -> int:
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [app_name]
        ).fetchone()
    return int(row[0])


async def test_the_server_holds_at_most_its_pool_when_a_burst_of_requests_arrives(stack):
    username = f"pool-{uuid.uuid4().hex[:8]}"
    customer = await adb(lambda: CustomerFactory(username=username))()
    await adb(lambda: SessionFactory(customer=customer))()
    token = await stack.alogin(0, username, "dayone")
    app_name = stack.app_name(0)
    peak = 0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, await asyncio.to_thread(server_connections, app_name))
            await asyncio.sleep(0.02)

    watcher = asyncio.ensure_future(watch())
    async with stack.aapi(0, token) as client:
        answers = await asyncio.gather(*(client.get("/api/sessions") for _ in range(REQUESTS)))
    peak = max(peak, await asyncio.to_thread(server_connections, app_name))
    done.set()
    await watcher

    assert [a.status_code for a in answers] == [200] * REQUESTS
    assert len(answers[0].json()["results"]) == 1
    # It did use the database, through no more connections than the pool allows.
    assert 1 <= peak <= POOL, peak
