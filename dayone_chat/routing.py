"""WebSocket routes. Authentication and the Origin check wrap every socket (see chat.ws_auth)."""

from __future__ import annotations

from channels.routing import URLRouter

websocket_urlpatterns: list = []

websocket_application = URLRouter(websocket_urlpatterns)
