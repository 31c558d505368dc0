"""OpenAPI description of our bearer authentication (imported by chat.api.views to register)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme


class BearerScheme(SimpleJWTScheme):
    """Our JWTs and, when configured, DayOne's RS256 tokens: both are plain bearer tokens."""

    target_class = "chat.api.authentication.BearerAuthentication"
    name = "bearer"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        definition = dict(super().get_security_definition(auto_schema))
        definition["description"] = (
            "An access token from POST /api/auth/token, or a token issued by DayOne's identity "
            "service (RS256) where this deployment is configured to accept them."
        )
        return definition
