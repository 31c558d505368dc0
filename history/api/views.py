"""Support leads' REST: the queue now, and its recent history for the dashboard's charts."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat.api.serializers import ErrorSerializer
from dayone_chat.api import ApiError
from history.api.permissions import CanViewQueue
from history.selectors import MAX_SERIES_HOURS, queue_overview, queue_series

# Customers and agents are refused (403), the anonymous too (401).
REFUSED = {400: ErrorSerializer, 401: ErrorSerializer, 403: ErrorSerializer}


class QueueView(APIView):
    """``GET /api/ops/queue``: waiting, longest wait, agents by status, active sessions, extras."""

    permission_classes = [CanViewQueue]

    @extend_schema(tags=["ops"], responses={200: OpenApiTypes.OBJECT, **REFUSED})
    def get(self, request: Request) -> Response:
        return Response(queue_overview().as_wire())


class QueueHistoryView(APIView):
    """``GET /api/ops/queue/history?hours=6``: one sample a minute, oldest first."""

    permission_classes = [CanViewQueue]

    @extend_schema(tags=["ops"], responses={200: OpenApiTypes.OBJECT, **REFUSED})
    def get(self, request: Request) -> Response:
        raw = request.query_params.get("hours", "6")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_SERIES_HOURS:
            raise ApiError(
                code="invalid",
                detail=f"hours must be a whole number from 1 to {MAX_SERIES_HOURS}.",
                status_code=400,
            )
        hours = int(raw)
        return Response({"hours": hours, "results": queue_series(hours=hours)})
