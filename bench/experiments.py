"""Proposals of docs/performance.md, measured before anyone adopts them.

Each name below is the project's own ASGI application with ONE change patched in at import
(``python -m bench.run --asgi-app bench.experiments:<name>``, or a ``system@<variant>`` target of
bench.run). Nothing here is used by the project itself; docs/performance.md shows each change as
the patch it would be.

* ``async_publish``: ``chat.events`` publishes after commit from the database thread and WAITS
  there until Redis has answered the ``group_send`` (two round trips per group). Here the send is
  handed to the publisher's event loop and the thread returns at once; sends to one group stay
  in order (each waits for the previous one to the same group).
* ``one_group``: ``message_post`` publishes every message to the session group AND the agent
  group of the session's agent, and the console (which joined the session group when the offer
  came) drops the second copy. Here a message goes to the session group only: one group_send
  and one delivery less per message.
* ``fast``: both.
* ``queue_local``: the queue group carries one channel per process, not one per waiting
  socket (see :func:`install_queue_local`); ``fast_queue_local``: all three.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from dayone_chat.asgi import application as project_application

logger = logging.getLogger(__name__)


def install_async_publish() -> None:
    from channels.layers import get_channel_layer

    from chat import events

    publisher = getattr(events, "_Publisher", None)
    if publisher is None:  # an older chat.events: nothing of this shape to patch
        return
    tails: dict[str, asyncio.Future[None]] = {}

    def send(cls: type, group: str, event: dict[str, Any]) -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        loop = cls.loop()
        message = {"type": events.LAYER_TYPE, "event": event}

        def schedule() -> None:
            previous = tails.get(group)

            async def deliver() -> None:
                if previous is not None:
                    with contextlib.suppress(Exception):
                        await previous
                try:
                    await layer.group_send(group, message)
                except Exception:
                    logger.exception("could not publish %s to %s", event.get("type"), group)

            task = loop.create_task(deliver())
            tails[group] = task

            def forget(done: asyncio.Future[None]) -> None:
                if tails.get(group) is done:
                    del tails[group]

            task.add_done_callback(forget)

        loop.call_soon_threadsafe(schedule)

    publisher.send = classmethod(send)


def install_one_group() -> None:
    from chat import events, services

    publish = services.publish_on_commit

    def publish_on_commit(group: str, event: dict[str, Any]) -> None:
        if event.get("type") == events.MESSAGE and group.startswith("agent."):
            return
        publish(group, event)

    services.publish_on_commit = publish_on_commit


def install_queue_local() -> None:
    """The queue group holds ONE channel per daphne process instead of one per waiting socket.

    Every ``queue.changed`` (one per customer joining or leaving the queue) is today a
    ``group_send`` to every waiting customer's channel: with 500 waiting, 500 serialisations and
    500 Redis writes per change, on the one publisher thread, while the database threads wait
    for it holding their connections. Here a waiting socket registers with its own process, one
    task per process receives the change once and hands it to each local socket's usual handler.
    """
    from channels.layers import get_channel_layer

    from chat import consumers, events

    local: set[Any] = set()
    state: dict[str, asyncio.Task[None]] = {}

    async def fan_out() -> None:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(events.QUEUE_GROUP, channel)
        while True:
            message = await layer.receive(channel)
            event = message.get("event") or {}
            for consumer in list(local):
                try:
                    await consumer.relay(event)
                except Exception:
                    logger.exception("queue change to %s failed", consumer.channel_name)

    join, leave = consumers.ChatSocket.join, consumers.ChatSocket.leave

    async def local_join(self: Any, group: str) -> None:
        if group != events.QUEUE_GROUP:
            await join(self, group)
            return
        task = state.get("task")
        if task is None or task.done():
            state["task"] = asyncio.get_running_loop().create_task(fan_out())
        local.add(self)
        self.joined.add(group)

    async def local_leave(self: Any, group: str) -> None:
        if group != events.QUEUE_GROUP:
            await leave(self, group)
            return
        local.discard(self)
        self.joined.discard(group)

    consumers.ChatSocket.join = local_join
    consumers.ChatSocket.leave = local_leave


def _only(*installers: Any) -> Any:
    for install in installers:
        install()
    return project_application


# Each module-level name is resolved by daphne in its own process: only one applies per run.
def __getattr__(name: str) -> Any:
    if name == "async_publish":
        return _only(install_async_publish)
    if name == "one_group":
        return _only(install_one_group)
    if name == "fast":
        return _only(install_async_publish, install_one_group)
    if name == "queue_local":
        return _only(install_queue_local)
    if name == "fast_queue_local":
        return _only(install_async_publish, install_one_group, install_queue_local)
    raise AttributeError(name)
