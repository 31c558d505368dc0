"""A proposal of docs/performance.md, measured: the channels-redis core layer with a batched,
lock-free receive path for the process-specific channels every consumer uses.

Stock ``RedisChannelLayer.receive`` serialises every process's receives behind one asyncio lock
and pays, per message, an EVAL (restore the in-flight backup), a BZPOPMIN, a ZADD (back it up)
and a ZPOPMIN (drop the backup): four Redis round trips one after the other, plus two new tasks
and an ``asyncio.wait`` for every waiting consumer each time the lock changes hands. That caps a
process at a few hundred messages per second, and a broadcast to N local sockets wakes N
consumers that each re-create their tasks.

Here ONE reader task per process blocks on BZPOPMIN for the first message and takes up to
``BATCH - 1`` more with one ZPOPMIN, then hands each message to the local consumers named in it;
``receive()`` is a plain ``await queue.get()``. The in-flight backup is left out: it exists to
survive a cancelled receive, but a process-specific channel dies with its process anyway.
Sending, groups, capacity and expiry are the stock layer's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from channels_redis.core import RedisChannelLayer

BATCH = 100


class BatchedRedisChannelLayer(RedisChannelLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._readers: dict[str, asyncio.Task[None]] = {}

    async def receive(self, channel: str) -> dict[str, Any]:
        if "!" not in channel:
            return await super().receive(channel)
        real_channel = self.non_local_name(channel)
        reader = self._readers.get(real_channel)
        if reader is None or reader.done():
            self._readers[real_channel] = asyncio.get_running_loop().create_task(
                self._read(real_channel)
            )
        queue = self.receive_buffer[channel]
        message = await queue.get()
        if queue.empty():
            # As the stock layer does: no buffer kept for a channel with nothing in it.
            self.receive_buffer.pop(channel, None)
        return message

    async def _read(self, real_channel: str) -> None:
        index = self.consistent_hash(real_channel)
        key = self.prefix + real_channel
        while True:
            connection = self.connection(index)
            first = await connection.bzpopmin(key, timeout=self.brpop_timeout)
            if first is None:
                continue
            contents = [first[1]]
            if BATCH > 1:
                contents.extend(member for member, _ in await connection.zpopmin(key, BATCH - 1))
            for content in contents:
                message = self.deserialize(content)
                targets = message.pop("__asgi_channel__", None)
                if targets is None:
                    continue
                for target in targets if isinstance(targets, list) else [targets]:
                    self.receive_buffer[target].put_nowait(message)
