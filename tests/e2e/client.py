"""A small WebSocket client over the ``websockets`` library, for tests and benchmarks.

``expect`` reads frames until one matches and keeps the others (``seen``), so a test can assert
on everything a client received; an optional :class:`Transcript` records both directions of
every client with a timestamp (docs/protocol.md shows one).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

Frame = dict[str, Any]


class WsClosed(AssertionError):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"socket closed with code {code} {reason!r}")
        self.code = code
        self.reason = reason


@dataclass
class Transcript:
    """Frames of several clients in the order they were sent or received."""

    started: float = field(default_factory=time.monotonic)
    lines: list[tuple[float, str, str, Frame]] = field(default_factory=list)

    def add(self, who: str, direction: str, frame: Frame) -> None:
        self.lines.append((time.monotonic() - self.started, who, direction, frame))

    def render(self) -> str:
        out = []
        for at, who, direction, frame in self.lines:
            arrow = "→ server" if direction == "out" else "← server"
            out.append(f"{at * 1000:8.1f} ms  {who:<9} {arrow}  {json.dumps(frame)}")
        return "\n".join(out)


class WsClient:
    def __init__(self, conn: ClientConnection, *, name: str, transcript: Transcript | None):
        self.conn = conn
        self.name = name
        self.transcript = transcript
        self.seen: list[Frame] = []
        self._buffer: list[Frame] = []

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        origin: str | None = None,
        name: str = "client",
        transcript: Transcript | None = None,
        open_timeout: float = 10.0,
    ) -> WsClient:
        extra = dict(headers or {})
        if token:
            extra["Authorization"] = f"Bearer {token}"
        conn = await connect(
            url,
            additional_headers=extra,
            origin=origin,  # type: ignore[arg-type]
            open_timeout=open_timeout,
            max_size=2**20,
        )
        return cls(conn, name=name, transcript=transcript)

    async def __aenter__(self) -> WsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, frame: Frame) -> None:
        if self.transcript is not None:
            self.transcript.add(self.name, "out", frame)
        await self.conn.send(json.dumps(frame))

    async def send_raw(self, data: str | bytes) -> None:
        await self.conn.send(data)

    async def recv(self, timeout: float = 10.0) -> Frame:  # noqa: ASYNC109
        if self._buffer:
            return self._buffer.pop(0)
        try:
            raw = await asyncio.wait_for(self.conn.recv(), timeout)
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            raise WsClosed(rcvd.code if rcvd else None, rcvd.reason if rcvd else "") from None
        frame = json.loads(raw)
        self.seen.append(frame)
        if self.transcript is not None:
            self.transcript.add(self.name, "in", frame)
        return frame

    async def expect(
        self,
        kind: str,
        where: Callable[[Frame], bool] | None = None,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> Frame:
        """The next frame of type ``kind`` (matching ``where``); frames before it are skipped."""
        deadline = time.monotonic() + timeout
        skipped: list[Frame] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.name}: no {kind!r} frame within {timeout}s; got {skipped!r}"
                )
            try:
                frame = await self.recv(timeout=remaining)
            except TimeoutError:
                continue
            if frame.get("type") == kind and (where is None or where(frame)):
                return frame
            skipped.append(frame)

    async def drain(self, quiet: float = 0.3) -> list[Frame]:
        """Every frame that arrives until the socket stays quiet for ``quiet`` seconds."""
        frames = []
        while True:
            try:
                frames.append(await self.recv(timeout=quiet))
            except TimeoutError:
                return frames

    async def closed_with(self, timeout: float = 10.0) -> int | None:  # noqa: ASYNC109
        """Wait for the server to close the socket; its close code."""
        try:
            while True:
                await self.recv(timeout=timeout)
        except WsClosed as exc:
            return exc.code

    async def close(self) -> None:
        await self.conn.close()
