"""Fixtures shared by every test: real PostgreSQL (pytest-django) and the real Redis layer."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _tunables(settings):
    """Tests start from DESIGN.md's defaults whatever the environment says."""
    settings.AUTO_ACCEPT = False
    settings.AGENT_CAPACITY = 2
    return settings


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """Every test starts with no login-failure or throttle counters in Redis.

    The counters are keyed by user id and outlive a test (up to their window, an hour in some
    tests), while user ids repeat: every run recreates the test database, and a flush resets its
    sequences. A counter left by an earlier test or run would throttle the next one.
    """
    from chat.api.authentication import _redis
    from chat.api.ratelimit import LOGIN_KEY_PREFIX, THROTTLE_KEY_PREFIX

    client = _redis()
    for prefix in (LOGIN_KEY_PREFIX, THROTTLE_KEY_PREFIX):
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


def _retrying_flush() -> None:
    """Retry the flush that ends each transactional test, a few times.

    End-to-end stacks are module-scoped: their beat and worker keep running ticks while a test's
    teardown TRUNCATEs the test database, and PostgreSQL may resolve the lock conflict by failing
    the TRUNCATE (seen once in CI as "couldn't be flushed"). The flush runs in one transaction,
    so a retry starts clean.
    """
    import time

    from django.db import DatabaseError
    from django.db.backends.postgresql.operations import DatabaseOperations

    original = DatabaseOperations.execute_sql_flush

    def execute_sql_flush(self: DatabaseOperations, sql_list: list[str]) -> None:
        for attempt in range(5):
            try:
                original(self, sql_list)
                return
            except DatabaseError:
                if attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))

    DatabaseOperations.execute_sql_flush = execute_sql_flush  # type: ignore[method-assign]


_retrying_flush()
