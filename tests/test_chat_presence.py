"""Presence in bulk: one beat per process refreshes every socket's row and heals the positions.

Sockets over WebsocketCommunicator and the real Redis channel layer, rows in the real
PostgreSQL. Most tests drive the beat by hand (``Presence.beat``, the method the process's task
calls) with a heartbeat so long that the task itself never fires during the test: no timing.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents.models import Agent
from chat import consumers, selectors, services
from chat.models import ChatSession, Connection, Role, SessionStatus
from chat.payloads import queue_position
from dayone_chat.routing import websocket_application as app
from matching import services as matching_services
from tests.e2e.helpers import Socket, adb, flush_layer
from tests.factories import (
    AgentFactory,
    SessionFactory,
    available_agent,
    ended_session,
    incomplete_session,
)

# Long enough that the process's own beat never fires while a test runs.
NEVER = 3600


@pytest.fixture(autouse=True)
async def _clean_layer():
    await flush_layer()


def _waiting() -> ChatSession:
    session = SessionFactory()
    return ChatSession.objects.select_related("customer").get(pk=session.pk)


def _offline_agent() -> Agent:
    # Offline: nothing is offered to it, so the waiting sessions stay waiting.
    return Agent.objects.select_related("user").get(pk=AgentFactory().pk)


def _backdate_all(delta: timedelta) -> timedelta:
    Connection.objects.update(last_seen_at=timezone.now() - delta)
    return delta


async def open_customer(session: ChatSession) -> Socket:
    socket = await Socket.open(app, f"/ws/sessions/{session.id}/", user=session.customer)
    assert (await socket.recv())["type"] == "session.state"
    return socket


async def open_console(agent: Agent) -> Socket:
    socket = await Socket.open(app, "/ws/agent/", user=agent.user)
    assert (await socket.recv())["type"] == "agent.state"
    return socket


async def open_sockets(customers: int, agents: int) -> list[Socket]:
    sockets = []
    for _ in range(customers):
        sockets.append(await open_customer(await adb(_waiting)()))
    for _ in range(agents):
        sockets.append(await open_console(await adb(_offline_agent)()))
    return sockets


async def kill(socket: Socket) -> None:
    """End the consumer as daphne does when it gives up on it: no websocket.disconnect, so the
    consumer's goodbye (deleting its Connection row) never runs."""
    socket.comm.future.cancel()
    with pytest.raises(asyncio.CancelledError):
        await socket.comm.future


def counting_beats(monkeypatch) -> list[int]:
    """Count the statements of each beat's thread hop on the connection that runs them."""
    counts: list[int] = []
    real = consumers._presence_beat

    def counted(**kwargs):
        with CaptureQueriesContext(connection) as queries:
            result = real(**kwargs)
        counts.append(len(queries))
        return result

    monkeypatch.setattr(consumers, "_presence_beat", counted)
    return counts


# --- the selector and the service ------------------------------------------------------------


@pytest.mark.django_db
def test_queue_spots_equal_queue_position_when_sessions_are_in_every_status():
    agent = available_agent(capacity=1)
    incomplete = incomplete_session(agent=agent)  # the agent's seat is free again after it
    cancelled = ended_session()
    queue = [SessionFactory() for _ in range(6)]
    matching_services.match_run()  # the head is offered to the free seat
    available_agent(capacity=1)
    matching_services.match_run()  # the next one is offered to a new agent, who accepts
    queue[1].refresh_from_db()
    matching_services.offer_accept(session_id=queue[1].id, agent=queue[1].agent)
    # A ticket that left the queue (the session ended) leaves a gap in the tickets.
    services.session_end_request(session_id=queue[3].id, user=queue[3].customer, role="customer")
    sessions = [incomplete, cancelled, *queue]
    unknown = uuid.uuid4()

    spots = selectors.queue_spots(session_ids=[s.id for s in sessions] + [unknown])

    assert unknown not in spots
    statuses = []
    for session in sessions:
        session.refresh_from_db()
        statuses.append(session.status)
        assert spots[session.id].position == queue_position(session), session.status
        assert spots[session.id].ticket == session.ticket
    assert statuses == [
        "incomplete",
        "ended",
        "offered",
        "active",
        "waiting",
        "ended",
        "waiting",
        "waiting",
    ]
    assert [spots[s.id].position for s in sessions] == [None, None, 1, None, 1, None, 2, 3]


@pytest.mark.django_db
def test_queue_spots_read_nothing_when_no_session_is_asked_for():
    with CaptureQueriesContext(connection) as queries:
        assert selectors.queue_spots(session_ids=[]) == {}
    assert len(queries) == 0


@pytest.mark.django_db
def test_connections_heartbeat_refreshes_only_the_named_rows_in_one_statement():
    session = SessionFactory()
    old = timezone.now() - timedelta(minutes=5)
    for name in ("c.1", "c.2", "c.3"):
        Connection.objects.create(
            channel_name=name,
            role=Role.CUSTOMER,
            user=session.customer,
            session=session,
            connected_at=old,
            last_seen_at=old,
        )
    before = timezone.now()
    with CaptureQueriesContext(connection) as queries:
        refreshed = services.connections_heartbeat(channel_names=["c.1", "c.3", "c.gone"])
    after = timezone.now()
    assert refreshed == 2
    assert len(queries) == 1
    seen = dict(Connection.objects.values_list("channel_name", "last_seen_at"))
    assert before <= seen["c.1"] <= after
    assert before <= seen["c.3"] <= after
    assert seen["c.2"] == old
    assert services.connections_heartbeat(channel_names=[]) == 0


# --- the beat over real sockets ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_one_beat_refreshes_every_row_with_the_same_queries_when_3_or_12_sockets_are_open(
    settings, monkeypatch
):
    settings.PRESENCE_HEARTBEAT_S = NEVER
    counts = counting_beats(monkeypatch)
    registry = consumers.presence()
    per_beat = []
    sockets: list[Socket] = []
    for customers, agents in ((2, 1), (6, 3)):  # 3 sockets, then 12
        sockets += await open_sockets(customers, agents)
        assert len(registry.sockets) == len(sockets)
        stale_by = await adb(_backdate_all)(timedelta(hours=1))
        await registry.beat()
        rows = await adb(lambda: list(Connection.objects.values_list("last_seen_at", flat=True)))()
        assert len(rows) == len(sockets)
        assert all(seen > timezone.now() - stale_by / 2 for seen in rows)
        per_beat.append(counts[-1])
    assert per_beat[0] == per_beat[1] == 2  # one UPDATE, one read of the waiting spots
    assert registry.task is not None  # ONE task for the process, whatever the number of sockets
    for socket in sockets:
        await socket.close()
    assert len(registry.sockets) == 0


@pytest.mark.django_db(transaction=True)
async def test_socket_is_not_beaten_and_is_swept_when_it_died_without_a_goodbye(settings):
    settings.PRESENCE_HEARTBEAT_S = NEVER
    registry = consumers.presence()
    survivor_session, dead_session = await adb(_waiting)(), await adb(_waiting)()
    survivor = await open_customer(survivor_session)
    dead = await open_customer(dead_session)
    await kill(dead)
    assert len(registry.sockets) == 1  # unregistered although disconnect never ran
    # Both rows last seen long ago (more than three heartbeats); one beat refreshes the live one.
    stale_by = await adb(_backdate_all)(timedelta(seconds=4 * NEVER))
    await registry.beat()
    dead_row = await adb(Connection.objects.get)(session_id=dead_session.id)
    live_row = await adb(Connection.objects.get)(session_id=survivor_session.id)
    assert dead_row.last_seen_at < timezone.now() - stale_by / 2
    assert live_row.last_seen_at > timezone.now() - stale_by / 2
    # The tick's sweep treats it as closed from its last heartbeat, as for a dead process.
    assert await adb(matching_services.sweep_stale_connections)() == 1
    assert not await adb(Connection.objects.filter(session_id=dead_session.id).exists)()
    assert await adb(Connection.objects.filter(session_id=survivor_session.id).exists)()
    left = await adb(ChatSession.objects.get)(pk=dead_session.id)
    assert left.customer_left_at == dead_row.last_seen_at
    await survivor.close()


@pytest.mark.django_db(transaction=True)
async def test_waiting_customer_gets_its_corrected_position_when_the_queue_changed_silently(
    settings,
):
    settings.PRESENCE_HEARTBEAT_S = 0.3  # the process's own beat, not a hand-driven one
    first, second, third = [await adb(_waiting)() for _ in range(3)]
    socket = await open_customer(third)
    assert socket.seen[-1]["session"]["position"] == 3
    # Two sessions ahead leave the queue behind the socket's back: no queue.changed is sent.
    await adb(ChatSession.objects.filter(pk__in=[first.pk, second.pk]).update)(
        status=SessionStatus.ENDED
    )
    healed = await socket.expect("session.state", timeout=10)
    assert healed["session"]["position"] == 1
    assert healed["session"]["status"] == "waiting"
    await socket.close()


@pytest.mark.django_db(transaction=True)
async def test_beat_goes_on_when_the_database_fails_once(settings, monkeypatch, caplog):
    settings.PRESENCE_HEARTBEAT_S = 0.2
    real = consumers._presence_beat
    calls = []

    def failing_once(**kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("the database is away")
        return real(**kwargs)

    monkeypatch.setattr(consumers, "_presence_beat", failing_once)
    session = await adb(_waiting)()
    socket = await open_customer(session)
    stale_by = await adb(_backdate_all)(timedelta(hours=1))

    def refreshed() -> bool:
        row = Connection.objects.get(session_id=session.id)
        return row.last_seen_at > timezone.now() - stale_by / 2

    with caplog.at_level(logging.WARNING, logger="chat.consumers"):
        for _ in range(100):
            if len(calls) >= 2 and await adb(refreshed)():
                break
            await asyncio.sleep(0.1)
    assert len(calls) >= 2
    assert await adb(refreshed)()
    assert any("presence beat" in r.getMessage() for r in caplog.records)
    await socket.close()


@pytest.mark.django_db(transaction=True)
async def test_beat_task_ends_when_the_last_socket_closes_and_restarts_with_the_next(settings):
    settings.PRESENCE_HEARTBEAT_S = 0.1
    registry = consumers.presence()
    socket = await open_customer(await adb(_waiting)())
    first_task = registry.task
    assert first_task is not None
    await socket.close()
    await asyncio.wait_for(asyncio.shield(first_task), timeout=10)
    assert registry.task is None
    socket = await open_customer(await adb(_waiting)())
    assert registry.task is not None
    assert registry.task is not first_task
    await socket.close()
