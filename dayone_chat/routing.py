"""WebSocket routes. Authentication and the Origin check wrap every socket (see chat.ws_auth)."""

from __future__ import annotations

from typing import Any

from channels.routing import URLRouter
from django.urls import re_path

from agents.consumers import AgentConsumer
from chat.routing import websocket_urlpatterns as chat_routes
from chat.ws_auth import CLOSE_NOT_FOUND, WebsocketAuthMiddleware, refuse


async def no_such_socket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Any other path: close with 4404 rather than an opaque failed handshake."""
    await refuse(receive, send, CLOSE_NOT_FOUND)


websocket_urlpatterns: list = [
    *chat_routes,
    re_path(r"^ws/agent/$", AgentConsumer.as_asgi()),
    re_path(r"", no_such_socket),
]

websocket_application = WebsocketAuthMiddleware(URLRouter(websocket_urlpatterns))
