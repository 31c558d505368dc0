"""What happened, told to the sockets: event names, payload shapes, and publishing after commit.

Domain services call :func:`publish_on_commit`; delivery (the channel layer) is the only thing this
module knows about. Consumers subscribe to the groups named here and relay the ``event`` dict to
their client, which is already the wire frame of docs/protocol.md (with ``session_id`` added for
the agent console). Nothing is sent for a transaction that rolls back.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final
from uuid import UUID

from asgiref.sync import async_to_sync
from channels.layers import BaseChannelLayer, get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

# Wire event types (server → client), as in PROTOCOL.md.
SESSION_STATE: Final = "session.state"
MESSAGE: Final = "message"
MESSAGE_ACK: Final = "message.ack"
TYPING: Final = "typing"
READ: Final = "read"
END_REQUESTED: Final = "end.requested"
END_DECLINED: Final = "end.declined"
SESSION_ENDED: Final = "session.ended"
AGENT_STATE: Final = "agent.state"
OFFER: Final = "offer"
OFFER_EXPIRED: Final = "offer.expired"
ERROR: Final = "error"
# Extensions: the waiting queue moved (consumers adjust their customer's position themselves).
QUEUE_CHANGED: Final = "queue.changed"

# The layer message type consumers handle (Channels maps "chat.event" to ``chat_event``).
LAYER_TYPE: Final = "chat.event"

Event = dict[str, Any]

QUEUE_GROUP: Final = "queue"


def session_group(session_id: UUID | str) -> str:
    """Both parties' sockets of one session."""
    return f"session.{UUID(str(session_id)).hex}"


def agent_group(agent_id: int) -> str:
    """Every console socket of one agent: offers and agent state."""
    return f"agent.{agent_id}"


def send_now(group: str, event: Event) -> None:
    """Deliver to a group at once (for events that change no stored state, e.g. typing)."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, {"type": LAYER_TYPE, "event": event})
    except Exception:
        # The layer being down must not undo a committed transaction; clients resync on
        # reconnect (after_seq), so a lost notification is recovered from the database.
        logger.exception("could not publish %s to %s", event.get("type"), group)


async def asend_now(group: str, event: Event) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(group, {"type": LAYER_TYPE, "event": event})
    except Exception:
        logger.exception("could not publish %s to %s", event.get("type"), group)


# How long one group_send may take before it is given up (logged) and the next one goes.
SEND_TIMEOUT_S: Final = 5.0

# One hand-off: the layer (as the publishing thread found it), the group, the event.
_Item = tuple[BaseChannelLayer, str, Event]


class _Publisher:
    """One long-lived event loop per process for sync publishers (services after commit).

    ``async_to_sync`` per event builds a fresh loop and a fresh Redis connection each time
    (3-12 ms an event on a busy machine); a loop kept in a daemon thread keeps the layer's
    connection pool (0.3-0.4 ms).

    :meth:`send` does not wait for Redis: it puts the event on ONE first-in first-out queue of
    the process and returns, so the thread that committed (and its pooled database connection)
    is free at once. One task on the publisher's loop drains the queue, one ``group_send`` after
    the other, so the process's events reach the layer in the order they were published, also
    across groups (a console is in its agent group and its session groups, and must not see a
    session's ``session.ended`` before the ``session.state`` published ahead of it).
    :func:`flush` waits until everything published so far has been sent; an exiting process
    flushes with a bounded wait (atexit), so a command or a test does not drop its last events.
    """

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None
    _queue: asyncio.Queue[_Item] | None = None
    _pid: int | None = None
    # Events handed over and events done with (sent or failed), under ``_progress``.
    _progress = threading.Condition()
    _handed = 0
    _done = 0

    @classmethod
    def _start(cls) -> tuple[asyncio.AbstractEventLoop, asyncio.Queue[_Item]]:
        """The running loop and its queue. Caller: holds ``_lock``."""
        # A forked child (Celery prefork) inherits the objects but not the thread.
        if cls._loop is None or cls._queue is None or cls._pid != os.getpid():
            loop = asyncio.new_event_loop()
            queue: asyncio.Queue[_Item] = asyncio.Queue()
            threading.Thread(target=loop.run_forever, name="events", daemon=True).start()
            asyncio.run_coroutine_threadsafe(cls._drain(queue), loop)
            with cls._progress:
                cls._handed = cls._done = 0
            cls._loop, cls._queue, cls._pid = loop, queue, os.getpid()
        return cls._loop, cls._queue

    @classmethod
    def loop(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            return cls._start()[0]

    @classmethod
    async def _drain(cls, queue: asyncio.Queue[_Item]) -> None:
        while True:
            layer, group, event = await queue.get()
            try:
                # Bounded, as the blocking send was: a Redis that does not answer must not hold
                # every later event of the process behind this one.
                await asyncio.wait_for(
                    layer.group_send(group, {"type": LAYER_TYPE, "event": event}), SEND_TIMEOUT_S
                )
            except Exception:
                # As in send_now: the layer being down must not undo a committed transaction;
                # clients resync from the database. The next events still go out.
                logger.exception("could not publish %s to %s", event.get("type"), group)
            finally:
                with cls._progress:
                    cls._done += 1
                    cls._progress.notify_all()

    @classmethod
    def send(cls, group: str, event: Event) -> None:
        """Hand ``event`` over for ``group`` and return at once; never raises."""
        try:
            layer = get_channel_layer()
            if layer is None:
                return
            with cls._lock:
                loop, queue = cls._start()
                with cls._progress:
                    cls._handed += 1
                # Under the lock: two threads' hand-offs enter the queue in the order they
                # were counted, which is the order flush() waits for.
                loop.call_soon_threadsafe(queue.put_nowait, (layer, group, event))
        except Exception:
            logger.exception("could not publish %s to %s", event.get("type"), group)

    @classmethod
    def flush(cls, timeout: float) -> bool:
        """Wait until every event handed over so far is sent (or failed); False on timeout."""
        with cls._lock:
            if cls._pid != os.getpid():
                return True  # nothing was published by this process
        with cls._progress:
            target = cls._handed
            return cls._progress.wait_for(lambda: cls._done >= target, timeout=timeout)


# How long an exiting process waits for its queued events.
EXIT_FLUSH_S: Final = 5.0


def flush(timeout: float = EXIT_FLUSH_S) -> bool:
    """Wait up to ``timeout`` seconds until this process's published events reached the layer.

    For code that needs its events out before it goes on or exits: tests that listen right after
    a service call, management commands, short-lived task processes. True when all were sent.
    """
    return _Publisher.flush(timeout)


def _flush_at_exit() -> None:
    if not flush(EXIT_FLUSH_S):
        logger.warning("exiting with events not yet published (waited %.0f s)", EXIT_FLUSH_S)


atexit.register(_flush_at_exit)


def send_after_commit(group: str, event: Event) -> None:
    """Deliver from sync code that runs after a commit (on_commit callbacks, Celery tasks)."""
    _Publisher.send(group, event)


def publish_on_commit(group: str, event: Event) -> None:
    """Send ``event`` to ``group`` once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: _Publisher.send(group, event), robust=True)


def publish_built_on_commit(groups: Sequence[str], build: Callable[[], Event | None]) -> None:
    """Build the event after commit (outside the transaction and its locks), send it to groups.

    For events whose payload costs queries (the session object: queue position, last message):
    building them after commit keeps lock hold times short. ``build`` returning None sends nothing.
    """

    def deliver() -> None:
        try:
            event = build()
        except Exception:
            # A failing payload must not break the caller after its commit; clients resync.
            logger.exception("could not build an event for %s", ", ".join(groups))
            return
        if event is None:
            return
        for group in groups:
            _Publisher.send(group, event)

    transaction.on_commit(deliver, robust=True)


# PROTOCOL.md v1 lists the object's own fields as the fields of these frames; the object also
# rides nested under this key (an additive extension that our own web clients read).
_NESTED_OBJECT: Final[dict[str, str]] = {MESSAGE: "message", SESSION_STATE: "session"}


def wire_frame(frame: Event) -> Event:
    """``frame`` as it goes on the wire: a ``message`` frame carries the message object's fields
    and a ``session.state`` frame the session object's, at the top level (v1), besides the
    nested copy. Internal code keeps working on the nested object only."""
    key = _NESTED_OBJECT.get(frame.get("type", ""))
    nested = frame.get(key) if key else None
    if isinstance(nested, dict):
        return {**nested, **frame}
    return frame
