"""``GET /healthz``: 200 once the database, Redis and a Celery worker all answer; else 503."""

from __future__ import annotations

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False


def _redis_ok() -> bool:
    try:
        client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1
        )
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def _worker_ok() -> bool:
    """Any worker on our broker answers a ping (broadcast over the broker, so it crosses hosts)."""
    from dayone_chat.celery import app

    try:
        with app.connection_for_write(settings.CELERY_BROKER_URL) as conn:
            return bool(app.control.ping(timeout=1.0, connection=conn))
    except Exception:
        return False


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    failing = [
        name for name, check in (("database", _database_ok), ("redis", _redis_ok)) if not check()
    ]
    # Only ask the workers over the broker when the broker itself answers.
    if "redis" not in failing and not _worker_ok():
        failing.append("celery_worker")
    if failing:
        return JsonResponse(
            {
                "status": "unavailable",
                "failing": failing,
                "detail": f"Not answering: {', '.join(failing)}.",
            },
            status=503,
        )
    return JsonResponse({"status": "ok"})
