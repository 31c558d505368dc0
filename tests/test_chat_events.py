"""Publishing after commit (chat.events): a hand-off that returns at once, in publish order.

Over the real Redis channel layer; a wrapped layer stands in only where a test must hold a send
back or make it fail.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from typing import Any

import pytest
from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

from chat import events


class _GatedLayer:
    """The real layer; a ``group_send`` to ``gated`` waits until ``gate`` opens, one to
    ``failing`` raises."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.gate = threading.Event()
        self.gated: set[str] = set()
        self.failing: set[str] = set()
        self.finished: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        if group in self.failing:
            raise ConnectionError("Redis went away (a test's layer)")
        if group in self.gated:
            await asyncio.to_thread(self.gate.wait, 30)
        await self.real.group_send(group, message)
        self.finished.append(group)


@pytest.fixture
def layer():
    real = channel_layers[DEFAULT_CHANNEL_LAYER]
    gated = _GatedLayer(real)
    channel_layers.backends[DEFAULT_CHANNEL_LAYER] = gated
    try:
        yield gated
    finally:
        gated.gate.set()  # never leave the process's publisher stuck behind a test
        assert events.flush(30)
        channel_layers.backends[DEFAULT_CHANNEL_LAYER] = real


def _group() -> str:
    return f"test.events.{uuid.uuid4().hex}"


async def _listen(real: Any, *groups: str) -> str:
    channel = await real.new_channel()
    for group in groups:
        await real.group_add(group, channel)
    return channel


async def _receive(real: Any, channel: str, count: int, timeout: float = 30) -> list[dict]:  # noqa: ASYNC109
    got: list[dict] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            got.append((await real.receive(channel))["event"])
    return got


@pytest.mark.asyncio
async def test_events_reach_a_socket_in_publish_order_when_threads_publish_to_two_groups(layer):
    first, second = _group(), _group()
    channel = await _listen(layer.real, first, second)  # one socket in both, like a console
    threads, per_thread = 4, 250
    start = threading.Barrier(threads)

    def publish(thread: int) -> None:
        start.wait()
        for n in range(per_thread):
            group = first if n % 2 == 0 else second
            events.send_after_commit(group, {"type": "test", "thread": thread, "n": n})

    receiving = asyncio.ensure_future(_receive(layer.real, channel, threads * per_thread))
    await asyncio.gather(*(asyncio.to_thread(publish, t) for t in range(threads)))
    got = await receiving
    for thread in range(threads):
        assert [e["n"] for e in got if e["thread"] == thread] == list(range(per_thread))


@pytest.mark.asyncio
async def test_publishing_returns_before_the_send_completes_when_the_layer_is_slow(layer):
    group = _group()
    layer.gated.add(group)
    channel = await _listen(layer.real, group)
    returned = await asyncio.to_thread(events.send_after_commit, group, {"type": "test", "n": 1})
    assert returned is None  # the caller is back while the send waits at the gate
    assert layer.finished == []
    assert not await asyncio.to_thread(events.flush, 0.2)
    layer.gate.set()
    assert await asyncio.to_thread(events.flush, 30)
    assert layer.finished == [group]
    assert await _receive(layer.real, channel, 1) == [{"type": "test", "n": 1}]


@pytest.mark.asyncio
async def test_later_events_still_go_out_when_a_send_fails(layer, caplog):
    bad, good = _group(), _group()
    layer.failing.add(bad)
    channel = await _listen(layer.real, good)
    with caplog.at_level(logging.ERROR, logger="chat.events"):
        await asyncio.to_thread(events.send_after_commit, bad, {"type": "lost"})
        await asyncio.to_thread(events.send_after_commit, good, {"type": "kept"})
        assert await asyncio.to_thread(events.flush, 30)
    assert [r.getMessage() for r in caplog.records] == [f"could not publish lost to {bad}"]
    assert await _receive(layer.real, channel, 1) == [{"type": "kept"}]


@pytest.mark.asyncio
async def test_flush_returns_when_every_published_event_is_in_the_layer(layer):
    group = _group()
    channel = await _listen(layer.real, group)
    layer.gated.add(group)

    def publish_and_flush() -> bool:
        for n in range(50):
            events.send_after_commit(group, {"type": "test", "n": n})
        threading.Timer(0.3, layer.gate.set).start()
        return events.flush(30)

    assert await asyncio.to_thread(publish_and_flush)
    assert layer.finished == [group] * 50  # all sent when flush returned, none still queued
    got = await _receive(layer.real, channel, 50)
    assert [e["n"] for e in got] == list(range(50))


@pytest.mark.asyncio
async def test_later_events_still_go_out_when_a_send_hangs(layer, caplog, monkeypatch):
    monkeypatch.setattr(events, "SEND_TIMEOUT_S", 0.5)
    stuck, good = _group(), _group()
    layer.gated.add(stuck)  # never opened: as a Redis that does not answer
    channel = await _listen(layer.real, good)
    with caplog.at_level(logging.ERROR, logger="chat.events"):
        await asyncio.to_thread(events.send_after_commit, stuck, {"type": "stuck"})
        await asyncio.to_thread(events.send_after_commit, good, {"type": "kept"})
        assert await asyncio.to_thread(events.flush, 30)
    assert [r.getMessage() for r in caplog.records] == [f"could not publish stuck to {stuck}"]
    assert layer.finished == [good]
    assert await _receive(layer.real, channel, 1) == [{"type": "kept"}]
