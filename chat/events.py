"""What happened, told to the sockets: event names, payload shapes, and publishing after commit.

Domain services call :func:`publish_on_commit`; delivery (the channel layer) is the only thing this
module knows about. Consumers subscribe to the groups named here and relay the ``event`` dict to
their client, which is already the wire frame of docs/protocol.md (with ``session_id`` added for
the agent console). Nothing is sent for a transaction that rolls back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Final
from uuid import UUID

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
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


def publish_on_commit(group: str, event: Event) -> None:
    """Send ``event`` to ``group`` once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: send_now(group, event))


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
            send_now(group, event)

    transaction.on_commit(deliver)
