"""``GET /api/agent/customers/{session_id}/profile|orders|transactions`` for the console.

Thin: parse the limit, call :func:`agents.customer_data.customer_data_read` (which checks access
and writes the access log), relay. Refusals answer ``403 {"code","detail"}``; an outage of DayOne's
services answers ``503 {"code": "customer_data_unavailable", "detail"}``.
"""

from __future__ import annotations

from uuid import UUID

from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.customer_data import (
    CustomerDataProvider,
    What,
    customer_data_read,
    get_provider,
)
from chat.errors import DomainError
from dayone_chat.api import ApiError


def _limit(request: Request) -> int | None:
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ApiError(
            code="invalid", detail="limit must be a whole number.", status_code=400
        ) from None


class _CustomerDataView(APIView):
    what: What

    def get(self, request: Request, session_id: UUID) -> Response:
        provider = _provider()
        try:
            data = customer_data_read(
                user=request.user,
                session_id=session_id,
                what=self.what,
                limit=_limit(request),
                provider=provider,
            )
        except DomainError as exc:
            raise ApiError(
                code=exc.code, detail=exc.detail, status_code=exc.http_status, **exc.extra
            ) from None
        if isinstance(data, list):
            return Response({"results": data, "source": provider.name})
        return Response({**data, "source": provider.name})


def _provider() -> CustomerDataProvider:
    try:
        return get_provider()
    except DomainError as exc:
        raise ApiError(code=exc.code, detail=exc.detail, status_code=exc.http_status) from None


class CustomerProfileView(_CustomerDataView):
    what: What = "profile"


class CustomerOrdersView(_CustomerDataView):
    what: What = "orders"


class CustomerTransactionsView(_CustomerDataView):
    what: What = "transactions"
