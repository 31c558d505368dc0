"""The real system under a support floor's load: agents on shift, customers arriving, chatting,
ending, coming back; agents accepting offers and taking breaks.

Every client is a real websocket client of PROTOCOL.md with a JWT from ``POST /api/auth/token``
in its ``Authorization`` header. The load model:

* Agents connect to ``/ws/agent/``, start their shift, accept every offer at once, confirm every
  end request, and now and then take a break (``break.request``; back after ``break_s``).
* Customers arrive as a Poisson process (``POST /api/sessions``, then ``/ws/sessions/{id}/``)
  until ``active + waiting`` are live; then a customer whose chat ended is replaced by a new
  arrival after an exponential delay, so the floor stays full and arrivals stay Poisson.
* Messages: a Poisson process at the step's rate picks an active chat uniformly and lets its
  side whose turn it is write a 20-200 character line, so each chat sees exponential think times
  (mean = active chats / rate) and both sides alternate. A chat that has used its budget of
  messages is ended by the customer (``end.request``), which the agent confirms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from bench.load import (
    Progress,
    StepResult,
    Tracker,
    body_text,
    gather_limited,
    now,
    open_socket,
    poisson,
    step_summaries,
    wait_drained,
)
from bench.stats import Sampler, summarize_ms


@dataclass
class Options:
    agents: int
    active: int
    waiting: int
    customers: int
    steps: list[tuple[float, float]]
    ramp_rate: float
    mean_messages: int
    return_delay_s: float
    breaks_per_min: float
    break_s: float
    seed: int
    drain_max_s: float = 120.0


@dataclass
class Chat:
    session_id: str
    customer: Customer | None = None
    agent: AgentClient | None = None
    customer_active: bool = False
    agent_active: bool = False
    budget: int = 0
    sent: int = 0
    customer_turn: bool = True
    ending: bool = False
    ended: bool = False


# A person does not type faster than the server's per-socket frame limit; a client that would
# (an agent writing in two busy chats at a high step) leaves this chat's turn to another chat.
RATE_COUNT = int(os.environ.get("WS_RATE_LIMIT_COUNT") or 20)
RATE_WINDOW_S = float(os.environ.get("WS_RATE_LIMIT_WINDOW_S") or 10)
RATE_BUDGET = max(1, int(RATE_COUNT * 0.75))
RAMP_LONGEST_S = float(os.environ.get("BENCH_RAMP_LONGEST_S") or 240)


# Access tokens live 5 minutes (SIMPLE_JWT's default) and a full run lasts longer: clients
# refresh theirs, as the web and mobile clients do, a minute before it expires.
TOKEN_REFRESH_AFTER_S = 240.0
# How long an agent set away (an offer expired unanswered) takes to press "I'm back".
AWAY_NOTICED_S = 5.0


@dataclass
class User:
    username: str
    token: str = ""
    refresh: str = ""
    token_at: float = 0.0
    base: str = ""  # http://127.0.0.1:port of the daphne this client uses
    sends: deque[float] = field(default_factory=deque)

    def may_send(self, at: float) -> bool:
        while self.sends and at - self.sends[0] > RATE_WINDOW_S:
            self.sends.popleft()
        return len(self.sends) < RATE_BUDGET

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def ws_url(self, path: str) -> str:
        return "ws" + self.base[len("http") :] + path


@dataclass
class Customer(User):
    ws: ClientConnection | None = None
    chat: Chat | None = None


@dataclass
class AgentClient(User):
    ws: ClientConnection | None = None
    status: str = "offline"
    capacity: int = 2
    on_break_plan: bool = False
    coming_back: bool = False
    free_since: list[float] = field(default_factory=list)
    chats: dict[str, Chat] = field(default_factory=dict)
    state_seen: asyncio.Event = field(default_factory=asyncio.Event)


class System:
    def __init__(
        self, opts: Options, bases: list[str], sampler: Sampler, server_names: list[str]
    ) -> None:
        self.o = opts
        self.bases = bases
        self.sampler = sampler
        self.server_names = server_names
        self.rng = random.Random(opts.seed)
        self.tracker = Tracker()
        self.chats: dict[str, Chat] = {}
        self.active: list[Chat] = []
        self.active_index: dict[str, int] = {}
        self.arrival: dict[str, float] = {}
        self.offers: list[tuple[str, float, float | None]] = []  # (session, t_offer, seat freed)
        self.errors: Counter[str] = Counter()
        self.error_samples: list[dict[str, object]] = []
        self.frames_in: Counter[str] = Counter()
        self.open_sockets = 0
        self.idle: list[Customer] = []
        self.live_customers = 0
        self.arrivals_on = False
        self.breaks_taken = 0
        self.agents_back_from_away = 0
        self.chats_ended = 0
        self.tasks: set[asyncio.Task[object]] = set()
        self.step_index = 0
        self.http: httpx.AsyncClient | None = None
        self.agents = [
            AgentClient(f"agent{n}", base=bases[n % len(bases)]) for n in range(1, opts.agents + 1)
        ]
        self.customers = [
            Customer(f"customer{n}", base=bases[n % len(bases)])
            for n in range(1, opts.customers + 1)
        ]

    # --- bookkeeping ----------------------------------------------------------------------------

    def spawn(self, coro: Awaitable[object]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def chat(self, session_id: str) -> Chat:
        chat = self.chats.get(session_id)
        if chat is None:
            chat = self.chats[session_id] = Chat(session_id)
        return chat

    def maybe_activate(self, chat: Chat) -> None:
        if (
            chat.customer_active
            and chat.agent_active
            and not chat.ending
            and chat.session_id not in self.active_index
        ):
            self.active_index[chat.session_id] = len(self.active)
            self.active.append(chat)

    def deactivate(self, chat: Chat) -> None:
        index = self.active_index.pop(chat.session_id, None)
        if index is None:
            return
        last = self.active.pop()
        if last is not chat:
            self.active[index] = last
            self.active_index[last.session_id] = index

    def error(self, who: str, frame: dict[str, object]) -> None:
        code = str(frame.get("code"))
        self.errors[code] += 1
        cmid = frame.get("client_msg_id")
        if isinstance(cmid, str):
            self.tracker.refused[cmid] = code
        if len(self.error_samples) < 20:
            self.error_samples.append({"who": who, **frame})

    def status_line(self) -> str:
        waiting = sum(1 for c in self.chats.values() if not c.agent and not c.ended)
        return (
            f"{self.open_sockets} sockets, {len(self.active)} active chats, ~{waiting} waiting, "
            f"{self.chats_ended} ended, {sum(self.errors.values())} errors"
        )

    # --- logins ---------------------------------------------------------------------------------

    async def login_all(self) -> None:
        assert self.http is not None

        async def login(user: User) -> None:
            answer = await self.http.post(
                f"{user.base}/api/auth/token",
                json={"username": user.username, "password": "dayone"},
            )
            answer.raise_for_status()
            user.token, user.refresh = answer.json()["access"], answer.json()["refresh"]
            user.token_at = now()

        await gather_limited([login(u) for u in [*self.agents, *self.customers]], 8)

    async def fresh_token(self, user: User) -> None:
        """Refresh ``user``'s access token when it is about to expire."""
        assert self.http is not None
        if now() - user.token_at < TOKEN_REFRESH_AFTER_S:
            return
        answer = await self.http.post(
            f"{user.base}/api/auth/token/refresh", json={"refresh": user.refresh}
        )
        answer.raise_for_status()
        user.token = answer.json()["access"]
        user.refresh = answer.json().get("refresh", user.refresh)
        user.token_at = now()

    # --- agents ---------------------------------------------------------------------------------

    async def agent_connect(self, agent: AgentClient) -> None:
        try:
            agent.ws = await open_socket(agent.ws_url("/ws/agent/"), agent.headers())
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            self.errors["agent_socket_open_failed"] += 1
            if len(self.error_samples) < 20:
                self.error_samples.append({"who": agent.username, "open": repr(exc)[:300]})
            return
        self.open_sockets += 1
        self.spawn(self.agent_reader(agent))
        try:
            await asyncio.wait_for(agent.state_seen.wait(), 60)
        except TimeoutError:
            self.errors["agent_state_not_seen"] += 1
            return
        await self.agent_send(agent, {"type": "shift.start"})
        agent.free_since = [now()] * agent.capacity

    async def agent_send(self, agent: AgentClient, frame: dict[str, object]) -> None:
        assert agent.ws is not None
        try:
            await agent.ws.send(json.dumps(frame))
        except ConnectionClosed:
            self.errors["agent_socket_closed"] += 1

    async def agent_reader(self, agent: AgentClient) -> None:
        assert agent.ws is not None
        try:
            async for raw in agent.ws:
                frame = json.loads(raw)
                kind = frame.get("type")
                self.frames_in[f"agent:{kind}"] += 1
                if kind == "message":
                    message = frame["message"]
                    if message.get("sender") == "customer":
                        self.tracker.received(message.get("client_msg_id"), agent.username)
                elif kind == "message.ack":
                    self.tracker.acked.add(frame["client_msg_id"])
                elif kind == "offer":
                    await self.on_offer(agent, frame["session_id"])
                elif kind == "session.state":
                    self.agent_session_state(agent, frame["session_id"], frame["session"])
                elif kind == "end.requested":
                    if frame.get("by") == "customer":
                        await self.agent_send(
                            agent, {"type": "end.confirm", "session_id": frame["session_id"]}
                        )
                        if not agent.on_break_plan:
                            agent.free_since.append(now())
                elif kind == "session.ended":
                    self.agent_session_gone(agent, frame["session_id"])
                elif kind == "agent.state":
                    agent.status = frame.get("status", agent.status)
                    agent.capacity = int(frame.get("capacity", agent.capacity))
                    agent.state_seen.set()
                    if agent.status == "on_break" and agent.on_break_plan:
                        self.spawn(self.break_end_later(agent))
                    elif agent.status == "away" and not agent.coming_back:
                        # An offer expired unanswered (counted as an error): the server set the
                        # agent away, and a person notices and presses "I'm back".
                        agent.coming_back = True
                        self.spawn(self.back_from_away(agent))
                elif kind == "error":
                    self.error(agent.username, frame)
        except ConnectionClosed:
            pass
        finally:
            self.open_sockets -= 1

    async def on_offer(self, agent: AgentClient, session_id: str) -> None:
        t_offer = now()
        seat_free = min(agent.free_since) if agent.free_since else None
        if seat_free is not None:
            agent.free_since.remove(seat_free)
        self.offers.append((session_id, t_offer, seat_free))
        chat = self.chat(session_id)
        chat.agent = agent
        agent.chats[session_id] = chat
        await self.agent_send(agent, {"type": "offer.accept", "session_id": session_id})

    def agent_session_state(self, agent: AgentClient, session_id: str, session: dict) -> None:
        status = session.get("status")
        chat = self.chat(session_id)
        if status == "active":
            chat.agent = agent
            agent.chats[session_id] = chat
            chat.agent_active = True
            self.maybe_activate(chat)
        elif status in ("ended", "incomplete", "waiting"):
            self.agent_session_gone(agent, session_id)

    def agent_session_gone(self, agent: AgentClient, session_id: str) -> None:
        chat = agent.chats.pop(session_id, None)
        if chat is not None:
            chat.agent_active = False
            self.deactivate(chat)

    async def take_breaks(self) -> None:
        """Now and then an available agent asks for a break (effective when its chats end)."""
        if self.o.breaks_per_min <= 0:
            return
        while True:
            await asyncio.sleep(self.rng.expovariate(self.o.breaks_per_min / 60))
            candidates = [a for a in self.agents if a.status == "available" and not a.on_break_plan]
            if not candidates:
                continue
            agent = self.rng.choice(candidates)
            agent.on_break_plan = True
            agent.free_since = []
            self.breaks_taken += 1
            await self.agent_send(agent, {"type": "break.request"})

    async def back_from_away(self, agent: AgentClient) -> None:
        await asyncio.sleep(AWAY_NOTICED_S)
        agent.coming_back = False
        self.agents_back_from_away += 1
        await self.agent_send(agent, {"type": "available"})
        agent.free_since = [now()] * max(agent.capacity - len(agent.chats), 0)

    async def break_end_later(self, agent: AgentClient) -> None:
        await asyncio.sleep(self.o.break_s)
        agent.on_break_plan = False
        await self.agent_send(agent, {"type": "break.end"})
        agent.free_since = [now()] * max(agent.capacity - len(agent.chats), 0)

    # --- customers ------------------------------------------------------------------------------

    async def arrive(self, customer: Customer) -> None:
        assert self.http is not None
        self.live_customers += 1
        t_arrival = now()
        try:
            await self.fresh_token(customer)
            answer = await self.http.post(
                f"{customer.base}/api/sessions", json={"topic": "bench"}, headers=customer.headers()
            )
        except httpx.HTTPError as exc:
            self.errors["create_failed"] += 1
            if len(self.error_samples) < 20:
                self.error_samples.append({"who": customer.username, "rest": repr(exc)[:300]})
            self.live_customers -= 1
            return
        if answer.status_code != 201:
            self.errors[f"create_{answer.status_code}"] += 1
            if len(self.error_samples) < 20:
                self.error_samples.append({"who": customer.username, "rest": answer.text[:300]})
            self.live_customers -= 1
            self.idle.append(customer)
            return
        session_id = answer.json()["id"]
        self.arrival[session_id] = t_arrival
        chat = self.chat(session_id)
        chat.customer = customer
        chat.budget = self.rng.randint(2, 2 * self.o.mean_messages - 2)
        customer.chat = chat
        try:
            customer.ws = await open_socket(
                customer.ws_url(f"/ws/sessions/{session_id}/"), customer.headers()
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            # An overloaded server drops handshakes (daphne gives the application 5 s to
            # accept): counted, and this customer stays out (its session lives on server-side
            # until the customer grace makes it incomplete).
            self.errors["customer_socket_open_failed"] += 1
            if len(self.error_samples) < 20:
                self.error_samples.append({"who": customer.username, "open": repr(exc)[:300]})
            chat.ended = True
            self.live_customers -= 1
            return
        self.open_sockets += 1
        self.spawn(self.customer_reader(customer, chat, customer.ws))

    async def customer_reader(self, customer: Customer, chat: Chat, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                frame = json.loads(raw)
                kind = frame.get("type")
                self.frames_in[f"customer:{kind}"] += 1
                if kind == "message":
                    message = frame["message"]
                    if message.get("sender") == "agent":
                        self.tracker.received(message.get("client_msg_id"), customer.username)
                elif kind == "message.ack":
                    self.tracker.acked.add(frame["client_msg_id"])
                elif kind == "session.state":
                    status = frame["session"].get("status")
                    if status == "active":
                        chat.customer_active = True
                        self.maybe_activate(chat)
                    elif status in ("ended", "incomplete"):
                        break
                elif kind == "session.ended":
                    break
                elif kind == "error":
                    self.error(customer.username, frame)
        except ConnectionClosed:
            pass
        finally:
            self.open_sockets -= 1
            chat.customer_active = False
            chat.ended = True
            self.deactivate(chat)
            self.chats_ended += 1
            with contextlib.suppress(Exception):
                await ws.close()
            customer.ws = None
            customer.chat = None
            self.live_customers -= 1
            self.idle.append(customer)
            if self.arrivals_on:
                self.spawn(self.return_later())

    async def return_later(self) -> None:
        await asyncio.sleep(self.rng.expovariate(1 / self.o.return_delay_s))
        if self.arrivals_on and self.idle:
            await self.arrive(self.idle.pop(0))

    async def end_chat(self, chat: Chat) -> None:
        # A short pause after the last line, as a person would; then the customer asks to end.
        await asyncio.sleep(self.rng.uniform(0.1, 0.5))
        customer = chat.customer
        if customer is not None and customer.ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await customer.ws.send(json.dumps({"type": "end.request"}))

    # --- messages -------------------------------------------------------------------------------

    async def fire(self) -> bool:
        if not self.active:
            self.errors["no_active_chat_to_write_in"] += 1
            return False
        for _ in range(5):
            chat = self.active[self.rng.randrange(len(self.active))]
            sender = chat.customer if chat.customer_turn else chat.agent
            if sender is not None and sender.may_send(now()):
                break
        else:
            self.errors["skipped_to_stay_under_rate_limit"] += 1
            return False
        sender.sends.append(now())
        cmid = self.tracker.new_id()
        frame: dict[str, object] = {
            "type": "message.send",
            "client_msg_id": cmid,
            "body": body_text(self.rng),
        }
        if chat.customer_turn:
            ws = chat.customer.ws if chat.customer else None
        else:
            ws = chat.agent.ws if chat.agent else None
            frame["session_id"] = chat.session_id
        chat.customer_turn = not chat.customer_turn
        if ws is None:
            return False
        self.tracker.sent(cmid, self.step_index, now())
        try:
            await ws.send(json.dumps(frame))
        except ConnectionClosed:
            self.tracker.refused[cmid] = "socket_closed"
        chat.sent += 1
        if chat.sent >= chat.budget:
            chat.ending = True
            self.deactivate(chat)
            self.spawn(self.end_chat(chat))
        return True

    # --- the run --------------------------------------------------------------------------------

    async def run(self, profile: Callable[[int, float], None] | None = None) -> dict[str, object]:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            self.http = http
            print(
                f"  [system] logging in {len(self.agents) + len(self.customers)} users", flush=True
            )
            started = now()
            await self.login_all()
            print(f"  [system] logins took {now() - started:.1f} s", flush=True)
            progress = Progress("system", self.tracker, self.status_line)
            progress_task = asyncio.create_task(progress.run())
            try:
                return await self._run(profile)
            finally:
                progress_task.cancel()
                self.arrivals_on = False
                await self.close_all()

    async def _run(self, profile: Callable[[int, float], None] | None) -> dict[str, object]:
        o = self.o
        # Warm-up: the first few agents (first imports, first connections) before the baseline.
        warm = max(1, len(self.agents) // 50)
        await gather_limited([self.agent_connect(a) for a in self.agents[:warm]], 10)
        await asyncio.sleep(1)
        rss_before, sockets_before = self.sampler.rss(self.server_names), self.open_sockets
        t_ramp = now()
        print(f"  [system] connecting {len(self.agents)} agents", flush=True)
        await gather_limited([self.agent_connect(a) for a in self.agents[warm:]], 50)
        live_target = o.active + o.waiting
        print(f"  [system] ramp: {live_target} customers arriving at {o.ramp_rate:g}/s", flush=True)
        self.idle = list(self.customers)
        arrivals = []
        for _ in range(live_target):
            await asyncio.sleep(self.rng.expovariate(o.ramp_rate))
            arrivals.append(asyncio.ensure_future(self.arrive(self.idle.pop(0))))
        await asyncio.gather(*arrivals)
        # Until every seat is taken, or nothing moved for 10 s (then say what is stuck).
        last_change, seen = now(), -1
        # Bounded: an overloaded server that keeps seating one chat a second must not hold the
        # run for ever; the steps then run with the chats that are active.
        while (
            len(self.active) < min(o.active, 2 * o.agents)
            and now() - last_change < 10
            and now() - t_ramp < RAMP_LONGEST_S
        ):
            if len(self.active) != seen:
                seen, last_change = len(self.active), now()
            await asyncio.sleep(0.2)
        stuck = [
            f"{c.session_id[:8]} agent={c.agent.username if c.agent else None} "
            f"customer_active={c.customer_active} agent_active={c.agent_active}"
            for c in self.chats.values()
            if c.agent and not (c.customer_active and c.agent_active) and not c.ended
        ]
        if stuck:
            print(f"  [system] seated but not active after the ramp: {stuck[:10]}", flush=True)
        await asyncio.sleep(2)
        ramp_s = now() - t_ramp
        rss_after, sockets_after = self.sampler.rss(self.server_names), self.open_sockets
        active_after_ramp = len(self.active)
        idle_bytes = (rss_after - rss_before) / max(sockets_after - sockets_before, 1)
        print(
            f"  [system] ramp done in {ramp_s:.1f} s: {self.status_line()}; "
            f"{idle_bytes / 1024:.1f} KiB server RSS per socket",
            flush=True,
        )
        self.arrivals_on = True
        breaks = asyncio.create_task(self.take_breaks())
        results: list[StepResult] = []
        open_sockets: list[int] = []
        active_chats: list[int] = []
        for index, (rate, duration) in enumerate(o.steps):
            self.step_index = index
            print(f"  [system] step {index + 1}: {rate:g} msg/s for {duration:g} s", flush=True)
            if profile is not None:
                profile(index, duration)
            start = now()
            lag = await poisson(rate, duration, self.rng, self.fire)
            results.append(StepResult(rate, duration, start, now(), lag))
            open_sockets.append(self.open_sockets)
            active_chats.append(len(self.active))
        breaks.cancel()
        self.arrivals_on = False
        drain_s = await wait_drained(self.tracker, 15, longest=self.o.drain_max_s)
        steps = step_summaries(results, self.tracker, self.sampler)
        for step, sockets, active in zip(steps, open_sockets, active_chats, strict=True):
            step["open_sockets"] = sockets
            step["active_chats"] = active
        return {
            "sockets": sockets_after,
            "idle_socket_bytes": idle_bytes,
            "ramp_s": round(ramp_s, 1),
            "active_after_ramp": active_after_ramp,
            "drain_s": round(drain_s, 1),
            "steps": steps,
            "totals": self.tracker.totals(),
            "matching": self.matching_summary(),
            "errors": dict(self.errors),
            "error_samples": self.error_samples,
            "frames_in": dict(self.frames_in),
            "chats_ended": self.chats_ended,
            "breaks_taken": self.breaks_taken,
            "agents_back_from_away": self.agents_back_from_away,
            "sent_ids": list(self.tracker.t0),
            "refused_ids": dict(self.tracker.refused),
            # 1 = reached its receiver(s) once each, 2 = some receiver got it twice.
            "delivered_counts": {
                k: 2 if k in self.tracker.twice else 1 for k in self.tracker.delivered
            },
            "acked_ids": list(self.tracker.acked),
        }

    def matching_summary(self) -> dict[str, object]:
        """Offer received minus the later of the customer's arrival and the seat's freeing."""
        latencies = []
        for session_id, t_offer, seat_free in self.offers:
            arrival = self.arrival.get(session_id)
            ready = max(t for t in (arrival, seat_free) if t is not None) if arrival else seat_free
            if ready is not None:
                latencies.append(max(t_offer - ready, 0.0))
        return {"offers": len(self.offers), **summarize_ms(latencies)}

    async def close_all(self) -> None:
        sockets = [c.ws for c in self.customers if c.ws] + [a.ws for a in self.agents if a.ws]
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        for task in list(self.tasks):
            task.cancel()
