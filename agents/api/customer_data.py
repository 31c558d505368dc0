"""``GET /api/agent/customers/{session_id}/profile|orders|transactions`` for the console.

Thin: parse the limit, call :func:`agents.customer_data.customer_data_read` (which checks access
and writes the access log), relay. Refusals answer ``403 {"code","detail"}``; an outage of DayOne's
services answers ``503 {"code": "customer_data_unavailable", "detail"}`` (DomainErrors become
those answers in dayone_chat.api).
"""

from __future__ import annotations

from uuid import UUID

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.customer_data import What, customer_data_read, get_provider
from dayone_chat.api import ApiError

SOURCE = serializers.ChoiceField(choices=["builtin", "http"])
ProfileSerializer = inline_serializer(
    "CustomerProfile",
    fields={
        "customer_ref": serializers.CharField(),
        "full_name": serializers.CharField(),
        "email": serializers.CharField(),
        "phone": serializers.CharField(),
        "tier": serializers.CharField(),
        "customer_since": serializers.DateField(allow_null=True),
        "city": serializers.CharField(),
        "country": serializers.CharField(),
        "source": SOURCE,
    },
)
OrdersSerializer = inline_serializer(
    "CustomerOrders",
    fields={
        "results": inline_serializer(
            "CustomerOrder",
            fields={
                "number": serializers.CharField(),
                "status": serializers.CharField(),
                "placed_at": serializers.DateTimeField(allow_null=True),
                "total_cents": serializers.IntegerField(),
                "currency": serializers.CharField(),
                "items": inline_serializer(
                    "CustomerOrderItem",
                    fields={
                        "sku": serializers.CharField(),
                        "name": serializers.CharField(),
                        "quantity": serializers.IntegerField(),
                        "unit_price_cents": serializers.IntegerField(),
                    },
                    many=True,
                ),
            },
            many=True,
        ),
        "source": SOURCE,
    },
)
TransactionsSerializer = inline_serializer(
    "CustomerTransactions",
    fields={
        "results": inline_serializer(
            "CustomerTransaction",
            fields={
                "reference": serializers.CharField(),
                "kind": serializers.CharField(),
                "amount_cents": serializers.IntegerField(),
                "currency": serializers.CharField(),
                "created_at": serializers.DateTimeField(allow_null=True),
                "order_number": serializers.CharField(allow_null=True),
                "method": serializers.CharField(),
            },
            many=True,
        ),
        "source": SOURCE,
    },
)
ERRORS = {
    400: OpenApiResponse(description="limit is not a whole number"),
    403: OpenApiResponse(
        description="customer_data_forbidden: not an agent, or the session is not offered to "
        "or active with the caller (the attempt is logged)"
    ),
    404: OpenApiResponse(description="customer_data_not_found: DayOne has no such customer"),
    503: OpenApiResponse(
        description="customer_data_unavailable: DayOne's services failed (down, slow, 5xx, "
        "unreadable answer)"
    ),
}
LIMIT = OpenApiParameter(
    "limit", OpenApiTypes.INT, description="How many, newest first (at most 50)."
)


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

    def read(self, request: Request, session_id: UUID) -> Response:
        provider = get_provider()
        data = customer_data_read(
            user=request.user,
            session_id=session_id,
            what=self.what,
            limit=_limit(request),
            provider=provider,
        )
        if isinstance(data, list):
            return Response({"results": data, "source": provider.name})
        return Response({**data, "source": provider.name})


class CustomerProfileView(_CustomerDataView):
    what: What = "profile"

    @extend_schema(
        tags=["agent"],
        summary="The DayOne profile of the session's customer (logged)",
        responses={200: ProfileSerializer, **ERRORS},
    )
    def get(self, request: Request, session_id: UUID) -> Response:
        return self.read(request, session_id)


class CustomerOrdersView(_CustomerDataView):
    what: What = "orders"

    @extend_schema(
        tags=["agent"],
        summary="Recent DayOne orders with their items of the session's customer (logged)",
        parameters=[LIMIT],
        responses={200: OrdersSerializer, **ERRORS},
    )
    def get(self, request: Request, session_id: UUID) -> Response:
        return self.read(request, session_id)


class CustomerTransactionsView(_CustomerDataView):
    what: What = "transactions"

    @extend_schema(
        tags=["agent"],
        summary="Recent DayOne transactions of the session's customer (logged)",
        parameters=[LIMIT],
        responses={200: TransactionsSerializer, **ERRORS},
    )
    def get(self, request: Request, session_id: UUID) -> Response:
        return self.read(request, session_id)
