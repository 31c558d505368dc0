"""Agent REST: ``GET /api/agent/me`` and ``/queue``. (Customer data lives beside it.)"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from agents.models import Agent, AgentStatus
from agents.selectors import agent_for_user, agent_state_payload
from chat.api.serializers import ErrorSerializer
from chat.api.views import ApiView
from dayone_chat.api import ApiError
from history.selectors import queue_summary

AgentStateSerializer = inline_serializer(
    "AgentState",
    fields={
        "status": serializers.ChoiceField(choices=AgentStatus.choices),
        "capacity": serializers.IntegerField(),
        "seats": inline_serializer(
            "AgentSeat",
            fields={
                "session_id": serializers.UUIDField(allow_null=True),
                "free_since": serializers.DateTimeField(allow_null=True),
            },
            many=True,
        ),
    },
)


def _calling_agent(request: Request) -> Agent:
    agent = agent_for_user(user=request.user)
    if agent is None:
        raise ApiError(
            code="not_an_agent",
            detail="This account has no agent profile.",
            status_code=status.HTTP_403_FORBIDDEN,
        )
    return agent


class AgentMeView(ApiView):
    @extend_schema(
        tags=["agent"],
        responses={
            200: AgentStateSerializer,
            401: OpenApiResponse(ErrorSerializer, description="no valid credentials"),
            403: OpenApiResponse(ErrorSerializer, description="the caller is not an agent"),
        },
        summary="The calling agent's state: the same object as the agent.state frame",
    )
    def get(self, request: Request) -> Response:
        return Response(agent_state_payload(agent=_calling_agent(request)))


class AgentQueueView(ApiView):
    @extend_schema(
        tags=["agent"],
        responses={
            200: inline_serializer(
                "AgentQueueSummary",
                fields={
                    "waiting": serializers.IntegerField(),
                    "longest_wait_s": serializers.IntegerField(),
                },
            ),
            401: OpenApiResponse(ErrorSerializer, description="no valid credentials"),
            403: OpenApiResponse(ErrorSerializer, description="the caller is not an agent"),
        },
        summary="The queue as the console shows it: customers waiting and the longest wait",
    )
    def get(self, request: Request) -> Response:
        _calling_agent(request)
        return Response(queue_summary())
