"""The OpenAPI schema at /api/schema/ describes the wire API, without generator warnings."""

from __future__ import annotations

import pytest
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator

# The views of the wire contract (chat.api, GET /api/agent/me).
OURS = ("chat/api/", "agents/api/views.py", "[Token", "[WsTicket", "[Session", "[AgentMe")


def test_schema_has_no_warnings_or_errors_when_generated_for_the_wire_views():
    GENERATOR_STATS.reset()
    GENERATOR_STATS.silence()
    schema = SchemaGenerator().get_schema(request=None, public=True)
    complaints = [
        message
        for message in (*GENERATOR_STATS._warn_cache, *GENERATOR_STATS._error_cache)
        if any(marker in message for marker in OURS)
        or ("operationId" in message and ("/api/sessions" in message or "/api/auth" in message))
    ]
    assert complaints == []
    paths = schema["paths"]
    for path in (
        "/api/auth/token",
        "/api/auth/ws-ticket",
        "/api/sessions",
        "/api/sessions/{session_id}",
        "/api/sessions/{session_id}/messages",
        "/api/sessions/{session_id}/resume",
        "/api/sessions/{session_id}/end",
        "/api/agent/me",
    ):
        assert path in paths, path
    created = paths["/api/sessions"]["post"]["responses"]
    assert set(created) >= {"201", "400", "401", "409"}
    assert "bearer" in schema["components"]["securitySchemes"]


@pytest.mark.django_db
def test_schema_is_served_when_requested(client):
    answer = client.get("/api/schema/")
    assert answer.status_code == 200
    assert b"/api/sessions/{session_id}/messages" in answer.content
