"""The agent console's socket ``/ws/agent/``: one socket carries all of the agent's sessions.

It joins the agent's group (offers, agent state) and the session group of each OFFERED/ACTIVE
session: on connect, and whenever an offer or a session.state names a new one; it leaves a
session's group when the session is no longer the agent's (ended, incomplete, sent back).
Messages are published to the session group only, so a session's group is always joined before
the database read whose ``last_seq`` the console starts from (a message committed after that
read is delivered live; one before it is covered by the state the console sends). The
frame hygiene, the heartbeat and the per-session no-gap/no-duplicate stream come from
chat.consumers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser

from agents import selectors as agent_selectors
from agents import services as agent_services
from agents.models import Agent
from chat import events, selectors, services
from chat.consumers import (
    CONVERSATION_FRAMES,
    ChatSocket,
    Frame,
    FrameError,
    SeqStream,
    db,
    field_body,
    field_seq,
    field_uuid,
    messages_since,
    state_frame,
)
from chat.errors import DomainError
from chat.models import Role, SessionStatus
from chat.payloads import session_payload
from chat.ws_auth import CLOSE_FORBIDDEN
from matching import services as matching_services

SEATED = (SessionStatus.OFFERED, SessionStatus.ACTIVE)
# A session's group is left a moment after it stops being ours, so that the events published
# together with that change (session.ended right after session.state) still reach the console.
LEAVE_DELAY_S = 2.0
# Events about a session that has just left us that the console still needs.
FAREWELL_TYPES = {events.SESSION_STATE, events.SESSION_ENDED, events.OFFER_EXPIRED}
CONTROL_TYPES = {events.END_REQUESTED, events.END_DECLINED, events.SESSION_ENDED}


def _agent_and_session_ids(*, user: AbstractBaseUser) -> tuple[Agent, list[UUID]] | None:
    agent = agent_selectors.agent_for_user(user=user)
    if agent is None:
        return None
    return agent, [s.id for s in agent_selectors.sessions_of_agent(agent=agent)]


@dataclass
class AgentSnapshot:
    agent_state: Frame
    sessions: list[tuple[UUID, Frame]]


def _open_agent_socket(*, agent: Agent, channel_name: str) -> AgentSnapshot:
    agent = agent_services.agent_connected(agent=agent, channel_name=channel_name)
    return AgentSnapshot(
        agent_state=agent_selectors.agent_state_payload(agent=agent),
        sessions=[
            (s.id, session_payload(s, for_agent=True))
            for s in agent_selectors.sessions_of_agent(agent=agent)
        ],
    )


def _fresh_agent_state(*, session_id: UUID, agent: Agent) -> Frame | None:
    """The session object as the console sees it, or None if it is not this agent's."""
    try:
        session = selectors.session_get_for_agent(session_id=session_id, agent=agent)
    except DomainError:
        return None
    return session_payload(session, for_agent=True)


def _sync_for_agent(*, session_id: UUID, agent: Agent, after_seq: int) -> list[Frame]:
    selectors.session_get_for_agent(session_id=session_id, agent=agent)
    return messages_since(session_id=session_id, after_seq=after_seq)


class AgentConsumer(ChatSocket):
    role = Role.AGENT
    frame_handlers = {
        "shift.start": "on_shift_start",
        "break.request": "on_break_request",
        "break.end": "on_break_end",
        "shift.end": "on_shift_end",
        "available": "on_available",
        "offer.accept": "on_offer_accept",
        "offer.decline": "on_offer_decline",
        **CONVERSATION_FRAMES,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The sessions this console carries (OFFERED/ACTIVE with this agent), by id.
        self.streams: dict[UUID, SeqStream] = {}
        # Sessions that stopped being ours a moment ago (see LEAVE_DELAY_S), with their streams
        # kept in case they come back (an offer declined and made again to us).
        self.leaving: dict[UUID, SeqStream] = {}
        # Last session.state sent per session: the agent group and the session group both
        # carry it, and the console needs it once.
        self.last_state: dict[UUID, Frame] = {}
        self.last_control: dict[UUID, Frame] = {}
        # Joining and the delayed leaving of session groups, one at a time: a session offered
        # again while its group is being left must end up joined.
        self.membership = asyncio.Lock()

    async def connect(self) -> None:
        await self.accept()
        found = await db(_agent_and_session_ids)(user=self.user)
        if found is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.agent, session_ids = found
        # One console carries up to ``capacity`` conversations: it gets the per-connection
        # budget once per seat, so an agent typing in two chats is not throttled like a bot.
        self.limiter.count = settings.WS_RATE_LIMIT_COUNT * max(1, self.agent.capacity)
        # Every group joined before the snapshot is read (see chat.consumers).
        await self.join(events.agent_group(self.agent.id))
        for session_id in session_ids:
            await self.take(session_id, None)
        snapshot = await db(_open_agent_socket)(agent=self.agent, channel_name=self.channel_name)
        self.registered = True
        await self.send_frame({"type": events.AGENT_STATE, **snapshot.agent_state})
        late: list[UUID] = []
        for session_id, payload in snapshot.sessions:
            # A session offered between the two reads is also announced on the agent group,
            # which was joined first; taking it here as well is harmless. Its session group is
            # joined only now, after the snapshot was read: what was posted in between is
            # read again below.
            if session_id not in self.streams:
                late.append(session_id)
            await self.take(session_id, payload["last_seq"])
            self.streams[session_id].last_sent = payload["last_seq"]
            await self.send_state(session_id, state_frame(session_id, payload))
        seated = {session_id for session_id, _ in snapshot.sessions}
        for session_id in session_ids:
            if session_id not in seated:  # no longer ours by the time of the snapshot
                self.let_go(session_id)
        for session_id in late:
            await self.fill_gap(self.streams[session_id])
        self.start_heartbeat()

    async def disconnect(self, code: int) -> None:
        self.stop_background()
        if self.registered:
            await db(agent_services.agent_disconnected)(channel_name=self.channel_name)

    async def take(self, session_id: UUID, last_seq: int | None) -> None:
        if session_id in self.leaving:
            self.streams[session_id] = self.leaving.pop(session_id)
        elif session_id not in self.streams:
            self.streams[session_id] = SeqStream(session_id=session_id, last_sent=last_seq)
        await self.join_session(session_id)

    async def join_session(self, session_id: UUID) -> bool:
        """Join the session's group; True if this call joined it."""
        group = events.session_group(session_id)
        async with self.membership:
            if group in self.joined:
                return False
            await self.join(group)
            return True

    def let_go(self, session_id: UUID) -> None:
        stream = self.streams.pop(session_id, None)
        if stream is None:
            return
        self.leaving[session_id] = stream
        self.spawn(self._leave_later(session_id))

    async def _leave_later(self, session_id: UUID) -> None:
        await asyncio.sleep(LEAVE_DELAY_S)
        async with self.membership:
            if session_id in self.leaving:  # not taken back in the meantime (a new offer)
                del self.leaving[session_id]
                for memory in (self.last_state, self.last_control):
                    memory.pop(session_id, None)
                await self.leave(events.session_group(session_id))

    def stream_of(self, frame: Frame) -> SeqStream:
        """The session a frame names, which must be one this console carries."""
        session_id = field_uuid(frame, "session_id")
        stream = self.streams.get(session_id)
        if stream is None:
            raise FrameError("not_found", "No such session on this console.")
        return stream

    # --- agent state frames -------------------------------------------------------------------

    async def on_shift_start(self, frame: Frame) -> None:
        await db(agent_services.agent_shift_start)(agent=self.agent)

    async def on_break_request(self, frame: Frame) -> None:
        await db(agent_services.agent_break_request)(agent=self.agent)

    async def on_break_end(self, frame: Frame) -> None:
        await db(agent_services.agent_break_end)(agent=self.agent)

    async def on_shift_end(self, frame: Frame) -> None:
        await db(agent_services.agent_shift_end)(agent=self.agent)

    async def on_available(self, frame: Frame) -> None:
        await db(agent_services.agent_set_available)(agent=self.agent)

    async def on_offer_accept(self, frame: Frame) -> None:
        session_id = field_uuid(frame, "session_id")
        await db(matching_services.offer_accept)(session_id=session_id, agent=self.agent)

    async def on_offer_decline(self, frame: Frame) -> None:
        session_id = field_uuid(frame, "session_id")
        await db(matching_services.offer_decline)(session_id=session_id, agent=self.agent)

    # --- conversation frames --------------------------------------------------------------

    async def on_message_send(self, frame: Frame) -> None:
        session_id = field_uuid(frame, "session_id")
        client_msg_id = field_uuid(frame, "client_msg_id")
        body = field_body(frame)
        posted = await db(services.message_post)(
            session_id=session_id,
            author=self.user,
            role=Role.AGENT,
            client_msg_id=client_msg_id,
            body=body,
        )
        await self.send_frame(
            {
                "type": events.MESSAGE_ACK,
                "session_id": str(session_id),
                "client_msg_id": str(client_msg_id),
                "seq": posted.message.seq,
            }
        )

    async def on_typing(self, frame: Frame) -> None:
        stream = self.stream_of(frame)
        await events.asend_now(
            events.session_group(stream.session_id),
            {"type": events.TYPING, "session_id": str(stream.session_id), "sender": self.role},
        )

    async def on_read(self, frame: Frame) -> None:
        stream = self.stream_of(frame)
        seq = field_seq(frame, "seq")
        await events.asend_now(
            events.session_group(stream.session_id),
            {
                "type": events.READ,
                "session_id": str(stream.session_id),
                "sender": self.role,
                "seq": seq,
            },
        )

    async def on_end_request(self, frame: Frame) -> None:
        await db(services.session_end_request)(
            session_id=field_uuid(frame, "session_id"), user=self.user, role=Role.AGENT
        )

    async def on_end_confirm(self, frame: Frame) -> None:
        await db(services.session_end_confirm)(
            session_id=field_uuid(frame, "session_id"), user=self.user, role=Role.AGENT
        )

    async def on_end_decline(self, frame: Frame) -> None:
        await db(services.session_end_decline)(
            session_id=field_uuid(frame, "session_id"), user=self.user, role=Role.AGENT
        )

    async def on_sync(self, frame: Frame) -> None:
        session_id = field_uuid(frame, "session_id")
        after_seq = field_seq(frame, "after_seq")
        frames = await db(_sync_for_agent)(
            session_id=session_id, agent=self.agent, after_seq=after_seq
        )
        stream = self.streams.get(session_id)
        for message in frames:
            await self.send_frame(message)
            if stream is not None:
                stream.sent(message["message"]["seq"])

    # --- events ----------------------------------------------------------------------------

    async def relay(self, event: Frame) -> None:
        kind = event.get("type")
        raw_id = event.get("session_id")
        if kind == events.AGENT_STATE or raw_id is None:
            await self.send_frame(event)
            return
        session_id = UUID(str(raw_id))
        if kind == events.OFFER:
            await self.take(session_id, None)
            await self.send_frame(event)
        elif kind == events.SESSION_STATE:
            await self.on_session_state(session_id, event)
        elif kind == events.OFFER_EXPIRED:
            await self.send_frame(event)
            self.let_go(session_id)
        elif session_id in self.streams or (session_id in self.leaving and kind in FAREWELL_TYPES):
            if kind == events.MESSAGE:
                stream = self.streams.get(session_id)
                if stream is not None:
                    await self.relay_message(stream, event)
            elif kind in (events.TYPING, events.READ):
                if event.get("sender") != self.role:
                    await self.send_frame(event)
            elif kind in CONTROL_TYPES:
                # Published to the session group AND the agent group, and this socket is in
                # both: the second copy is the same dict, right behind the first.
                if self.last_control.get(session_id) != event:
                    self.last_control[session_id] = event
                    await self.send_frame(event)
            else:
                await self.send_frame(event)

    async def on_session_state(self, session_id: UUID, event: Frame) -> None:
        """Take, keep or let go of a session by its state; a status change is checked first.

        States of one session can arrive out of order (each is built after its commit, by
        whichever process made the change): a stale "waiting" after "active" must not make the
        console drop a chat it holds. A status change is rare, so it is read from the database.
        """
        if "customer" not in event["session"]:
            # The customer's copy, from the session group. Every change also reaches the agent
            # group of the session's agent (and of the agent it just left), with the customer's
            # name: that copy is the console's. The customer's copy may describe the session
            # as another agent's (offered to the next agent after a decline).
            return
        status = event["session"].get("status")
        known = session_id in self.streams or session_id in self.leaving
        if not known and status not in SEATED:
            return
        last = self.last_state.get(session_id)
        if last is None or last["session"].get("status") != status:
            # Join before reading: a message committed after the read below reaches the session
            # group (the only one it is published to) with this socket in it; one committed
            # before it is counted in the ``last_seq`` the console is given.
            joined_now = status in SEATED and await self.join_session(session_id)
            fresh = await db(_fresh_agent_state)(session_id=session_id, agent=self.agent)
            if fresh is not None:
                event = state_frame(session_id, fresh)
                status = fresh["status"]
            if joined_now and (fresh is None or status not in SEATED):
                await self.leave_unless_taken(session_id)
            if fresh is None and status in SEATED:
                return  # says seated, but not with this agent (any more): stale
        if status in SEATED:
            await self.take(session_id, event["session"].get("last_seq"))
            await self.send_state(session_id, event)
            await self.catch_up(self.streams[session_id], event["session"])
        elif known:
            await self.send_state(session_id, event)
            self.let_go(session_id)

    async def leave_unless_taken(self, session_id: UUID) -> None:
        async with self.membership:
            if session_id not in self.streams and session_id not in self.leaving:
                await self.leave(events.session_group(session_id))

    async def send_state(self, session_id: UUID, event: Frame) -> None:
        """Each state once (a verified read may equal the event that prompted it)."""
        if self.last_state.get(session_id) == event:
            return
        self.last_state[session_id] = event
        await self.send_frame(event)
