"""Rate limits shared by every process through Redis: the login lockout and REST throttles.

* **Login lockout.** :class:`LockoutModelBackend` is the project's only authentication backend,
  so ``POST /api/auth/token`` and the admin/console login form count failures alike. After
  ``LOGIN_MAX_FAILURES`` failures for one username within ``LOGIN_LOCKOUT_S``, every attempt for
  it (even with the right password) is refused until the window ends. Unknown usernames lock the
  same way, so a lockout tells nothing about which accounts exist. A known account's counter is
  also keyed by (a digest of) its password hash: a password reset starts a fresh count.
* **Throttles.** :class:`SessionCreateThrottle` and :class:`MessagePostThrottle` limit what one
  user may POST per window (fixed windows, one INCR per request), answered with 429
  ``{"code": "throttled"}`` and ``Retry-After``. Sockets have their own per-socket limit
  (chat.consumers.RateLimiter).

If Redis does not answer, the limits fail open (and say so in the log): an outage of the
counter store must not lock every user out of support. docs/security.md discusses the choice.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from chat.api.authentication import _redis

logger = logging.getLogger(__name__)

LOGIN_KEY_PREFIX = "login-failures:"
THROTTLE_KEY_PREFIX = "throttle:"
# Set on the request by the backend when it refused a locked username (the token view answers 429).
RETRY_AFTER_ATTR = "dayone_login_retry_after"


def _digest(text: str) -> str:
    # Usernames never appear in Redis keys as such (keys show up in monitoring tools).
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def login_failure_key(username: str, user: AbstractBaseUser | None) -> str:
    key = LOGIN_KEY_PREFIX + _digest(username.strip().lower())
    if user is not None:
        key += ":" + _digest(user.password)[:12]
    return key


def _locked_for(key: str) -> int | None:
    """Seconds left of the lockout of ``key``, None when not locked (or Redis is away)."""
    limit = settings.LOGIN_MAX_FAILURES
    if limit <= 0:
        return None
    try:
        client = _redis()
        pipe = client.pipeline()
        pipe.get(key)
        pipe.ttl(key)
        count, ttl = pipe.execute()
    except (redis.RedisError, OSError):
        logger.warning("login lockout unavailable: Redis did not answer")
        return None
    if count is None or int(count) < limit:
        return None
    return max(1, int(ttl))


def _record_failure(key: str) -> None:
    if settings.LOGIN_MAX_FAILURES <= 0:
        return
    try:
        pipe = _redis().pipeline()
        pipe.incr(key)
        # The window starts at the first failure; later failures do not extend it.
        pipe.expire(key, settings.LOGIN_LOCKOUT_S, nx=True)
        count, _ = pipe.execute()
    except (redis.RedisError, OSError):
        logger.warning("login lockout unavailable: Redis did not answer")
        return
    if int(count) == settings.LOGIN_MAX_FAILURES:
        # Once per lockout, for monitoring (a burst of these is a password-guessing attack).
        # The key is a digest: the log never holds a username.
        logger.warning("login locked for %s s: %s", settings.LOGIN_LOCKOUT_S, key)


def _clear(key: str) -> None:
    try:
        _redis().delete(key)
    except (redis.RedisError, OSError):
        logger.warning("login lockout unavailable: Redis did not answer")


class LoginLocked(PermissionDenied):
    """Stops django.contrib.auth.authenticate from trying any other backend."""


class LockoutModelBackend(ModelBackend):
    """Django's ModelBackend with a failure counter per username (see the module docstring)."""

    def authenticate(
        self,
        request: HttpRequest | Request | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> AbstractBaseUser | None:
        user_model = get_user_model()
        if username is None:
            username = kwargs.get(user_model.USERNAME_FIELD)
        if username is None or password is None:
            return None
        try:
            user = user_model._default_manager.get_by_natural_key(username)
        except user_model.DoesNotExist:
            user = None
        key = login_failure_key(str(username), user)
        retry_after = _locked_for(key)
        if retry_after is not None:
            if request is not None:
                setattr(request, RETRY_AFTER_ATTR, retry_after)
            raise LoginLocked
        if user is None:
            # As ModelBackend does: hash anyway, an unknown name costs what a bad password costs.
            user_model().set_password(password)
            _record_failure(key)
            return None
        if user.check_password(password) and self.user_can_authenticate(user):
            _clear(key)
            return user
        _record_failure(key)
        return None


# --- REST throttles ---------------------------------------------------------------------------


def _hit(key: str, window_s: int) -> int | None:
    """Count one request in ``key``'s window; the count so far, or None if Redis is away."""
    try:
        pipe = _redis().pipeline()
        pipe.incr(key)
        pipe.expire(key, window_s + 1, nx=True)
        count, _ = pipe.execute()
    except (redis.RedisError, OSError):
        logger.warning("REST throttle unavailable: Redis did not answer")
        return None
    return int(count)


class _UserPostThrottle(BaseThrottle):
    """At most ``count`` POSTs per user in each fixed window of ``window_s`` seconds."""

    scope = ""

    def rate(self) -> tuple[int, int]:
        raise NotImplementedError

    def allow_request(self, request: Request, view: APIView) -> bool:
        self._wait: float | None = None
        user = request.user
        if request.method != "POST" or user is None or not user.is_authenticated:
            return True
        count, window_s = self.rate()
        if count <= 0 or window_s <= 0:
            return True
        now = time.time()
        window = int(now // window_s)
        hits = _hit(f"{THROTTLE_KEY_PREFIX}{self.scope}:{user.pk}:{window}", window_s)
        if hits is None or hits <= count:
            return True
        self._wait = (window + 1) * window_s - now
        return False

    def wait(self) -> float | None:
        return self._wait


class SessionCreateThrottle(_UserPostThrottle):
    scope = "session-create"

    def rate(self) -> tuple[int, int]:
        return settings.SESSION_CREATE_RATE_COUNT, settings.SESSION_CREATE_RATE_WINDOW_S


class MessagePostThrottle(_UserPostThrottle):
    scope = "message-post"

    def rate(self) -> tuple[int, int]:
        return settings.MESSAGE_RATE_COUNT, settings.MESSAGE_RATE_WINDOW_S
