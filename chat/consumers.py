"""The customer socket ``/ws/sessions/{id}/`` and what every socket of ours shares.

Consumers are thin: parse a frame, authorise, call ONE service in a worker thread, and relay the
events the services publish (chat.events) to the client. Why they look the way they do:

* Async consumers. A frame that needs no database (typing, read receipts, relaying an event)
  is handled on the event loop without a thread hop; only frames that call a service pay for
  one. Channels' default ``dispatch`` hops to a thread before EVERY message to close stale
  database connections; :meth:`ChatSocket.dispatch` skips that, because the thread that runs a
  service already does it (``database_sync_to_async``).
* Database calls run with ``thread_sensitive=False``: Channels' default funnels every call of a
  process through ONE thread, so a thousand sockets would queue behind each other.
* No gap, no duplicate: a socket joins its groups BEFORE it reads its snapshot from the
  database, remembers the highest ``seq`` it has sent, drops live messages at or below it, and
  on a gap (a live ``seq`` above highest+1: events from two processes can overtake each other)
  reads the missing ones from the database. See :class:`SeqStream`.
* Presence in bulk: sockets keep no heartbeat task of their own; one :class:`Presence` task per
  process refreshes all their rows (and heals the waiting customers' positions) per beat.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser

from chat import events, selectors, services
from chat.errors import UNAVAILABLE, UNAVAILABLE_CODE, UNAVAILABLE_DETAIL, DomainError
from chat.loops import PerLoop
from chat.models import ChatSession, Role, SessionStatus
from chat.payloads import message_payload, session_payload
from chat.queue_watch import queue_watch
from chat.selectors import QueueSpot
from chat.ws_auth import CLOSE_BAD_REQUEST, CLOSE_NOT_FOUND, CLOSE_TRY_AGAIN

logger = logging.getLogger(__name__)

Frame = dict[str, Any]
T = TypeVar("T")

# Replays read the database in pages of this many messages.
REPLAY_PAGE = 500
QUEUE_STATUSES = (SessionStatus.WAITING, SessionStatus.OFFERED)


def db(func: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """Run ``func`` in the thread pool (see the module docstring for thread_sensitive)."""
    return database_sync_to_async(func, thread_sensitive=False)  # type: ignore[return-value]


class FrameError(Exception):
    """A refused client frame: answered with an ``error`` frame, the socket stays open."""

    def __init__(self, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.extra = extra


# --- field parsing (shared by both sockets) ------------------------------------------------


def field_uuid(frame: Frame, name: str) -> UUID:
    value = frame.get(name)
    if value is None:
        raise FrameError("missing_field", f"The field {name!r} is required.", field=name)
    if not isinstance(value, str) or len(value) > 64:
        raise FrameError("invalid_field", f"The field {name!r} must be a UUID.", field=name)
    try:
        return UUID(value)
    except ValueError:
        raise FrameError(
            "invalid_field", f"The field {name!r} must be a UUID.", field=name
        ) from None


def field_seq(frame: Frame, name: str) -> int:
    value = frame.get(name)
    if value is None:
        raise FrameError("missing_field", f"The field {name!r} is required.", field=name)
    # bool is an int in Python; ``true`` is not a sequence number.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**31:
        raise FrameError(
            "invalid_field", f"The field {name!r} must be a whole number >= 0.", field=name
        )
    return value


def field_body(frame: Frame) -> str:
    value = frame.get("body")
    if value is None:
        raise FrameError("missing_field", "The field 'body' is required.", field="body")
    if not isinstance(value, str):
        raise FrameError("invalid_field", "The field 'body' must be text.", field="body")
    # Checked here too (the service checks again) so an oversized frame costs no database trip.
    if len(value) > settings.MAX_MESSAGE_CHARS:
        raise FrameError(
            "body_too_long",
            f"A message has at most {settings.MAX_MESSAGE_CHARS} characters.",
            field="body",
        )
    return value


# --- the snapshot and replay reads (run in the thread pool) --------------------------------


def messages_since(*, session_id: UUID, after_seq: int) -> list[Frame]:
    """Every message after ``after_seq`` as ``message`` frames, in seq order."""
    frames: list[Frame] = []
    cursor = after_seq
    while True:
        page = selectors.messages_after(session_id=session_id, after_seq=cursor, limit=REPLAY_PAGE)
        frames.extend(message_frame(session_id, message_payload(m)) for m in page)
        if len(page) < REPLAY_PAGE:
            return frames
        cursor = page[-1].seq


def message_frame(session_id: UUID | str, message: Frame) -> Frame:
    return {"type": events.MESSAGE, "session_id": str(session_id), "message": message}


def state_frame(session_id: UUID | str, payload: Frame) -> Frame:
    return {"type": events.SESSION_STATE, "session_id": str(session_id), "session": payload}


# --- per-session message stream -------------------------------------------------------------


@dataclass
class SeqStream:
    """What one socket has sent of one session's messages: ``last_sent`` is the highest seq.

    ``last_sent`` None means "no baseline yet": the first live message sets it.
    """

    session_id: UUID
    last_sent: int | None = None

    def accept_live(self, seq: int) -> str:
        """ "send", "drop" (already sent) or "gap" (messages before this one are missing)."""
        if self.last_sent is None or seq == self.last_sent + 1:
            return "send"
        if seq <= self.last_sent:
            return "drop"
        return "gap"

    def sent(self, seq: int) -> None:
        if self.last_sent is None or seq > self.last_sent:
            self.last_sent = seq


@dataclass
class RateLimiter:
    """At most ``count`` frames in any ``window`` seconds: a sliding window, O(1) per frame."""

    count: int
    window: float
    stamps: deque[float] = field(default_factory=deque)

    def allow(self, now: float) -> bool:
        if self.count <= 0:
            return True
        if len(self.stamps) >= self.count:
            if now - self.stamps[0] < self.window:
                return False
            self.stamps.popleft()
        self.stamps.append(now)
        return True


class ChatSocket(AsyncWebsocketConsumer):
    """Frame hygiene (size, rate, JSON, type), error frames, heartbeats and event relay."""

    role: str = ""
    # type -> handler; a subclass lists the frames it understands.
    frame_handlers: dict[str, str] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limiter = RateLimiter(
            count=settings.WS_RATE_LIMIT_COUNT, window=float(settings.WS_RATE_LIMIT_WINDOW_S)
        )
        self.joined: set[str] = set()
        self.registered = False
        self._presence: Presence | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def user(self) -> AbstractBaseUser:
        return self.scope["user"]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except UNAVAILABLE as exc:
            # Redis went away under the socket (its channel-layer receive loop failed): close
            # with "try again later" rather than crash with 1011 and a traceback. The client
            # reconnects and resyncs with after_seq; presence is swept from stale heartbeats.
            logger.warning("socket closed, a backing server is away: %s", type(exc).__name__)
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN})
        finally:
            # However the consumer ends (disconnect, a crash, daphne cancelling it without a
            # websocket.disconnect), the presence beat stops refreshing its row, so a socket
            # that is gone goes stale and is swept.
            self.stop_presence()
            if events.QUEUE_GROUP in self.joined:
                queue_watch().discard(self)

    # Channels' dispatch hops to a thread to close stale DB connections before every message;
    # our database work happens in threads that do that themselves (see the module docstring).
    async def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        try:
            await super().websocket_connect(message)
        except UNAVAILABLE as exc:
            # A backing server is away while the socket opens: "try again later", not a crash.
            logger.warning("socket refused: %s", type(exc).__name__)
            await self.close(code=CLOSE_TRY_AGAIN)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        try:
            await self.disconnect(message.get("code", 1000))
        except Exception:
            # Presence is also swept from stale heartbeats: a failed goodbye is not fatal.
            logger.exception("disconnect of %s failed", self.channel_name)
        for group in list(self.joined):
            await self.leave(group)
        raise StopConsumer()

    async def join(self, group: str) -> None:
        if group not in self.joined:
            if group == events.QUEUE_GROUP:
                # One subscription per process hands queue moves to its waiting sockets.
                await queue_watch().add(self)
            else:
                await self.channel_layer.group_add(group, self.channel_name)
            self.joined.add(group)

    async def leave(self, group: str) -> None:
        if group in self.joined:
            self.joined.discard(group)
            if group == events.QUEUE_GROUP:
                queue_watch().discard(self)
            else:
                await self.channel_layer.group_discard(group, self.channel_name)

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def send_frame(self, frame: Frame) -> None:
        wire = events.wire_frame(frame)
        await self.send(text_data=json.dumps(wire, separators=(",", ":"), ensure_ascii=False))

    async def send_error(self, code: str, detail: str, **extra: Any) -> None:
        await self.send_frame({"type": events.ERROR, "code": code, "detail": detail, **extra})

    # --- client frames ------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self.limiter.allow(time.monotonic()):
            await self.send_error(
                "rate_limited",
                f"At most {settings.WS_RATE_LIMIT_COUNT} frames per "
                f"{settings.WS_RATE_LIMIT_WINDOW_S} s; this one was dropped.",
            )
            return
        if text_data is None:
            await self.send_error("binary_frame", "Frames are JSON text, not binary.")
            return
        limit = settings.WS_MAX_FRAME_BYTES
        # Encoding is only needed when the text could be over the limit (UTF-8: <= 4 bytes/char).
        if len(text_data) * 4 > limit and len(text_data.encode("utf-8")) > limit:
            await self.send_error("frame_too_large", f"A frame has at most {limit} bytes.")
            return
        try:
            frame = json.loads(text_data)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than Python recurses
            await self.send_error("invalid_json", "The frame is not valid JSON.")
            return
        if not isinstance(frame, dict):
            await self.send_error("invalid_json", "A frame is a JSON object with a 'type'.")
            return
        kind = frame.get("type")
        handler_name = self.frame_handlers.get(kind) if isinstance(kind, str) else None
        if handler_name is None:
            await self.send_error("unknown_type", f"Unknown frame type {kind!r}.")
            return
        try:
            await getattr(self, handler_name)(frame)
        except FrameError as exc:
            await self.send_error(exc.code, exc.detail, **self.error_context(frame), **exc.extra)
        except DomainError as exc:
            await self.send_error(
                exc.code, exc.detail, **self.error_context(frame), **_jsonable(exc.extra)
            )
        except UNAVAILABLE as exc:
            # The database or Redis is away: say so and stay open; the client retries the
            # same client_msg_id, which can never store the message twice.
            logger.warning("frame %s refused: %s", kind, type(exc).__name__)
            await self.send_error(UNAVAILABLE_CODE, UNAVAILABLE_DETAIL, **self.error_context(frame))

    def error_context(self, frame: Frame) -> Frame:
        """Fields of the refused frame repeated in the error (client_msg_id, session_id)."""
        context: Frame = {}
        for name in ("client_msg_id", "session_id"):
            value = frame.get(name)
            if isinstance(value, str) and len(value) <= 64:
                context[name] = value
        return context

    # --- presence -----------------------------------------------------------------------

    def start_heartbeat(self) -> None:
        """Join this process's presence beat (see :class:`Presence`); called once registered."""
        if self._presence is None:
            self._presence = presence()
            self._presence.register(self)

    def stop_presence(self) -> None:
        if self._presence is not None:
            self._presence.unregister(self)
            self._presence = None

    def stop_background(self) -> None:
        self.stop_presence()
        for task in list(self._tasks):
            task.cancel()

    def queue_session_id(self) -> UUID | None:
        """The session whose queue spot the presence beat should re-read for this socket."""
        return None

    async def heal_queue_spot(self, spot: QueueSpot) -> None:
        """The presence beat's fresh read of :meth:`queue_session_id`'s spot."""

    # --- events from the groups ------------------------------------------------------------

    async def chat_event(self, message: dict[str, Any]) -> None:
        # Events queued for a socket that was refused at connect (it had joined its groups
        # before the check) are dropped; a registered socket relays them.
        if self.registered:
            await self.relay(message["event"])

    async def relay_message(self, stream: SeqStream, event: Frame) -> None:
        seq = event["message"]["seq"]
        verdict = stream.accept_live(seq)
        if verdict == "send":
            await self.send_frame(event)
            stream.sent(seq)
        elif verdict == "gap":
            await self.fill_gap(stream)

    async def fill_gap(self, stream: SeqStream) -> None:
        """Send, from the database, every message after the highest one sent."""
        after = stream.last_sent or 0
        for frame in await db(messages_since)(session_id=stream.session_id, after_seq=after):
            seq = frame["message"]["seq"]
            if stream.last_sent is None or seq > stream.last_sent:
                await self.send_frame(frame)
                stream.sent(seq)

    async def catch_up(self, stream: SeqStream, state: Frame) -> None:
        """A session.state names the session's ``last_seq``: if this socket has sent less, a
        message event was lost or is late (or was dropped while the session looked like it
        was not ours), so read the rest from the database."""
        last_seq = state.get("last_seq")
        if (
            stream.last_sent is not None
            and isinstance(last_seq, int)
            and last_seq > stream.last_sent
        ):
            await self.fill_gap(stream)

    async def relay(self, event: Frame) -> None:
        raise NotImplementedError


def _jsonable(extra: dict[str, Any]) -> Frame:
    return {k: (str(v) if isinstance(v, UUID) else v) for k, v in extra.items()}


# --- presence: one beat per process for all its sockets --------------------------------------


def _presence_beat(*, channel_names: list[str], session_ids: list[UUID]) -> dict[UUID, QueueSpot]:
    """One thread hop, two statements, however many sockets: refresh every row, read every spot."""
    services.connections_heartbeat(channel_names=channel_names)
    return selectors.queue_spots(session_ids=session_ids)


class Presence:
    """The registered sockets of one event loop (one daphne process) and the ONE task that
    keeps their presence fresh.

    Every ``PRESENCE_HEARTBEAT_S`` it refreshes ``last_seen_at`` of all their Connection rows
    in one UPDATE and reads the queue spot of every waiting customer's session in one query,
    then hands each waiting socket its fresh spot: a per-socket task with a round trip each was
    130 database trips a second for 2,000 sockets (docs/performance.md, P6).

    A socket registers once it is accepted and registered in the database, and unregisters when
    its consumer ends, whichever way (ChatSocket.__call__). The set is weak as well, so a socket
    is never kept alive by it. The task ends when no socket is left and starts again with the
    next one: nothing runs for an idle process, and a closed event loop leaves nothing behind.

    There is no jitter: the sockets of a process share one beat, so a reconnect storm no longer
    makes their heartbeats come together (the per-socket tasks spread their first beat for that).
    A new socket's row is fresh from its connect, and the next beat comes within one interval.
    """

    def __init__(self) -> None:
        self.sockets: weakref.WeakSet[ChatSocket] = weakref.WeakSet()
        self.task: asyncio.Task[None] | None = None

    def register(self, socket: ChatSocket) -> None:
        self.sockets.add(socket)
        if self.task is None and float(settings.PRESENCE_HEARTBEAT_S) > 0:
            self.task = asyncio.get_running_loop().create_task(self._run())

    def unregister(self, socket: ChatSocket) -> None:
        self.sockets.discard(socket)

    async def _run(self) -> None:
        try:
            while True:
                interval = float(settings.PRESENCE_HEARTBEAT_S)
                if interval <= 0:
                    return
                await asyncio.sleep(interval)
                if not self.sockets:
                    return  # no await between this check and ``task = None``: no lost start
                try:
                    await self.beat()
                except Exception:
                    # A database outage must not end presence: the next beat tries again (three
                    # missed beats and the sweep counts these sockets as closed, as it should).
                    logger.exception("presence beat of %d sockets failed", len(self.sockets))
        finally:
            self.task = None

    async def beat(self) -> None:
        sockets = list(self.sockets)
        if not sockets:
            return
        waiting = {s: sid for s in sockets if (sid := s.queue_session_id()) is not None}
        try:
            spots = await db(_presence_beat)(
                channel_names=[s.channel_name for s in sockets],
                session_ids=list(set(waiting.values())),
            )
        except UNAVAILABLE as exc:
            logger.warning(
                "presence beat of %d sockets failed: %s", len(sockets), type(exc).__name__
            )
            return
        for socket, session_id in waiting.items():
            spot = spots.get(session_id)
            if spot is None or socket not in self.sockets:  # gone while the beat read
                continue
            try:
                await socket.heal_queue_spot(spot)
            except Exception:
                logger.exception("queue position of %s not healed", socket.channel_name)


# The presence registry of the running event loop.
presence = PerLoop(Presence)


# --- the customer socket ---------------------------------------------------------------------


@dataclass
class CustomerSnapshot:
    session: ChatSession
    state: Frame
    messages: list[Frame]


def _open_customer_socket(
    *, session_id: UUID, user: AbstractBaseUser, channel_name: str, after_seq: int
) -> CustomerSnapshot:
    session = services.customer_connected(
        session_id=session_id, user=user, channel_name=channel_name
    )
    return CustomerSnapshot(
        session=session,
        state=session_payload(session),
        messages=messages_since(session_id=session_id, after_seq=after_seq),
    )


@dataclass
class FreshState:
    session: ChatSession
    state: Frame


def _fresh_customer_state(*, session_id: UUID, user: AbstractBaseUser) -> FreshState:
    session = selectors.session_get_for_customer(session_id=session_id, user=user)
    return FreshState(session=session, state=session_payload(session))


# The frames of a conversation, the same on both sockets (the agent's carry a session_id).
CONVERSATION_FRAMES: dict[str, str] = {
    "message.send": "on_message_send",
    "typing": "on_typing",
    "read": "on_read",
    "end.request": "on_end_request",
    "end.confirm": "on_end_confirm",
    "end.decline": "on_end_decline",
    "sync": "on_sync",
}


class CustomerConsumer(ChatSocket):
    """One customer's socket on one session. Query: ``?after_seq=N`` (default 0)."""

    role = Role.CUSTOMER
    frame_handlers = CONVERSATION_FRAMES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state: Frame = {}
        self.ticket: int | None = None
        self.seconds_per_position: float | None = None
        # Position frames are coalesced (QUEUE_POSITION_MIN_INTERVAL_MS): when the last went out
        # (event-loop clock), and whether a later one is already scheduled.
        self.position_sent_at = float("-inf")
        self.position_sent: Frame = {}
        self.position_pending = False

    async def connect(self) -> None:
        await self.accept()
        try:
            self.session_id = UUID(self.scope["url_route"]["kwargs"]["session_id"])
            after_seq = _query_int(self.scope, "after_seq", default=0)
        except ValueError:
            await self.close(code=CLOSE_BAD_REQUEST)
            return
        self.stream = SeqStream(session_id=self.session_id)
        self.group = events.session_group(self.session_id)
        # Joined before the snapshot is read, so nothing committed after it can be missed.
        # The queue group is joined on speculation (most sockets connect to waiting sessions)
        # and left at once for a session that is not waiting.
        await self.join(self.group)
        await self.join(events.QUEUE_GROUP)
        try:
            snapshot = await db(_open_customer_socket)(
                session_id=self.session_id,
                user=self.user,
                channel_name=self.channel_name,
                after_seq=after_seq,
            )
        except DomainError:
            # Not there, or not the caller's: the same answer for both.
            for group in list(self.joined):
                await self.leave(group)
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.registered = True
        self.ticket = snapshot.session.ticket
        self.state = snapshot.state
        self.seconds_per_position = _seconds_per_position(snapshot.state)
        if snapshot.state["status"] not in QUEUE_STATUSES:
            await self.leave(events.QUEUE_GROUP)
        await self.send_frame(state_frame(self.session_id, snapshot.state))
        # A client that claims more than exists (a stale cache) gets everything from the top.
        self.stream.last_sent = min(after_seq, snapshot.state["last_seq"])
        for frame in snapshot.messages:
            await self.send_frame(frame)
            self.stream.sent(frame["message"]["seq"])
        self.start_heartbeat()

    async def disconnect(self, code: int) -> None:
        self.stop_background()
        if self.registered:
            await db(services.customer_disconnected)(channel_name=self.channel_name)

    def queue_session_id(self) -> UUID | None:
        return self.session_id if self.state.get("status") == SessionStatus.WAITING else None

    async def heal_queue_spot(self, spot: QueueSpot) -> None:
        # The periodic re-read heals any drift of the position kept from queue.changed events.
        if self.state.get("status") == SessionStatus.WAITING:
            self.ticket = spot.ticket
            await self.set_position(spot.position)

    # --- client frames ----------------------------------------------------------------------

    async def on_message_send(self, frame: Frame) -> None:
        client_msg_id = field_uuid(frame, "client_msg_id")
        body = field_body(frame)
        posted = await db(services.message_post)(
            session_id=self.session_id,
            author=self.user,
            role=Role.CUSTOMER,
            client_msg_id=client_msg_id,
            body=body,
        )
        await self.send_frame(
            {
                "type": events.MESSAGE_ACK,
                "session_id": str(self.session_id),
                "client_msg_id": str(client_msg_id),
                "seq": posted.message.seq,
            }
        )

    async def on_typing(self, frame: Frame) -> None:
        self.require_live()
        await events.asend_now(
            self.group,
            {"type": events.TYPING, "session_id": str(self.session_id), "sender": self.role},
        )

    async def on_read(self, frame: Frame) -> None:
        seq = field_seq(frame, "seq")
        self.require_live()
        await events.asend_now(
            self.group,
            {
                "type": events.READ,
                "session_id": str(self.session_id),
                "sender": self.role,
                "seq": seq,
            },
        )

    async def on_end_request(self, frame: Frame) -> None:
        await db(services.session_end_request)(
            session_id=self.session_id, user=self.user, role=Role.CUSTOMER
        )

    async def on_end_confirm(self, frame: Frame) -> None:
        await db(services.session_end_confirm)(
            session_id=self.session_id, user=self.user, role=Role.CUSTOMER
        )

    async def on_end_decline(self, frame: Frame) -> None:
        await db(services.session_end_decline)(
            session_id=self.session_id, user=self.user, role=Role.CUSTOMER
        )

    async def on_sync(self, frame: Frame) -> None:
        after_seq = field_seq(frame, "after_seq")
        for message in await db(messages_since)(session_id=self.session_id, after_seq=after_seq):
            await self.send_frame(message)
            self.stream.sent(message["message"]["seq"])

    def require_live(self) -> None:
        # Typing and read receipts touch no database: the cached state decides.
        if self.state.get("status") not in (*QUEUE_STATUSES, SessionStatus.ACTIVE):
            raise FrameError("session_not_live", "This chat is not live any more.")

    # --- events -------------------------------------------------------------------------------

    async def relay(self, event: Frame) -> None:
        kind = event.get("type")
        if kind == events.MESSAGE:
            await self.relay_message(self.stream, event)
        elif kind == events.SESSION_STATE:
            await self.on_session_state(event)
        elif kind in (events.TYPING, events.READ):
            # Our own typing/read come back from the group: the other side needs them, not us.
            if event.get("sender") != self.role:
                await self.send_frame(event)
        else:
            await self.send_frame(event)

    async def on_session_state(self, event: Frame) -> None:
        """Relay a state; a change of status is first checked against the database.

        Events of one session can arrive out of order (they are built after commit, by
        whichever process made the change); a stale "waiting" after "active" would send the
        customer back to the queue screen. A status change is rare (a handful per chat), so
        the socket reads the truth for it and sends that instead.
        """
        previous = self.state.get("status")
        if event["session"].get("status") != previous:
            # Joined first (when it may be waiting) so no queue.changed after the read is missed.
            if event["session"].get("status") in QUEUE_STATUSES:
                await self.join(events.QUEUE_GROUP)
            fresh = await db(_fresh_customer_state)(session_id=self.session_id, user=self.user)
            self.ticket = fresh.session.ticket
            event = state_frame(self.session_id, fresh.state)
        status = event["session"]["status"]
        if status in QUEUE_STATUSES:
            await self.join(events.QUEUE_GROUP)
        else:
            await self.leave(events.QUEUE_GROUP)
        if event["session"] == self.state:
            return
        self.state = event["session"]
        spp = _seconds_per_position(self.state)
        if spp is not None:
            self.seconds_per_position = spp
        await self.send_frame(event)
        await self.catch_up(self.stream, self.state)

    async def on_queue_changed(self, event: Frame) -> None:
        """O(1): move our own position by what moved ahead of us (docs/protocol.md)."""
        if self.state.get("status") != SessionStatus.WAITING or self.ticket is None:
            return
        position = self.state.get("position")
        if not isinstance(position, int):
            return
        left = event.get("left_ticket")
        joined = event.get("joined_ticket")
        if isinstance(left, int) and left < self.ticket:
            position -= 1
        if isinstance(joined, int) and joined < self.ticket:
            position += 1
        spp = event.get("seconds_per_position")
        if isinstance(spp, int | float):
            self.seconds_per_position = float(spp)
        await self.set_position(max(1, position))

    async def set_position(self, position: int | None) -> None:
        """Push session.state when the position or (noticeably) the estimate changed."""
        estimate = (
            round(position * self.seconds_per_position)
            if position is not None and self.seconds_per_position is not None
            else None
        )
        old_position = self.state.get("position")
        old_estimate = self.state.get("estimated_wait_s")
        if position == old_position and not _estimate_moved(old_estimate, estimate):
            return
        self.state = {**self.state, "position": position, "estimated_wait_s": estimate}
        # Every customer who leaves the head of the queue moves everybody behind: with 500
        # waiting and a few changes a second, a frame per change would be thousands of frames a
        # second that no one reads. At most one position frame per interval goes out; a change
        # inside the interval is sent at its end, carrying the latest position.
        if self.position_pending:
            return
        wait = self.position_sent_at + _position_interval_s() - asyncio.get_running_loop().time()
        if wait > 0:
            self.position_pending = True
            self.spawn(self.send_position_later(wait))
            return
        await self.send_position()

    async def send_position_later(self, wait: float) -> None:
        try:
            await asyncio.sleep(wait)
        finally:
            self.position_pending = False
        # Not waiting any more: the status change sent its own, newer session.state. Back where
        # it was when the last frame went (1 -> 2 -> 1): nothing to say.
        if self.state.get("status") == SessionStatus.WAITING and self.state != self.position_sent:
            await self.send_position()

    async def send_position(self) -> None:
        self.position_sent_at = asyncio.get_running_loop().time()
        self.position_sent = self.state
        await self.send_frame(state_frame(self.session_id, self.state))


def _position_interval_s() -> float:
    return settings.QUEUE_POSITION_MIN_INTERVAL_MS / 1000


def _seconds_per_position(state: Frame) -> float | None:
    position, estimate = state.get("position"), state.get("estimated_wait_s")
    if isinstance(position, int) and position > 0 and isinstance(estimate, int | float):
        return estimate / position
    return None


def _estimate_moved(old: int | None, new: int | None) -> bool:
    """Small wobbles of the estimate are not worth a frame to every waiting customer."""
    if old is None or new is None:
        return old != new
    return abs(new - old) >= max(5, 0.1 * old)


def _query_int(scope: dict[str, Any], name: str, *, default: int) -> int:
    from urllib.parse import parse_qs

    values = parse_qs(scope.get("query_string", b"").decode("latin1")).get(name)
    if not values:
        return default
    value = int(values[0])
    if value < 0:
        raise ValueError(name)
    return value
