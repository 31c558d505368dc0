"""The channel layer: channels-redis' core layer with a cheaper receive path and group fan-out.

Two changes to ``channels_redis.core.RedisChannelLayer``, both measured by the benchmark
(docs/performance.md, proposals P2 and P5); sending, capacity, expiry and the Redis data layout
are the stock layer's, so any process running the stock layer (a Celery worker) interoperates.

**One reader per process.** Every consumer of a process has a process-specific channel
(``specific.<process>!<id>``), and all of them share one Redis sorted set. The stock
``receive`` serialises the process's consumers behind one asyncio lock and pays four Redis
round trips per message (restore an in-flight backup, ``BZPOPMIN``, back the message up, drop
the backup), plus new tasks for every waiting consumer whenever the lock changes hands. Here one
task per event loop blocks on ``BZPOPMIN`` and takes up to ``BATCH - 1`` more messages with one
``ZPOPMIN``, then puts each into the local buffers it names; ``receive`` is ``queue.get()``. The
in-flight backup is left out: it lets a cancelled receive put its message back, but a
process-specific channel dies with its process anyway. When Redis fails under the reader, every
consumer blocked in ``receive`` gets the error, as with the stock layer (our sockets then close
with 4503, "try again later").

**Groups joined once per process.** A group's Redis set holds, for this process, ONE member
(``specific.<process>!group.<name>``) whatever the number of local consumers in it; the layer
keeps the local members in memory and the reader hands a group message to each of them. A
``group_send`` to the waiting-customer queue group then reads and addresses O(processes) members
instead of O(waiting sockets), and the message is not inflated by a list of every recipient.
Each join refreshes the process's membership (``ZADD``), under a per-group lock that also orders
it against the leave of the last local member; the reader refreshes every local membership once
per ``REFRESH_S`` so a long-lived membership never reaches ``group_expiry``. A process that dies
without leaving stays a member until ``group_expiry``: messages to it wait in its (expiring,
capacity-bounded) sorted set, as they would for a stock consumer that died.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any, Final

from channels_redis.core import RedisChannelLayer

logger = logging.getLogger(__name__)

BATCH: Final = 100
# How often the reader re-adds this process to the groups it has local members in. Far below
# group_expiry (a day by default) so no membership can lapse while it is used.
REFRESH_S: Final = 600.0
_GROUP_MARK: Final = "group."

Message = dict[str, Any]


class _ReaderFailed:
    """Put into a consumer's buffer when the reader died: that consumer's receive raises."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class DayOneChannelLayer(RedisChannelLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._local_prefix = f"specific.{self.client_prefix}!"
        self._readers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]]
        self._readers = weakref.WeakKeyDictionary()
        # group -> this process's channels in it; changed only under the group's guard.
        self._members: dict[str, set[str]] = {}
        # group -> [its lock, callers holding or waiting for it]; dropped when nobody uses it.
        self._guards: dict[str, list[Any]] = {}

    # --- receiving ----------------------------------------------------------------------------

    async def receive(self, channel: str) -> Message:
        if not channel.startswith(self._local_prefix):
            return await super().receive(channel)
        # (No name check per receive: the name came from new_channel, and the regex showed in
        # the profile.)
        loop = asyncio.get_running_loop()
        reader = self._readers.get(loop)
        if reader is None or reader.done():
            self._readers[loop] = loop.create_task(self._read(), name="channel-layer-reader")
        queue = self.receive_buffer[channel]
        item = await queue.get()
        if queue.empty():
            # As the stock layer does: no buffer is kept for a channel with nothing in it.
            self.receive_buffer.pop(channel, None)
        if isinstance(item, _ReaderFailed):
            raise item.error
        return item

    async def _read(self) -> None:
        key = self.prefix + self._local_prefix
        index = self.consistent_hash(self._local_prefix)
        refreshed = time.monotonic()
        try:
            while True:
                connection = self.connection(index)
                first = await connection.bzpopmin(key, timeout=self.brpop_timeout)
                if first is not None:
                    contents = [first[1]]
                    contents.extend(m for m, _ in await connection.zpopmin(key, BATCH - 1))
                    for content in contents:
                        self._deliver(self.deserialize(content))
                if time.monotonic() - refreshed > REFRESH_S:
                    refreshed = time.monotonic()
                    await self._refresh_memberships()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Redis went away (or answered nonsense): every consumer waiting here must learn it,
            # as each would have from its own BZPOPMIN with the stock layer.
            logger.warning("channel layer reader stopped: %s", type(exc).__name__)
            failure = _ReaderFailed(exc)
            for queue in list(self.receive_buffer.values()):
                queue.put_nowait(failure)
            # The next receive starts a new reader (and fails again while Redis is away).

    def _deliver(self, message: Message) -> None:
        targets = message.pop("__asgi_channel__", None)
        if targets is None:
            return
        for target in targets if isinstance(targets, list) else [targets]:
            suffix = target[len(self._local_prefix) :]
            if suffix.startswith(_GROUP_MARK):
                # One copy for the process, handed to every local member. Consumers only read
                # the message, so they share it.
                for channel in self._members.get(suffix[len(_GROUP_MARK) :], ()):
                    self.receive_buffer[channel].put_nowait(message)
            else:
                self.receive_buffer[target].put_nowait(message)

    # --- groups -------------------------------------------------------------------------------

    def _process_member(self, group: str) -> str | None:
        """This process's member name for ``group`` (None if the name would be too long)."""
        name = f"{self._local_prefix}{_GROUP_MARK}{group}"
        try:
            self.require_valid_channel_name(name)
        except TypeError:
            return None
        return name

    @contextlib.asynccontextmanager
    async def _guard(self, group: str) -> AsyncIterator[None]:
        """Orders one group's joins and leaves in this process, so the Redis membership always
        matches whether the group has local members (a join racing the last leave)."""
        entry = self._guards.get(group)
        if entry is None:
            entry = self._guards[group] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._guards[group]

    async def group_add(self, group: str, channel: str) -> None:
        member = self._process_member(group) if channel.startswith(self._local_prefix) else None
        if member is None:
            await super().group_add(group, channel)
            return
        assert self.require_valid_group_name(group), "Group name not valid"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        async with self._guard(group):
            members = self._members.setdefault(group, set())
            members.add(channel)
            try:
                # Every join refreshes the membership: after a Redis restart the first new
                # socket puts the process back in the group.
                await super().group_add(group, member)
            except BaseException:
                self._forget(group, channel)
                raise

    async def group_discard(self, group: str, channel: str) -> None:
        member = self._process_member(group) if channel.startswith(self._local_prefix) else None
        if member is None:
            await super().group_discard(group, channel)
            return
        async with self._guard(group):
            if channel not in self._members.get(group, ()):
                return
            self._forget(group, channel)
            if group not in self._members:
                # The last local member left: the process stops receiving the group.
                await super().group_discard(group, member)

    def _forget(self, group: str, channel: str) -> None:
        members = self._members.get(group)
        if members is not None:
            members.discard(channel)
            if not members:
                del self._members[group]

    async def _refresh_memberships(self) -> None:
        for group in list(self._members):
            member = self._process_member(group)
            if member is None:
                continue
            async with self._guard(group):
                if group in self._members:
                    await super().group_add(group, member)

    def local_members(self, group: str) -> frozenset[str]:
        """This process's channels in ``group`` (for tests and diagnostics)."""
        return frozenset(self._members.get(group, ()))

    async def close_pools(self) -> None:
        # This loop's reader holds a pooled connection: stop it first, quietly.
        reader = self._readers.pop(asyncio.get_running_loop(), None)
        if reader is not None and not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        await super().close_pools()

    async def flush(self) -> None:
        await super().flush()
        self._members.clear()
