"""Shared REST plumbing: every error is ``{"code": "<snake_case>", "detail": "<sentence>"}``."""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from rest_framework import exceptions, parsers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from chat.errors import UNAVAILABLE, UNAVAILABLE_CODE, UNAVAILABLE_DETAIL, DomainError

logger = logging.getLogger(__name__)


class ApiError(exceptions.APIException):
    """An error with a stable ``code``; extra fields (e.g. ``session_id``) go into the body."""

    def __init__(self, *, code: str, detail: str, status_code: int, **extra: Any) -> None:
        super().__init__(detail=detail, code=code)
        self.status_code = status_code
        self.error_code = code
        self.extra = extra


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, bounded: DRF reads a JSON body from the stream whole (Django's
    DATA_UPLOAD_MAX_MEMORY_SIZE only guards ``request.body``), and a deeply nested body raised
    RecursionError, which became a 500. Both are the caller's fault: 413 and 400."""

    def parse(
        self,
        stream: IO[bytes],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        limit = settings.REST_MAX_BODY_BYTES
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise ApiError(
                code="body_too_large",
                detail=f"A request body has at most {limit} bytes.",
                status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )
        try:
            return super().parse(io.BytesIO(raw), media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from None


def _first_message(detail: Any) -> str:
    if isinstance(detail, dict):
        field, value = next(iter(detail.items()))
        return (
            f"{field}: {_first_message(value)}"
            if field != "non_field_errors"
            else _first_message(value)
        )
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        # The domain's refusals carry their own status and extra fields (e.g. session_id).
        return Response(exc.as_dict(), status=exc.http_status)
    if isinstance(exc, UNAVAILABLE):
        # PostgreSQL or Redis is away (a restart, a failover): a clear answer, not a 500 page.
        logger.warning("answered 503: %s", type(exc).__name__)
        return Response(
            {"code": UNAVAILABLE_CODE, "detail": UNAVAILABLE_DETAIL},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, ApiError):
        response.data = {"code": exc.error_code, "detail": str(exc.detail), **exc.extra}
        return response
    if isinstance(exc, exceptions.ValidationError):
        response.data = {
            "code": "invalid",
            "detail": _first_message(exc.detail),
            "fields": exc.detail,
        }
        return response
    code = getattr(exc, "default_code", "error")
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        if isinstance(codes, str):
            code = codes
    response.data = {
        "code": code,
        "detail": _first_message(response.data.get("detail", response.data)),
    }
    return response


def json_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(
        {"code": "not_found", "detail": "There is nothing at this address."}, status=404
    )


def json_server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {"code": "server_error", "detail": "Something went wrong on our side; please retry."},
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )
