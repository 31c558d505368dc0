"""Server-side latency of the customer's history endpoints on a large database.

Run against a scratch database filled by ``history/purge_bench.py generate`` (90 days, 300,000
sessions of 20 messages = 6 million messages, 50,000 customers):

    python -m history.purge_bench --db dayone_hist_bench generate --days 90
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/dayone_hist_bench \\
        python -m bench.history_endpoints --requests 300

For ``--requests`` customers who have sessions in the listing window, picked at random, it times
``GET /api/sessions`` (the listing, first page) and ``GET /api/sessions/{id}/messages`` (the
transcript, first page) through Django's test client in this process: the time from the request
entering the Django stack to the response leaving it, without a network or a websocket server in
between, which is what "server-side" means here. Authentication is forced (DRF's
``force_authenticate``): the JWT check is the same for every endpoint and not what is measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.db import connection
    from django.utils import timezone
    from rest_framework.test import APIClient

    from bench.stats import summarize_ms
    from chat.models import ChatSession, Message

    settings.ALLOWED_HOSTS = ["*"]
    since = timezone.now() - dt.timedelta(days=settings.HISTORY_DAYS)
    rng = random.Random(args.seed)
    customer_ids = list(
        ChatSession.objects.filter(created_at__gte=since)
        .values_list("customer_id", flat=True)
        .distinct()[:20000]
    )
    picked = rng.sample(customer_ids, min(args.requests, len(customer_ids)))
    client = APIClient()
    listing: list[float] = []
    transcript: list[float] = []
    statuses: dict[str, int] = {}
    # One of each first: imports, URL resolution and the first connection are not the endpoint.
    client.force_authenticate(user=User.objects.get(pk=picked[0]))
    client.get("/api/sessions")
    for customer_id in picked:
        user = User.objects.get(pk=customer_id)
        client.force_authenticate(user=user)
        started = time.perf_counter()
        answer = client.get("/api/sessions")
        listing.append(time.perf_counter() - started)
        key = f"listing {answer.status_code}"
        statuses[key] = statuses.get(key, 0) + 1
        session = (
            ChatSession.objects.filter(customer_id=customer_id, created_at__gte=since)
            .order_by("-created_at")
            .first()
        )
        started = time.perf_counter()
        answer = client.get(f"/api/sessions/{session.id}/messages")
        transcript.append(time.perf_counter() - started)
        key = f"transcript {answer.status_code}"
        statuses[key] = statuses.get(key, 0) + 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        size = cursor.fetchone()[0]
    result = {
        "database": settings.DATABASES["default"]["NAME"],
        "database_size": size,
        "messages": Message.objects.count(),
        "sessions": ChatSession.objects.count(),
        "customers_with_recent_sessions": len(customer_ids),
        "statuses": statuses,
        "listing": summarize_ms(listing),
        "transcript": summarize_ms(transcript),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
