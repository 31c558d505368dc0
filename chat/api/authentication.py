"""Who is calling: our own JWTs, DayOne's RS256 tokens, and single-use WebSocket tickets.

Shared by the REST views and the socket middleware (chat.ws_auth), so both accept exactly the
same credentials.
"""

from __future__ import annotations

import secrets
from typing import Any

import jwt
import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from rest_framework.request import Request
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken, TokenError

# Users provisioned from DayOne tokens are named "dayone:<sub>". Django's username validator
# refuses ":", so no locally created account (e.g. "agent1") can ever be taken over by a DayOne
# token whose subject happens to share its name.
DAYONE_USERNAME_PREFIX = "dayone:"
TICKET_KEY_PREFIX = "wsticket:"


def is_dayone_token(raw: str) -> bool:
    """A token for DayOne's key: RS256-signed, and only when a public key is configured."""
    if not settings.DAYONE_JWT_PUBLIC_KEY:
        return False
    try:
        return jwt.get_unverified_header(raw).get("alg") == "RS256"
    except jwt.InvalidTokenError:
        return False


def _dayone_public_key() -> str:
    # Environments hold PEM keys on one line with literal "\n"s more often than not.
    return settings.DAYONE_JWT_PUBLIC_KEY.replace("\\n", "\n")


def dayone_claims(raw: str) -> dict[str, Any]:
    """Verify a DayOne-issued token (signature, expiry, and issuer/audience when configured)."""
    options: dict[str, Any] = {"require": ["exp", "sub"]}
    kwargs: dict[str, Any] = {}
    if settings.DAYONE_JWT_AUDIENCE:
        kwargs["audience"] = settings.DAYONE_JWT_AUDIENCE
    else:
        options["verify_aud"] = False
    if settings.DAYONE_JWT_ISSUER:
        kwargs["issuer"] = settings.DAYONE_JWT_ISSUER
    try:
        return jwt.decode(
            raw, _dayone_public_key(), algorithms=["RS256"], options=options, **kwargs
        )
    except jwt.InvalidTokenError as exc:
        raise InvalidToken({"detail": f"DayOne token refused: {exc}."}) from None


def dayone_user(claims: dict[str, Any]) -> AbstractBaseUser:
    """The local account of a DayOne customer, created on first sight (never staff)."""
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(
        username=f"{DAYONE_USERNAME_PREFIX}{claims['sub']}"[:150],
        defaults={"first_name": str(claims.get("given_name") or claims.get("name") or "")[:150]},
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    if not user.is_active:
        raise AuthenticationFailed("This account is disabled.", code="user_inactive")
    return user


def user_from_bearer(raw: str) -> AbstractBaseUser:
    """The user of a bearer token (ours or DayOne's); raises InvalidToken/AuthenticationFailed."""
    if is_dayone_token(raw):
        return dayone_user(dayone_claims(raw))
    auth = JWTAuthentication()
    validated = auth.get_validated_token(raw.encode())
    return auth.get_user(validated)


class BearerAuthentication(JWTAuthentication):
    """simplejwt's authentication, plus DayOne's RS256 tokens when a public key is set."""

    def authenticate(self, request: Request) -> tuple[AbstractBaseUser, None] | None:
        header = self.get_header(request)
        if header is None:
            return None
        raw = self.get_raw_token(header)
        if raw is None:
            return None
        try:
            return user_from_bearer(raw.decode()), None
        except TokenError as exc:
            raise InvalidToken({"detail": str(exc)}) from None
        except UnicodeDecodeError:
            raise InvalidToken({"detail": "The token is not text."}) from None


# --- WebSocket tickets --------------------------------------------------------------------
# A short-lived, single-use secret for clients that cannot set headers on a WebSocket (browsers
# on another origin): it may appear in a URL because it dies on first use or after 30 s.

_redis_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _redis_client
    if _redis_client is None:
        _redis_client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
    return _redis_client


def ticket_issue(*, user: AbstractBaseUser) -> str:
    ticket = secrets.token_urlsafe(32)
    _redis().set(TICKET_KEY_PREFIX + ticket, str(user.pk), ex=settings.WS_TICKET_TTL_S)
    return ticket
