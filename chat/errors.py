"""The one exception the domain raises for a refused operation.

Interfaces map it without knowing the cases: REST answers ``{"code", "detail", **extra}`` with
``http_status``; sockets send ``{"type": "error", "code", "detail"}`` and stay open.
"""

from __future__ import annotations

from typing import Any

from django.db import InterfaceError, OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# A backing server (PostgreSQL, Redis) is briefly away: not the caller's fault nor a bug. REST
# answers 503 ``service_unavailable``, sockets an error frame (or close 4503, "try again later").
UNAVAILABLE: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    RedisConnectionError,
    RedisTimeoutError,
)
UNAVAILABLE_CODE = "service_unavailable"
UNAVAILABLE_DETAIL = "The service is briefly unavailable; please retry in a few seconds."


class DomainError(Exception):
    def __init__(self, code: str, detail: str, *, http_status: int = 409, **extra: Any) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.http_status = http_status
        self.extra = extra

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "detail": self.detail, **self.extra}


class NotFound(DomainError):
    """Not there, or not the caller's: the two look the same from outside."""

    def __init__(self, detail: str = "No such session.") -> None:
        super().__init__("not_found", detail, http_status=404)


class Forbidden(DomainError):
    def __init__(self, detail: str) -> None:
        super().__init__("forbidden", detail, http_status=403)


class InvalidInput(DomainError):
    def __init__(self, code: str, detail: str, **extra: Any) -> None:
        super().__init__(code, detail, http_status=400, **extra)
