"""Authentication and the Origin check for every WebSocket.

Credentials, in this order (the first one present decides; a bad one is not retried with the next):
1. ``Authorization: Bearer <access>`` (mobile apps): our JWT, or DayOne's RS256 token;
2. ``?ticket=<t>`` from ``POST /api/auth/ws-ticket``: single use, 30 s, kept in Redis;
3. the Django session cookie of a logged-in page (the console, the customer web page).

A browser always sends ``Origin``; when present it must be in ``WS_ALLOWED_ORIGINS`` exactly, or,
with that list empty, name the host the request came to. That stops another site from opening a
socket with our cookie (cross-site WebSocket hijacking). Native clients send no Origin.

A refused socket is accepted and closed at once with an application close code, because a
handshake refused before ``accept`` reaches the client as a bare HTTP 403 it cannot tell apart
from anything else: 4401 without valid credentials, 4403 for a foreign Origin.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from http.cookies import CookieError
from importlib import import_module
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis.asyncio as aioredis
from asgiref.typing import ASGIReceiveCallable, ASGISendCallable
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user, get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.http import parse_cookie
from rest_framework.exceptions import AuthenticationFailed

from chat.api.authentication import TICKET_KEY_PREFIX, user_from_bearer
from chat.errors import UNAVAILABLE

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_BAD_REQUEST = 4400
CLOSE_TRY_AGAIN = 4503  # the database or Redis is briefly away: reconnect in a moment

Scope = dict[str, Any]

# One asyncio Redis client per event loop: a client is bound to the loop that created it (tests
# run each case in a fresh loop; daphne has one).
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
    weakref.WeakKeyDictionary()
)


def _aredis() -> aioredis.Redis:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = aioredis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
        _clients[loop] = client
    return client


async def ticket_consume(ticket: str) -> int | None:
    """The user id the ticket was issued to, or None; a ticket works once (GETDEL is atomic)."""
    if not ticket or len(ticket) > 100:
        return None
    try:
        value = await _aredis().getdel(TICKET_KEY_PREFIX + ticket)
    except (aioredis.RedisError, OSError):
        logger.exception("could not read a WebSocket ticket")
        return None
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _headers(scope: Scope) -> dict[bytes, bytes]:
    # Header names arrive lower-cased (ASGI); a repeated header keeps its last value.
    return {name: value for name, value in scope.get("headers", [])}


def _normalise_origin(value: str) -> str:
    return value.strip().rstrip("/").lower()


def origin_allowed(origin: str, host: str | None) -> bool:
    allowed = settings.WS_ALLOWED_ORIGINS
    if allowed:
        return _normalise_origin(origin) in {_normalise_origin(o) for o in allowed}
    # Same host: compare host[:port]; the scheme is the proxy's business (TLS ends there).
    if not host:
        return False
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(netloc) and netloc.lower() == host.strip().lower()


def _active_user_by_id(user_id: int) -> AbstractBaseUser | None:
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    return user


def _user_from_bearer_or_none(raw: str) -> AbstractBaseUser | None:
    try:
        user = user_from_bearer(raw)
    except AuthenticationFailed:
        return None
    return user if user.is_active else None


def _user_from_session_key(session_key: str) -> AbstractBaseUser | None:
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    # django.contrib.auth.get_user reads only ``request.session``; it checks the session's auth
    # hash, so a password change logs the socket out as it does the pages.
    user = get_user(SimpleNamespace(session=store))  # type: ignore[arg-type]
    return user if user.is_authenticated else None


async def authenticate_scope(scope: Scope) -> tuple[AbstractBaseUser | None, str]:
    """(user or None, how); ``how`` is "bearer", "ticket", "session" or "none"."""
    headers = _headers(scope)
    authorization = headers.get(b"authorization")
    if authorization is not None:
        scheme, _, raw = authorization.decode("latin1").partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            return None, "bearer"
        user = await database_sync_to_async(_user_from_bearer_or_none)(raw.strip())
        return user, "bearer"
    query = parse_qs(scope.get("query_string", b"").decode("latin1"))
    if "ticket" in query:
        user_id = await ticket_consume(query["ticket"][0])
        if user_id is None:
            return None, "ticket"
        return await database_sync_to_async(_active_user_by_id)(user_id), "ticket"
    cookie_header = headers.get(b"cookie")
    if cookie_header is not None:
        try:
            cookies = parse_cookie(cookie_header.decode("latin1"))
        except CookieError:
            cookies = {}
        session_key = cookies.get(settings.SESSION_COOKIE_NAME)
        if session_key:
            return await database_sync_to_async(_user_from_session_key)(session_key), "session"
    return None, "none"


async def refuse(receive: ASGIReceiveCallable, send: ASGISendCallable, code: int) -> None:
    """Complete the handshake and close at once with ``code`` (see the module docstring)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
    await send({"type": "websocket.close", "code": code, "reason": ""})


class WebsocketAuthMiddleware:
    """Puts ``user`` (an authenticated user) and ``auth_method`` into the scope, or refuses."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)
        headers = _headers(scope)
        origin = headers.get(b"origin")
        if origin is not None:
            host = headers.get(b"host")
            if not origin_allowed(origin.decode("latin1"), host.decode("latin1") if host else None):
                return await refuse(receive, send, CLOSE_FORBIDDEN)
        try:
            user, how = await authenticate_scope(scope)
        except UNAVAILABLE as exc:
            logger.warning("socket refused: %s", type(exc).__name__)
            return await refuse(receive, send, CLOSE_TRY_AGAIN)
        if user is None:
            return await refuse(receive, send, CLOSE_UNAUTHENTICATED)
        return await self.app(dict(scope, user=user, auth_method=how), receive, send)
