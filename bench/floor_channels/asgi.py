"""ASGI app of the Channels floor: ``daphne bench.floor_channels.asgi:application``."""

from __future__ import annotations

import os

import django

os.environ["DJANGO_SETTINGS_MODULE"] = "bench.floor_channels.settings"
django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


class RelayConsumer(AsyncWebsocketConsumer):
    """Joins its pair's group; forwards every frame to the group; the sender skips its own."""

    async def connect(self) -> None:
        self.group = f"pair.{self.scope['url_route']['kwargs']['pair']}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.channel_layer.group_send(
            self.group, {"type": "relay", "text": text_data, "sender": self.channel_name}
        )

    async def relay(self, event: dict[str, str]) -> None:
        if event["sender"] != self.channel_name:
            await self.send(text_data=event["text"])


application = ProtocolTypeRouter(
    {"websocket": URLRouter([path("pair/<str:pair>/<str:side>", RelayConsumer.as_asgi())])}
)
