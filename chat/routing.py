"""WebSocket routes of the chat app: the customer's socket on one session."""

from django.urls import re_path

from chat.consumers import CustomerConsumer

websocket_urlpatterns = [
    re_path(
        r"^ws/sessions/(?P<session_id>[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
        r"[0-9a-fA-F]{4}-?[0-9a-fA-F]{12})/$",
        CustomerConsumer.as_asgi(),
    ),
]
