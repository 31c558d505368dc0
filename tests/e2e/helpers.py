"""Helpers shared by the in-process socket tests (WebsocketCommunicator) and the e2e tests."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from rest_framework_simplejwt.tokens import AccessToken

Frame = dict[str, Any]


def token_for(user: AbstractBaseUser) -> str:
    return str(AccessToken.for_user(user))


def new_id() -> str:
    return str(uuid.uuid4())


def adb(func: Callable[..., Any]) -> Callable[..., Any]:
    """Call sync (ORM, service) code from an async test.

    Publishing after commit only hands the events to this process's publisher
    (chat.events); the call returns once they reached the layer too, so a test can listen
    right after it, as a client that sees the service's answer would.
    """

    def call_and_flush(*args: Any, **kwargs: Any) -> Any:
        from chat import events

        try:
            return func(*args, **kwargs)
        finally:
            events.flush(10.0)

    return database_sync_to_async(call_and_flush)


def _delete_layer_keys() -> None:
    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{config['prefix']}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


async def flush_layer() -> None:
    """Forget every group and channel of this run's layer prefix (members left by earlier
    tests). Deletes the keys directly: ``layer.flush()`` would close connection pools that
    belong to other event loops (the publisher's)."""
    await asyncio.to_thread(_delete_layer_keys)


class Socket:
    """A WebsocketCommunicator with frame-level helpers and the frames it has seen."""

    def __init__(self, comm: WebsocketCommunicator) -> None:
        self.comm = comm
        self.seen: list[Frame] = []
        self.close_code: int | None = None

    @classmethod
    async def open(
        cls,
        application: Any,
        path: str,
        *,
        user: AbstractBaseUser | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> Socket:
        all_headers = list(headers or [])
        if user is not None:
            all_headers.append((b"authorization", f"Bearer {token_for(user)}".encode()))
        comm = WebsocketCommunicator(application, path, headers=all_headers)
        connected, _ = await comm.connect(timeout=10)
        assert connected, "the handshake was not completed"
        return cls(comm)

    async def recv(self, timeout: float = 5.0) -> Frame:  # noqa: ASYNC109
        output = await self.comm.receive_output(timeout)
        if output["type"] == "websocket.close":
            self.close_code = output.get("code")
            raise AssertionError(f"socket closed with {self.close_code}")
        frame = json.loads(output["text"])
        self.seen.append(frame)
        return frame

    async def expect(
        self,
        kind: str,
        where: Callable[[Frame], bool] | None = None,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> Frame:
        deadline = time.monotonic() + timeout
        skipped = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {kind!r} frame within {timeout}s; got {skipped!r}")
            try:
                frame = await self.recv(timeout=remaining)
            except TimeoutError:
                continue
            if frame.get("type") == kind and (where is None or where(frame)):
                return frame
            skipped.append(frame)

    async def drain(self, quiet: float = 0.3) -> list[Frame]:
        frames = []
        while True:
            if await self.comm.receive_nothing(timeout=quiet, interval=0.02):
                return frames
            frames.append(await self.recv())

    async def closed_with(self, timeout: float = 5.0) -> int | None:  # noqa: ASYNC109
        output = await self.comm.receive_output(timeout)
        while output["type"] != "websocket.close":
            output = await self.comm.receive_output(timeout)
        return output.get("code")

    async def send(self, frame: Frame) -> None:
        await self.comm.send_json_to(frame)

    async def send_text(self, text: str) -> None:
        await self.comm.send_to(text_data=text)

    async def close(self) -> None:
        await self.comm.disconnect(timeout=10)


async def refused_with(
    application: Any,
    path: str,
    *,
    user: AbstractBaseUser | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> int | None:
    """Open a socket that the server should close at once; its close code."""
    all_headers = list(headers or [])
    if user is not None:
        all_headers.append((b"authorization", f"Bearer {token_for(user)}".encode()))
    comm = WebsocketCommunicator(application, path, headers=all_headers)
    connected, code = await comm.connect(timeout=10)
    if not connected:
        return code
    output = await comm.receive_output(10)
    while output["type"] != "websocket.close":
        output = await comm.receive_output(10)
    await comm.disconnect(timeout=10)
    return output.get("code")
