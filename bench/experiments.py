"""Proposals of docs/performance.md, measured before anyone adopts them.

``python -m bench.run --asgi-app bench.experiments:async_publish`` serves the project's own ASGI
application with ONE change: ``chat.events.send_now``, called by the services after commit in a
database thread, hands the ``group_send`` to the event loop and returns, instead of blocking
that thread until Redis has answered (``async_to_sync``). Sends to one group stay in order (each
waits for the previous one to the same group). Nothing else differs; this module is not used by
the project, only by the benchmark, and docs/performance.md shows the change as a patch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from asgiref.sync import SyncToAsync

from dayone_chat.asgi import application as project_application

logger = logging.getLogger(__name__)


def install_async_publish() -> None:
    from channels.layers import get_channel_layer

    from chat import events

    blocking_send = events.send_now
    tails: dict[str, asyncio.Task[None]] = {}

    def send_now(group: str, event: dict[str, Any]) -> None:
        loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
        layer = get_channel_layer()
        if loop is None or not loop.is_running() or layer is None:
            blocking_send(group, event)
            return
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

            def forget(done: asyncio.Task[None]) -> None:
                if tails.get(group) is done:
                    del tails[group]

            task.add_done_callback(forget)

        loop.call_soon_threadsafe(schedule)

    events.send_now = send_now


install_async_publish()
async_publish = project_application
