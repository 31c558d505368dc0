"""What every target shares: the delivery tracker, the Poisson sender, socket helpers, and the
pair driver that runs the two floors.

All clients live in this one process, so one monotonic clock times every message: ``t0`` is read
just before the sender's ``send``, the latency is taken when the other side's reader has parsed
the frame. ``client_msg_id`` maps a received frame back to its ``t0``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.stats import Sampler, summarize_ms

now = time.monotonic


async def open_socket(url: str, headers: dict[str, str] | None = None) -> ClientConnection:
    # No client pings (2,000 sockets' keepalives are not part of the load) and no compression
    # (none of the servers compresses).
    return await connect(
        url,
        additional_headers=headers,
        compression=None,
        max_queue=None,
        open_timeout=60,
        ping_interval=None,
        close_timeout=2,
    )


def body_text(rng: random.Random) -> str:
    """A chat line of 20-200 characters, the same distribution for every target."""
    words = ["order", "refund", "thanks", "parcel", "tracking", "card", "please", "today", "ok"]
    text = ""
    length = rng.randint(20, 200)
    while len(text) < length:
        text += rng.choice(words) + " "
    return text[:length]


@dataclass
class Tracker:
    """Every message sent, when, in which load step; and what the other side received."""

    t0: dict[str, float] = field(default_factory=dict)
    step_of: dict[str, int] = field(default_factory=dict)
    delivered: Counter[str] = field(default_factory=Counter)  # distinct receivers
    per_receiver: Counter[tuple[str, str]] = field(default_factory=Counter)
    twice: set[str] = field(default_factory=set)  # some receiver got it more than once
    acked: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)
    latencies: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    sent_at: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    # Latencies of the last progress interval, for the live line.
    recent: list[float] = field(default_factory=list)
    delivered_at: list[float] = field(default_factory=list)

    def new_id(self) -> str:
        return str(uuid.uuid4())

    def sent(self, cmid: str, step: int, t0: float) -> None:
        self.t0[cmid] = t0
        self.step_of[cmid] = step
        self.sent_at[step].append(t0)

    def received(self, cmid: str | None, receiver: str = "") -> None:
        """``receiver`` names the client that got it: a message that reaches two different
        agents (the first one's offer expired, the next one reads the transcript) is delivered
        twice but duplicated to nobody; the same client getting it twice is a duplicate."""
        if cmid is None or cmid not in self.t0:
            return
        self.per_receiver[(cmid, receiver)] += 1
        if self.per_receiver[(cmid, receiver)] > 1:
            self.twice.add(cmid)
            return
        self.delivered[cmid] += 1
        if self.delivered[cmid] == 1:
            self.delivered_at.append(now())
            latency = now() - self.t0[cmid]
            self.latencies[self.step_of[cmid]].append(latency)
            self.recent.append(latency)

    def pending(self) -> int:
        return sum(1 for cmid in self.t0 if cmid not in self.delivered and cmid not in self.refused)

    def totals(self) -> dict[str, int]:
        sent = len(self.t0)
        delivered = sum(1 for cmid in self.t0 if self.delivered[cmid] >= 1)
        return {
            "sent": sent,
            "delivered": delivered,
            "refused": len(self.refused),
            "not_delivered": sent - delivered - len(self.refused),
            "delivered_twice": len(self.twice),
        }

    def take_recent(self) -> dict[str, float | int | None]:
        values, self.recent = self.recent, []
        return summarize_ms(values)


@dataclass
class StepResult:
    rate: float
    duration: float
    start: float
    end: float
    lag: list[float]


async def poisson(
    rate: float, duration: float, rng: random.Random, fire: Callable[[], Awaitable[bool]]
) -> list[float]:
    """Call ``fire`` at the moments of a Poisson process; returns how late each call was.

    The lag is reported: when the load generator itself falls behind, the offered load is lower
    than asked, and the run says so instead of hiding it.
    """
    start = now()
    due = start
    lag: list[float] = []
    while True:
        due += rng.expovariate(rate)
        if due - start > duration:
            break
        delay = due - now()
        if delay > 0:
            await asyncio.sleep(delay)
        lag.append(max(0.0, -delay))
        await fire()
    remaining = start + duration - now()
    if remaining > 0:
        await asyncio.sleep(remaining)
    return lag


async def gather_limited(coros: list[Awaitable[object]], limit: int) -> list[object]:
    gate = asyncio.Semaphore(limit)

    async def one(coro: Awaitable[object]) -> object:
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


async def wait_drained(tracker: Tracker, seconds: float, longest: float = 120) -> float:
    """Wait for messages still in flight: while they keep arriving (a server working off a
    backlog), up to ``longest`` s; stop when nothing arrived for ``seconds``. Returns how long
    it waited, which the report shows: a long drain is a backlog, not a loss."""
    started = last_progress = now()
    pending = tracker.pending()
    while pending and now() - last_progress < seconds and now() - started < longest:
        await asyncio.sleep(0.2)
        still = tracker.pending()
        if still < pending:
            last_progress = now()
        pending = still
    return now() - started


class Progress:
    """One line every few seconds: what runs, and the latency of the last interval."""

    def __init__(self, label: str, tracker: Tracker, status: Callable[[], str]) -> None:
        self.label = label
        self.tracker = tracker
        self.status = status
        self.started = now()

    async def run(self, every: float = 5.0) -> None:
        while True:
            await asyncio.sleep(every)
            recent = self.tracker.take_recent()
            print(
                f"  [{self.label} {now() - self.started:6.1f}s] {self.status()} | "
                f"last {every:.0f}s: {recent['count']} delivered, "
                f"p50 {recent['p50_ms']} ms, p99 {recent['p99_ms']} ms",
                flush=True,
            )


# --- the floors ---------------------------------------------------------------------------------


async def run_pairs(
    *,
    label: str,
    url_of: Callable[[str, str], str],
    pairs: int,
    idle: int,
    steps: list[tuple[float, float]],
    seed: int,
    sampler: Sampler,
    server_names: list[str],
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, object]:
    """Drive a floor: ``pairs`` pairs of sockets (the active chats), ``idle`` sockets that only
    listen (the waiting customers), the same Poisson message steps as the real system."""
    rng = random.Random(seed)
    tracker = Tracker()
    sockets: dict[tuple[int, str], ClientConnection] = {}
    readers: list[asyncio.Task[None]] = []

    async def reader(ws: ClientConnection, name: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                tracker.received(json.loads(frame).get("client_msg_id"), name)

    async def open_one(pair: int, side: str) -> None:
        ws = await open_socket(url_of(f"p{pair}", side))
        sockets[(pair, side)] = ws
        readers.append(asyncio.create_task(reader(ws, f"{pair}{side}")))

    # Warm the server (first imports, first layer connections) before the memory baseline.
    await gather_limited([open_one(-1, "a"), open_one(-1, "b")], 2)
    await asyncio.sleep(0.5)
    rss_before = sampler.rss(server_names)
    opened_before = len(sockets)
    print(f"  [{label}] opening {2 * pairs + idle} sockets", flush=True)
    await gather_limited(
        [open_one(p, s) for p in range(pairs) for s in ("a", "b")]
        + [open_one(pairs + i, "a") for i in range(idle)],
        100,
    )
    await asyncio.sleep(2)
    rss_after = sampler.rss(server_names)
    opened = len(sockets) - opened_before
    turn = [rng.random() < 0.5 for _ in range(pairs)]
    step_index = 0

    async def fire() -> bool:
        pair = rng.randrange(pairs)
        side = "a" if turn[pair] else "b"
        turn[pair] = not turn[pair]
        cmid = tracker.new_id()
        frame = json.dumps({"type": "message.send", "client_msg_id": cmid, "body": body_text(rng)})
        tracker.sent(cmid, step_index, now())
        try:
            await sockets[(pair, side)].send(frame)
        except ConnectionClosed:
            tracker.refused[cmid] = "socket_closed"
        return True

    progress = Progress(label, tracker, lambda: f"{len(sockets)} sockets")
    progress_task = asyncio.create_task(progress.run())
    results: list[StepResult] = []
    drain_s = 0.0
    try:
        for step_index, (rate, duration) in enumerate(steps):
            print(f"  [{label}] step {step_index + 1}: {rate:g} msg/s for {duration:g} s")
            if on_step is not None:
                on_step(step_index, duration)
            start = now()
            lag = await poisson(rate, duration, rng, fire)
            results.append(StepResult(rate, duration, start, now(), lag))
        drain_s = await wait_drained(tracker, 10)
    finally:
        progress_task.cancel()
        for ws in sockets.values():
            with contextlib.suppress(Exception):
                await ws.close()
        for task in readers:
            task.cancel()
    return {
        "sockets": len(sockets),
        "idle_socket_bytes": (rss_after - rss_before) / max(opened, 1),
        "steps": step_summaries(results, tracker, sampler),
        "totals": tracker.totals(),
        "drain_s": round(drain_s, 1),
    }


def step_summaries(
    results: list[StepResult], tracker: Tracker, sampler: Sampler
) -> list[dict[str, object]]:
    out = []
    for index, step in enumerate(results):
        lat = tracker.latencies.get(index, [])
        elapsed = step.end - step.start
        # Throughput is what arrived during the step (a backlog delivered later is not).
        arrived = sum(1 for t in tracker.delivered_at if step.start <= t <= step.end)
        out.append(
            {
                "rate": step.rate,
                "duration_s": round(elapsed, 1),
                "sent": len(tracker.sent_at.get(index, [])),
                "delivered": len(lat),
                "delivered_per_s": round(arrived / elapsed, 1) if elapsed else None,
                "latency": summarize_ms(lat),
                "latencies_ms": [round(v * 1000, 3) for v in lat],
                "generator_lag": summarize_ms(step.lag),
                "processes": sampler.window(step.start, step.end),
            }
        )
    return out
