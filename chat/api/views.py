"""The customer REST API of PROTOCOL.md, and authentication.

Each view parses, authorises through a selector, calls one service and answers with the wire
payloads of chat.payloads. Refusals are DomainErrors; dayone_chat.api turns them into
``{"code","detail"}`` with their HTTP status.
"""

from __future__ import annotations

from uuid import UUID

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from chat import selectors, services
from chat.api import schema as _schema  # noqa: F401  (registers the bearer scheme)
from chat.api import serializers as s
from chat.api.authentication import BearerAuthentication, ticket_issue
from chat.api.listing import Cursor, session_history_page
from chat.api.ratelimit import RETRY_AFTER_ATTR, MessagePostThrottle, SessionCreateThrottle
from chat.models import Role
from chat.payloads import message_payload, session_payload
from dayone_chat.api import ApiError

AUTHENTICATION = [BearerAuthentication, SessionAuthentication]

ERRORS = {
    401: OpenApiResponse(s.ErrorSerializer, description="no valid credentials"),
    404: OpenApiResponse(s.ErrorSerializer, description="no such session, or not the caller's"),
}
SESSION_ID = OpenApiParameter("session_id", OpenApiTypes.UUID, OpenApiParameter.PATH)


class ApiView(APIView):
    authentication_classes = AUTHENTICATION
    permission_classes = [IsAuthenticated]


# --- authentication -----------------------------------------------------------------------


@extend_schema(
    tags=["auth"],
    request=s.TokenRequestSerializer,
    responses={
        200: s.TokenPairSerializer,
        400: s.ErrorSerializer,
        401: s.ErrorSerializer,
        429: s.ErrorSerializer,
    },
    summary="Exchange a username and password for a JWT pair",
)
class TokenView(TokenObtainPairView):
    def post(self, request: Request, *args: object, **kwargs: object) -> Response:
        try:
            return super().post(request, *args, **kwargs)
        except AuthenticationFailed:
            retry_after = getattr(request, RETRY_AFTER_ATTR, None)
            if retry_after is not None:
                raise ApiError(
                    code="login_locked",
                    detail="Too many failed attempts for this username; try again later.",
                    status_code=status.HTTP_429_TOO_MANY_REQUESTS,
                    retry_after=retry_after,
                ) from None
            raise ApiError(
                code="invalid_credentials",
                detail="The username or the password is wrong, or the account is disabled.",
                status_code=status.HTTP_401_UNAUTHORIZED,
            ) from None


@extend_schema(
    tags=["auth"],
    summary="A new access token from a refresh token",
    responses={200: OpenApiTypes.OBJECT, 400: s.ErrorSerializer, 401: s.ErrorSerializer},
)
class TokenRefresh(TokenRefreshView):
    pass


class WsTicketView(ApiView):
    @extend_schema(
        tags=["auth"],
        request=None,
        responses={200: s.WsTicketSerializer, 401: ERRORS[401]},
        summary="A single-use ticket (30 s) for opening a WebSocket without headers",
    )
    def post(self, request: Request) -> Response:
        ticket = ticket_issue(user=request.user)
        return Response({"ticket": ticket, "expires_in": settings.WS_TICKET_TTL_S})


# --- customer sessions --------------------------------------------------------------------


def _payload_for(session: object, role: str) -> dict[str, object]:
    return session_payload(session, for_agent=role == Role.AGENT)  # type: ignore[arg-type]


class SessionListView(ApiView):
    throttle_classes = [SessionCreateThrottle]  # counts POSTs only

    @extend_schema(
        tags=["sessions"],
        parameters=[s.SessionListQuerySerializer],
        responses={200: s.SessionPageSerializer, 400: s.ErrorSerializer, 401: ERRORS[401]},
        summary="The caller's sessions of the last HISTORY_DAYS, newest first",
        operation_id="sessions_list",
    )
    def get(self, request: Request) -> Response:
        query = s.SessionListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        token = query.validated_data.get("cursor")
        page = session_history_page(
            user=request.user,
            cursor=Cursor.decode(token) if token else None,
            limit=query.validated_data["limit"],
        )
        next_url = None
        if page.next_cursor is not None:
            params = request.query_params.copy()
            params["cursor"] = page.next_cursor.encode()
            next_url = request.build_absolute_uri(f"{request.path}?{params.urlencode()}")
        return Response({"results": page.results, "next": next_url})

    @extend_schema(
        tags=["sessions"],
        request=s.SessionCreateSerializer,
        responses={
            201: s.SessionSerializer,
            400: s.ErrorSerializer,
            401: ERRORS[401],
            403: OpenApiResponse(s.ErrorSerializer, description="a staff account (customers_only)"),
            409: OpenApiResponse(
                s.LiveSessionExistsSerializer, description="the customer has a live session"
            ),
            429: OpenApiResponse(s.ErrorSerializer, description="too many sessions created"),
        },
        summary="Open a chat: the session waits in the queue for an agent",
    )
    def post(self, request: Request) -> Response:
        if request.user.is_staff:
            # Agents and leads are never customers: a staff account's chat could be offered to
            # its own holder, and it would hold a place in the customers' queue.
            raise ApiError(
                code="customers_only",
                detail="Only customer accounts open chats.",
                status_code=status.HTTP_403_FORBIDDEN,
            )
        body = s.SessionCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        session = services.session_create(customer=request.user, topic=body.validated_data["topic"])
        return Response(session_payload(session), status=status.HTTP_201_CREATED)


class SessionDetailView(ApiView):
    @extend_schema(
        tags=["sessions"],
        parameters=[SESSION_ID],
        responses={200: s.SessionSerializer, 401: ERRORS[401], 404: ERRORS[404]},
        summary="One session (the customer's own, or one assigned to the calling agent)",
        operation_id="sessions_retrieve",
    )
    def get(self, request: Request, session_id: UUID) -> Response:
        session, role = selectors.session_get_for_user(session_id=session_id, user=request.user)
        return Response(_payload_for(session, role))


class SessionMessagesView(ApiView):
    throttle_classes = [MessagePostThrottle]  # counts POSTs only

    @extend_schema(
        tags=["sessions"],
        parameters=[SESSION_ID, s.MessageListQuerySerializer],
        responses={
            200: s.MessagePageSerializer,
            400: s.ErrorSerializer,
            401: ERRORS[401],
            404: ERRORS[404],
        },
        summary="Messages after after_seq, in seq order",
    )
    def get(self, request: Request, session_id: UUID) -> Response:
        query = s.MessageListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        after_seq = query.validated_data["after_seq"]
        limit = query.validated_data["limit"]
        selectors.session_get_for_user(session_id=session_id, user=request.user)
        # One more than asked tells whether another page exists without a count query.
        messages = selectors.messages_after(
            session_id=session_id, after_seq=after_seq, limit=limit + 1
        )
        more = len(messages) > limit
        messages = messages[:limit]
        return Response(
            {
                "results": [message_payload(m) for m in messages],
                "next_after_seq": messages[-1].seq if more else None,
            }
        )

    @extend_schema(
        tags=["sessions"],
        parameters=[SESSION_ID],
        request=s.MessageCreateSerializer,
        responses={
            201: s.MessageSerializer,
            200: OpenApiResponse(s.MessageSerializer, description="a repeated client_msg_id"),
            400: s.ErrorSerializer,
            401: ERRORS[401],
            404: ERRORS[404],
            409: s.ErrorSerializer,
            429: OpenApiResponse(s.ErrorSerializer, description="too many messages"),
        },
        summary="Send a message; retrying with the same client_msg_id never stores it twice",
    )
    def post(self, request: Request, session_id: UUID) -> Response:
        body = s.MessageCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        _, role = selectors.session_get_for_user(session_id=session_id, user=request.user)
        posted = services.message_post(
            session_id=session_id,
            author=request.user,
            role=role,
            client_msg_id=body.validated_data["client_msg_id"],
            body=body.validated_data["body"],
        )
        return Response(
            message_payload(posted.message),
            status=status.HTTP_201_CREATED if posted.created else status.HTTP_200_OK,
        )


class SessionResumeView(ApiView):
    @extend_schema(
        tags=["sessions"],
        parameters=[SESSION_ID],
        request=None,
        responses={
            200: s.SessionSerializer,
            401: ERRORS[401],
            404: ERRORS[404],
            409: OpenApiResponse(s.ErrorSerializer, description="not_resumable"),
        },
        summary="Back to the queue after being away (or no change for a live session)",
    )
    def post(self, request: Request, session_id: UUID) -> Response:
        session = services.session_resume(session_id=session_id, customer=request.user)
        return Response(session_payload(session))


class SessionEndView(ApiView):
    @extend_schema(
        tags=["sessions"],
        parameters=[SESSION_ID],
        request=None,
        responses={
            200: s.SessionSerializer,
            401: ERRORS[401],
            404: ERRORS[404],
            409: s.ErrorSerializer,
        },
        summary="Ask to end the chat, or confirm the other side's request",
    )
    def post(self, request: Request, session_id: UUID) -> Response:
        _, role = selectors.session_get_for_user(session_id=session_id, user=request.user)
        session = services.session_end(session_id=session_id, user=request.user, role=role)
        return Response(_payload_for(session, role))
