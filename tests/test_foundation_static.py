"""Static files and the middleware chain under ASGI (dayone_chat/static_files.py).

Every middleware must be async-capable: one sync-only middleware in the chain makes each request
hop thread -> event loop -> thread and hold its pooled database connection through the hops.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import AsyncClient
from django.utils.module_loading import import_string

pytestmark = pytest.mark.django_db


def test_every_middleware_runs_on_the_event_loop_when_served_by_asgi():
    sync_only = [
        path
        for path in settings.MIDDLEWARE
        if not getattr(import_string(path), "async_capable", False)
    ]
    assert sync_only == []


async def test_static_files_are_served_when_the_chain_is_async():
    answer = await AsyncClient().get("/static/console/console.js")
    assert answer.status_code == 200
    body = b"".join(answer.streaming_content)
    assert b"function" in body or b"=>" in body
    assert "max-age" in answer["Cache-Control"]


async def test_other_paths_go_down_the_chain_when_they_are_not_static_files():
    answer = await AsyncClient().get("/static/console/none-such.js")
    assert answer.status_code == 404
    health = await AsyncClient().get("/api/sessions")
    assert health.status_code == 401
    assert health.json()["code"]
