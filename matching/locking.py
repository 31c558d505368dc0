"""The locks that make the two queues consistent, and the after-commit trigger of the matcher.

One PostgreSQL advisory lock, ``QUEUE_LOCK``, guards both queues:

* every transaction that can change either queue (a session entering or leaving WAITING, a seat
  becoming free or taken, an agent becoming or ceasing to be AVAILABLE) takes it in **shared**
  mode as its very first statement (:func:`queue_transaction`);
* the matcher takes it in **exclusive** mode.

So the matcher never runs while a queue change is half done, and every queue change is either
wholly before a matcher run (it sees it) or wholly after (it is later than every pairing of that
run). That is what lets ``verify_fairness`` judge the assignment log exactly, by timestamps.

Lock order, everywhere, to stay free of deadlocks: the queue lock, then the customer lock (one
live session per customer), then session rows (by id), then agent rows; seat rows are written
only while their agent's row is locked, so the agent row is the lock of its seats.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Final

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

logger = logging.getLogger(__name__)

# Per thread, like Django's connections: how deep in queue_transaction() this thread is, and
# whether its transaction asked for a matcher run.
_tx = threading.local()

# Arbitrary but fixed: "DAYONEQ" as a 64-bit key of the one-key advisory lock space.
QUEUE_LOCK: Final = 0x4441594F4E4551
# The two-key space (kept apart from the one-key space by PostgreSQL) for per-customer locks.
CUSTOMER_LOCK_NS: Final = 0x43484154  # "CHAT"


@contextmanager
def queue_transaction() -> Iterator[datetime]:
    """A transaction that may change a queue: takes the shared queue lock, yields "now".

    "Now" is read *after* the lock is granted, so it is later than every matcher run that
    committed before and earlier than every matcher run that starts after.
    """
    depth = getattr(_tx, "depth", 0)
    if depth == 0:
        _tx.match_requested = False
    _tx.depth = depth + 1
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [QUEUE_LOCK])
            yield timezone.now()
            if depth == 0 and _tx.match_requested:
                # Registered last, after every event this transaction publishes: Django runs
                # on-commit hooks in order, and the matcher commits and publishes its own
                # offers, which must not reach a client before the state that preceded them.
                _register_match_hook()
    finally:
        _tx.depth = depth


def lock_customer(user_id: int) -> None:
    """Serialise the operations that can give a customer a live session (create, resume).

    Without it two concurrent creates would both pass the "no live session" check and the
    partial unique index would be what refuses the second; we want a DomainError instead.
    Caller: inside a queue transaction, before locking any row.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [CUSTOMER_LOCK_NS, user_id])


def lock_queue_exclusive(*, wait: bool) -> bool:
    """The matcher's lock. Caller: first statement of its transaction."""
    with connection.cursor() as cursor:
        if wait:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [QUEUE_LOCK])
            return True
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [QUEUE_LOCK])
        row = cursor.fetchone()
        return bool(row and row[0])


def matcher_pending() -> bool:
    """Is a matcher running or waiting to run right now (other than this session)?

    Called after our commit: such a matcher was granted (or will be granted) the exclusive lock
    after our shared lock was released, so it sees our change and our own run can be skipped.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ExclusiveLock' "
            "AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = %s "
            "AND pid <> pg_backend_pid() LIMIT 1",
            [QUEUE_LOCK],
        )
        return cursor.fetchone() is not None


def _after_commit_match() -> None:
    """Never raises: the caller's transaction is committed, and the tick is the safety net."""
    try:
        _match_now()
    except Exception:
        logger.exception("after-commit matcher run failed; the next tick will pair")


def _match_now() -> None:
    from matching import services as matching_services

    mode = getattr(settings, "MATCH_AFTER_COMMIT", None) or os.environ.get(
        "MATCH_AFTER_COMMIT", "inline"
    )
    if mode == "off":  # benchmarks and maintenance only: the beat tick still matches
        return
    if mode == "celery":
        from matching.tasks import match

        match.delay()
        return
    matching_services.match_run_after_commit()


def request_match_on_commit() -> None:
    """Run the matcher once after the current transaction commits (once, however often asked).

    Inside :func:`queue_transaction` the run is registered when the outermost one ends, so it
    follows every event of the transaction.
    """
    if not connection.in_atomic_block:
        _after_commit_match()
        return
    if getattr(_tx, "depth", 0):
        _tx.match_requested = True
        return
    _register_match_hook()


def _register_match_hook() -> None:
    # Already asked in this transaction, by a part of it that cannot be rolled back without
    # us (its savepoints are all still ours)? Then once is enough.
    pending: list[tuple[set[str], Callable[[], None], bool]] = connection.run_on_commit
    current = set(connection.savepoint_ids)
    if any(func is _after_commit_match and sids <= current for sids, func, _ in pending):
        return
    transaction.on_commit(_after_commit_match, robust=True)
