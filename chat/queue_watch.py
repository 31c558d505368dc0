"""The waiting queue's moves, received ONCE per process and handed to its waiting sockets.

Every customer who joins or leaves the queue is one ``queue.changed`` event to the queue group
(docs/protocol.md, "Queue position"). If each waiting socket were a member of that group, each
event would wake every waiting consumer through the channel layer (a buffer put, a task, an
``asyncio.wait`` and a dispatch each): with 500 waiting and a few changes a second that was
thousands of wake-ups a second and the largest share of daphne's event loop in the benchmark.

Here each event loop (one per daphne process) subscribes to the queue group with ONE channel of
its own, and calls each registered socket's O(1) position update directly. A socket is
registered before it reads its position (``add`` returns once the subscription exists), so no
change committed after that read is missed; the presence beat re-reads every waiting position
now and then anyway (``PRESENCE_HEARTBEAT_S``). The subscription ends with the last waiting
socket of the process and starts again with the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any, Protocol

from channels.layers import get_channel_layer

from chat import events
from chat.loops import PerLoop

logger = logging.getLogger(__name__)

# How long a broken subscription (Redis away) waits before it subscribes again.
RETRY_S = 1.0


class WaitingSocket(Protocol):
    channel_name: str

    async def on_queue_changed(self, event: dict[str, Any]) -> None: ...


class QueueWatch:
    def __init__(self) -> None:
        self.sockets: weakref.WeakSet[WaitingSocket] = weakref.WeakSet()
        self.task: asyncio.Task[None] | None = None
        self.subscribed: asyncio.Future[None] | None = None

    async def add(self, socket: WaitingSocket) -> None:
        """Register ``socket``; returns once the process receives the queue group's events
        (raises what subscribing raised, e.g. Redis being away)."""
        self.sockets.add(socket)
        if self.task is None or self.task.done():
            loop = asyncio.get_running_loop()
            self.subscribed = loop.create_future()
            self.task = loop.create_task(self._run(self.subscribed), name="queue-watch")
        assert self.subscribed is not None
        try:
            await asyncio.shield(self.subscribed)
        except BaseException:
            self.discard(socket)
            raise

    def discard(self, socket: WaitingSocket) -> None:
        self.sockets.discard(socket)
        if not self.sockets and self.task is not None:
            # The next ``add`` subscribes afresh; this task unsubscribes on its way out.
            self.task.cancel()
            self.task = self.subscribed = None

    async def _run(self, subscribed: asyncio.Future[None]) -> None:
        layer = get_channel_layer()
        assert layer is not None, "the project always configures a channel layer"
        channel = await layer.new_channel()
        try:
            while True:
                try:
                    await layer.group_add(events.QUEUE_GROUP, channel)
                    if not subscribed.done():
                        subscribed.set_result(None)
                    while True:
                        message = await layer.receive(channel)
                        await self.hand_out(message.get("event") or {})
                        if not self.sockets and self.task is asyncio.current_task():
                            # Its sockets were collected without a goodbye: unsubscribe.
                            self.task = self.subscribed = None
                            return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if not subscribed.done():
                        subscribed.set_exception(exc)
                        return
                    # Redis went away: the sockets' own receives fail too and they close (4503);
                    # the ones that stay get healed positions from the presence beat.
                    logger.warning("queue watch lost its subscription: %s", type(exc).__name__)
                    await asyncio.sleep(RETRY_S)
        finally:
            with contextlib.suppress(Exception):
                await layer.group_discard(events.QUEUE_GROUP, channel)

    async def hand_out(self, event: dict[str, Any]) -> None:
        for socket in list(self.sockets):
            try:
                await socket.on_queue_changed(event)
            except Exception:
                logger.exception("queue change not applied to %s", socket.channel_name)


# The queue watch of the running event loop.
queue_watch = PerLoop(QueueWatch)
