"""The channel layer (dayone_chat/layers.py) on the real Redis: one reader per process and groups
joined once per process. Two layer objects stand for two server processes (each has its own
process prefix); a scratch Redis that is killed stands for Redis going away."""

from __future__ import annotations

import asyncio
import random
import shutil
import uuid
from collections.abc import AsyncIterator

import pytest
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError

from dayone_chat import layers
from dayone_chat.layers import DayOneChannelLayer
from tests.test_faults_helpers import ScratchRedis, scratch_dir

pytestmark = pytest.mark.asyncio

RECEIVE_TIMEOUT_S = 10


def make_layer(prefix: str, url: str | None = None) -> DayOneChannelLayer:
    return DayOneChannelLayer(
        hosts=[{"address": url or settings.REDIS_URL}],
        prefix=prefix,
        capacity=1000,
        expiry=60,
    )


@pytest.fixture
async def two_processes() -> AsyncIterator[tuple[DayOneChannelLayer, DayOneChannelLayer]]:
    prefix = f"layertest{uuid.uuid4().hex[:8]}"
    a, b = make_layer(prefix), make_layer(prefix)
    yield a, b
    await a.flush()
    await b.close_pools()


async def redis_members(layer: DayOneChannelLayer, group: str) -> set[str]:
    connection = layer.connection(layer.consistent_hash(group))
    return {m.decode() for m in await connection.zrange(layer._group_key(group), 0, -1)}


async def receive(layer: DayOneChannelLayer, channel: str) -> dict:
    return await asyncio.wait_for(layer.receive(channel), RECEIVE_TIMEOUT_S)


async def nothing_more(layer: DayOneChannelLayer, channel: str) -> bool:
    try:
        await asyncio.wait_for(layer.receive(channel), 0.5)
    except TimeoutError:
        return True
    return False


async def test_each_member_gets_a_group_message_once_when_the_group_spans_processes(
    two_processes,
):
    a, b = two_processes
    a_channels = [await a.new_channel() for _ in range(50)]
    b_channels = [await b.new_channel() for _ in range(3)]
    for channel in a_channels:
        await a.group_add("queue", channel)
    for channel in b_channels:
        await b.group_add("queue", channel)

    # The group holds one member per process, whatever the number of local sockets.
    members = await redis_members(a, "queue")
    assert len(members) == 2
    assert a.local_members("queue") == frozenset(a_channels)

    await b.group_send("queue", {"type": "chat.event", "n": 1})
    for layer, channels in ((a, a_channels), (b, b_channels)):
        for channel in channels:
            assert (await receive(layer, channel)) == {"type": "chat.event", "n": 1}
    assert await nothing_more(a, a_channels[0])
    assert await nothing_more(b, b_channels[0])


async def test_messages_keep_their_order_when_group_and_direct_sends_interleave(two_processes):
    a, b = two_processes
    mine, other = await a.new_channel(), await a.new_channel()
    await a.group_add("session.x", mine)
    await a.group_add("session.x", other)
    for n in range(250):  # more than one batch of the reader
        if n % 3 == 0:
            await b.send(mine, {"type": "direct", "n": n})
        else:
            await b.group_send("session.x", {"type": "group", "n": n})
    got = [(await receive(a, mine))["n"] for _ in range(250)]
    assert got == list(range(250))
    got_other = [(await receive(a, other))["n"] for _ in range(250 - 84)]
    assert got_other == [n for n in range(250) if n % 3]


async def test_a_left_socket_gets_nothing_and_the_last_leave_removes_the_process(two_processes):
    a, b = two_processes
    stays, leaves = await a.new_channel(), await a.new_channel()
    await a.group_add("agent.7", stays)
    await a.group_add("agent.7", leaves)
    await a.group_discard("agent.7", leaves)
    await a.group_discard("agent.7", leaves)  # twice: no error, no effect
    await b.group_send("agent.7", {"type": "x"})
    assert (await receive(a, stays)) == {"type": "x"}
    assert await nothing_more(a, leaves)

    await a.group_discard("agent.7", stays)
    assert await redis_members(a, "agent.7") == set()
    await b.group_send("agent.7", {"type": "y"})
    assert await nothing_more(a, stays)


async def test_membership_matches_local_members_when_joins_and_leaves_race(two_processes):
    a, _ = two_processes
    channels = [await a.new_channel() for _ in range(30)]
    rng = random.Random(7)
    for _ in range(5):
        operations = [a.group_add("queue", c) for c in channels]
        operations += [a.group_discard("queue", c) for c in rng.sample(channels, 30)]
        rng.shuffle(operations)
        await asyncio.gather(*operations)
        local = a.local_members("queue")
        in_redis = await redis_members(a, "queue")
        assert (len(in_redis) == 1) == bool(local), (local, in_redis)
    await asyncio.gather(*(a.group_discard("queue", c) for c in channels))
    assert await redis_members(a, "queue") == set()
    assert a._guards == {}  # no lock kept for a group nobody is joining or leaving


async def test_the_process_rejoins_its_groups_when_its_membership_lapsed(
    two_processes, monkeypatch
):
    a, b = two_processes
    monkeypatch.setattr(layers, "REFRESH_S", 0.0)
    channel = await a.new_channel()
    await a.group_add("queue", channel)
    # The membership vanishes behind the process's back (expiry, a Redis restart).
    connection = a.connection(a.consistent_hash("queue"))
    await connection.delete(a._group_key("queue"))
    await b.send(channel, {"type": "wake"})  # lets the reader go round once
    assert (await receive(a, channel))["type"] == "wake"
    for _ in range(50):
        if await redis_members(a, "queue"):
            break
        await asyncio.sleep(0.1)
    await b.group_send("queue", {"type": "back"})
    assert (await receive(a, channel))["type"] == "back"


async def test_a_waiting_receive_fails_when_redis_goes_away():
    root = scratch_dir("layer-")
    redis = ScratchRedis(root)
    redis.start()
    try:
        layer = make_layer("layerfail", redis.url)
        channel = await layer.new_channel()
        await layer.group_add("queue", channel)
        waiting = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0.3)
        redis.kill()
        with pytest.raises((RedisConnectionError, OSError)):
            await asyncio.wait_for(waiting, RECEIVE_TIMEOUT_S)
    finally:
        redis.kill()
        shutil.rmtree(root, ignore_errors=True)


async def test_the_project_uses_this_layer():
    from channels.layers import get_channel_layer

    assert isinstance(get_channel_layer(), DayOneChannelLayer)
