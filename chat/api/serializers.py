"""Input validation and the documented shapes of the customer REST API.

Answers are built by chat.payloads (one place for the wire shapes, shared with the sockets); the
output serializers here exist so that the OpenAPI schema describes exactly those shapes.
"""

from __future__ import annotations

from rest_framework import serializers

from chat.models import Role, SessionStatus


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="snake_case, stable: clients branch on it")
    detail = serializers.CharField(help_text="a human sentence")


class LiveSessionExistsSerializer(ErrorSerializer):
    session_id = serializers.UUIDField()


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"})


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()


class WsTicketSerializer(serializers.Serializer):
    ticket = serializers.CharField(help_text="single use; pass as ?ticket= on the socket URL")
    expires_in = serializers.IntegerField(help_text="seconds")


class AgentNameSerializer(serializers.Serializer):
    display_name = serializers.CharField()


class MessageSerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    sender = serializers.ChoiceField(choices=Role.choices)
    body = serializers.CharField()
    created_at = serializers.DateTimeField()
    client_msg_id = serializers.UUIDField(allow_null=True)


class SessionSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=SessionStatus.choices)
    topic = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    ended_at = serializers.DateTimeField(allow_null=True)
    end_reason = serializers.CharField(allow_null=True)
    agent = AgentNameSerializer(allow_null=True)
    position = serializers.IntegerField(allow_null=True, help_text="1 = next; null unless waiting")
    estimated_wait_s = serializers.IntegerField(allow_null=True)
    last_seq = serializers.IntegerField()
    last_message = MessageSerializer(allow_null=True)
    resumable = serializers.BooleanField()
    end_requested_by = serializers.CharField(allow_null=True, help_text="extension")
    customer_connected = serializers.BooleanField(help_text="extension")
    message_count = serializers.IntegerField(required=False, help_text="extension (listing)")


class SessionPageSerializer(serializers.Serializer):
    results = SessionSerializer(many=True)
    next = serializers.URLField(allow_null=True, help_text="the next page, or null at the end")


class MessagePageSerializer(serializers.Serializer):
    results = MessageSerializer(many=True)
    next_after_seq = serializers.IntegerField(
        allow_null=True, help_text="pass as after_seq for the next page; null when none is left"
    )


class SessionCreateSerializer(serializers.Serializer):
    topic = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class MessageCreateSerializer(serializers.Serializer):
    client_msg_id = serializers.UUIDField()
    # No trimming or length check here: the service decides what an acceptable body is
    # (body_empty / body_too_long), with the same codes for REST and sockets.
    body = serializers.CharField(trim_whitespace=False, allow_blank=True)


class MessageListQuerySerializer(serializers.Serializer):
    after_seq = serializers.IntegerField(min_value=0, default=0)
    limit = serializers.IntegerField(min_value=1, max_value=500, default=100)


class SessionListQuerySerializer(serializers.Serializer):
    cursor = serializers.CharField(required=False)
    limit = serializers.IntegerField(min_value=1, max_value=100, default=20)
