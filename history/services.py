"""Retention (the 90-day purge), the queue samples, and the support leads' group.

The purge deletes in bounded batches, child rows first, every statement in its own short
transaction (autocommit), so it only ever locks a few thousand rows that nobody else touches: rows
past the retention window belong to ended sessions. It finds what refers to a session (or to any
row it deletes) from the models, so a table added later with a foreign key to ``ChatSession`` is
purged (``CASCADE``) or detached (``SET_NULL``) too, and counted in the record.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from django.apps import apps as global_apps
from django.conf import settings
from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Group, Permission
from django.db import IntegrityError, OperationalError, connection, models, transaction
from django.db.models import Q
from django.utils import timezone

from agents.models import CustomerDataAccess
from chat.models import LIVE_STATUSES, ChatSession, Connection, Message
from history.models import PurgeRecord, QueueSample
from matching.models import Assignment, FreeSpan

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE: Final = 5000
# A purge statement waits at most this long for a row lock, then retries: it yields to live
# traffic instead of queueing behind it (and others behind the purge).
LOCK_TIMEOUT: Final = "2s"
LOCK_RETRIES: Final = 5
LOCK_NOT_AVAILABLE: Final = "55P03"

# One purge at a time (a session-level advisory lock: the purge commits batch by batch). A run
# that outlives the broker's visibility timeout is redelivered; the second copy then stops at once.
PURGE_LOCK_KEY: Final = 0x6461796F6E65  # "dayone"


class PurgeAlreadyRunning(RuntimeError):
    pass


# Progress: (model label, rows deleted or detached in that table so far).
ProgressFn = Callable[[str, int], None]


# --- The support leads' group -------------------------------------------------------------------

SUPPORT_LEAD_GROUP: Final = "Support lead"
# Exactly what a lead needs: read sessions and transcripts, agents and seats, both logs and the
# purge records; intervene through the services (custom permissions, checked by the admin
# actions); plan shifts (plain data the shift sweep reads). No add/change/delete on anything whose
# status a service owns: the admin's forms cannot change a status.
SUPPORT_LEAD_PERMISSIONS: Final[tuple[tuple[str, str], ...]] = (
    ("chat", "view_chatsession"),
    ("chat", "view_message"),
    ("agents", "view_agent"),
    ("agents", "view_seat"),
    ("agents", "view_shift"),
    ("agents", "add_shift"),
    ("agents", "change_shift"),
    ("agents", "delete_shift"),
    ("agents", "view_customerdataaccess"),
    ("matching", "view_assignment"),
    ("history", "view_purgerecord"),
    ("history", "view_queue"),
    ("history", "intervene_session"),
    ("history", "force_agent_status"),
)


def ensure_support_lead_group(*, using: str = "default") -> Group:
    """Create or repair the "Support lead" group so it holds exactly SUPPORT_LEAD_PERMISSIONS.

    Idempotent; called by the data migration's twin after every ``migrate`` and by ``seed_demo``.
    """
    wanted = Q()
    for app_label, codename in SUPPORT_LEAD_PERMISSIONS:
        wanted |= Q(content_type__app_label=app_label, codename=codename)
    permissions = list(Permission.objects.using(using).filter(wanted))
    if len(permissions) < len(SUPPORT_LEAD_PERMISSIONS):
        # Permissions are created after migrate (post_migrate); make sure they exist already.
        for app_label in {app_label for app_label, _ in SUPPORT_LEAD_PERMISSIONS}:
            create_permissions(global_apps.get_app_config(app_label), verbosity=0, using=using)
        permissions = list(Permission.objects.using(using).filter(wanted))
    if len(permissions) != len(SUPPORT_LEAD_PERMISSIONS):
        found = {(p.content_type.app_label, p.codename) for p in permissions}
        missing = sorted(set(SUPPORT_LEAD_PERMISSIONS) - found)
        raise RuntimeError(f"Support lead permissions missing: {missing}")
    group, _ = Group.objects.using(using).get_or_create(name=SUPPORT_LEAD_GROUP)
    group.permissions.set(permissions)
    return group


# --- Queue samples ------------------------------------------------------------------------------


# Two beats started by mistake send every sample twice: one sample per this many seconds.
SAMPLE_MIN_GAP_S: Final = 30
SAMPLE_LOCK: Final = 0x44415953414D50  # "DAYSAMP": serialises concurrent samplers


def queue_sample_take(*, now: datetime | None = None) -> QueueSample:
    """Store one sample of the queue for the dashboard's charts (at most one per
    SAMPLE_MIN_GAP_S: a second sampler's run returns the sample already taken)."""
    from history.selectors import queue_overview

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SAMPLE_LOCK])
        overview = queue_overview(now=now)
        recent = QueueSample.objects.filter(
            at__gt=overview.at - timedelta(seconds=SAMPLE_MIN_GAP_S), at__lte=overview.at
        ).first()
        if recent is not None:
            return recent
        return QueueSample.objects.create(
            at=overview.at,
            waiting=overview.waiting,
            offered=overview.offered,
            active=overview.sessions_active,
            longest_wait_s=overview.longest_wait_s,
            agents=overview.agents,
            free_seats=overview.free_seats,
            matches_last_hour=overview.matches_last_hour,
        )


# --- The retention purge ------------------------------------------------------------------------


@dataclass
class _Run:
    cutoff: datetime
    batch_size: int
    progress: ProgressFn | None
    pause_s: float
    deleted: Counter[str] = field(default_factory=Counter)
    detached: Counter[str] = field(default_factory=Counter)
    statements: int = 0

    def report(self, label: str, total: int) -> None:
        if self.progress is not None:
            self.progress(label, total)


@dataclass(frozen=True)
class _Reference:
    """A foreign key into a purged table, and what deleting its target does to the row."""

    model: type[models.Model]
    column: str
    on_delete: Callable[..., object]

    @property
    def label(self) -> str:
        return self.model._meta.label


def _references(model: type[models.Model]) -> list[_Reference]:
    refs = []
    for rel in model._meta.get_fields(include_hidden=True):
        if not (rel.auto_created and not rel.concrete):
            continue
        if rel.many_to_many:
            # No many-to-many points at a purged table today; a new one must be handled here.
            raise NotImplementedError(f"purge cannot follow the many-to-many {rel}")
        if not (rel.one_to_many or rel.one_to_one):
            continue
        refs.append(_Reference(rel.related_model, rel.field.column, rel.on_delete))
    return refs


def _window_filters(cutoff: datetime) -> dict[type[models.Model], Q]:
    """The logs purged by their own time column (before the sessions)."""
    return {
        Assignment: Q(offered_at__lt=cutoff),
        CustomerDataAccess: Q(at__lt=cutoff),
        QueueSample: Q(at__lt=cutoff),
        # The seat queue's evidence: spans that ended before the cutoff (an open one stays).
        FreeSpan: Q(started_at__lt=cutoff, ended_at__lt=cutoff),
    }


def _expired_sessions(cutoff: datetime) -> models.QuerySet[ChatSession]:
    # A live session is never purged whatever its age: deleting it would pull a seat out from
    # under an agent. It cannot be 90 days old in practice; the record counts any that is.
    return ChatSession.objects.filter(created_at__lt=cutoff).exclude(status__in=LIVE_STATUSES)


def _execute(run: _Run, sql: str, params: Sequence[object]) -> int:
    """One statement in its own transaction; retried when it could not get a lock in time."""
    for attempt in range(LOCK_RETRIES + 1):
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                run.statements += 1
                return cursor.rowcount
        except OperationalError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
            if attempt == LOCK_RETRIES:
                raise
            logger.warning("purge: lock not available, retry %d: %s", attempt + 1, sql[:60])
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _pause(run: _Run) -> None:
    if run.pause_s:
        time.sleep(run.pause_s)


def _delete_ids(run: _Run, model: type[models.Model], ids: Sequence[object]) -> int:
    """Delete rows by primary key after clearing what refers to them."""
    if not ids:
        return 0
    _clear_references(run, model, ids)
    meta = model._meta
    deleted = _execute(
        run,
        f'DELETE FROM "{meta.db_table}" WHERE "{meta.pk.column}" = ANY(%s)',  # noqa: S608
        [list(ids)],
    )
    run.deleted[meta.label] += deleted
    run.report(meta.label, run.deleted[meta.label])
    return deleted


def _clear_references(run: _Run, model: type[models.Model], ids: Sequence[object]) -> None:
    """Delete (CASCADE) or detach (SET_NULL) every row pointing at ``ids``, in batches."""
    for ref in _references(model):
        meta = ref.model._meta
        table, pk = meta.db_table, meta.pk.column
        if ref.on_delete is models.CASCADE:
            if _references(ref.model):
                # Rows that others point at: take ids, clear below them, then delete.
                while True:
                    with connection.cursor() as cursor:
                        cursor.execute(
                            f'SELECT "{pk}" FROM "{table}" WHERE "{ref.column}" = ANY(%s) '  # noqa: S608
                            "LIMIT %s",
                            [list(ids), run.batch_size],
                        )
                        child_ids = [row[0] for row in cursor.fetchall()]
                    if not child_ids:
                        break
                    _delete_ids(run, ref.model, child_ids)
                    _pause(run)
                continue
            while True:
                deleted = _execute(
                    run,
                    f'DELETE FROM "{table}" WHERE "{pk}" IN ('  # noqa: S608
                    f'SELECT "{pk}" FROM "{table}" WHERE "{ref.column}" = ANY(%s) LIMIT %s)',
                    [list(ids), run.batch_size],
                )
                if deleted:
                    run.deleted[ref.label] += deleted
                    run.report(ref.label, run.deleted[ref.label])
                if deleted < run.batch_size:
                    break
                _pause(run)
        elif ref.on_delete is models.SET_NULL:
            while True:
                updated = _execute(
                    run,
                    f'UPDATE "{table}" SET "{ref.column}" = NULL WHERE "{pk}" IN ('  # noqa: S608
                    f'SELECT "{pk}" FROM "{table}" WHERE "{ref.column}" = ANY(%s) LIMIT %s)',
                    [list(ids), run.batch_size],
                )
                if updated:
                    run.detached[f"{ref.label}.{ref.column}"] += updated
                if updated < run.batch_size:
                    break
        else:
            raise NotImplementedError(
                f"purge cannot delete rows referenced by {ref.label}.{ref.column} "
                f"(on_delete={ref.on_delete.__name__})"
            )


def _purge_by_window(run: _Run, model: type[models.Model], condition: Q) -> None:
    """Delete ``model`` rows matching ``condition`` (an indexed time column), batch by batch."""
    while True:
        ids = list(model.objects.filter(condition).values_list("pk", flat=True)[: run.batch_size])
        if not ids:
            return
        _delete_ids(run, model, ids)
        _pause(run)
        if len(ids) < run.batch_size:
            return


def _purge_sessions(run: _Run) -> None:
    """Expired sessions, oldest first; a batch holds about ``batch_size`` messages in all."""
    retries = 0
    while True:
        rows = list(
            _expired_sessions(run.cutoff)
            .order_by("created_at", "id")
            .values_list("id", "last_seq")[: run.batch_size]
        )
        if not rows:
            return
        batch: list[object] = []
        messages = 0
        for session_id, last_seq in rows:
            if batch and messages + last_seq > run.batch_size:
                break
            batch.append(session_id)
            messages += last_seq
        try:
            _clear_references(run, ChatSession, batch)
            table = ChatSession._meta.db_table
            # Re-check the window and the status in the statement itself: it is the last word.
            deleted = _execute(
                run,
                f'DELETE FROM "{table}" WHERE id = ANY(%s) AND created_at < %s '  # noqa: S608
                "AND status <> ALL(%s)",
                [batch, run.cutoff, [str(s) for s in LIVE_STATUSES]],
            )
        except IntegrityError:
            # Something attached a row to one of these sessions between the two statements
            # (a socket opening on an ancient transcript): clear again and retry the batch.
            retries += 1
            if retries > LOCK_RETRIES:
                raise
            logger.warning("purge: a session batch gained new references, retrying")
            continue
        run.deleted[ChatSession._meta.label] += deleted
        run.report(ChatSession._meta.label, run.deleted[ChatSession._meta.label])
        _pause(run)


def _name_tables(run: _Run, model: type[models.Model]) -> None:
    run.deleted[model._meta.label] += 0
    for ref in _references(model):
        if ref.on_delete is models.SET_NULL:
            run.detached[f"{ref.label}.{ref.column}"] += 0
        else:
            _name_tables(run, ref.model)


def _count_tree(
    run: _Run,
    model: type[models.Model],
    qs: models.QuerySet,
    windows: dict[type[models.Model], Q],
) -> None:
    """Dry run: count what deleting ``qs`` would delete or detach, as the real run would."""
    for ref in _references(model):
        field_name = next(
            f.name
            for f in ref.model._meta.concrete_fields
            if getattr(f, "column", None) == ref.column
        )
        children = ref.model.objects.filter(**{f"{field_name}__in": qs})
        if ref.model in windows:
            children = children.exclude(windows[ref.model])  # gone already in the window stage
        if ref.on_delete is models.CASCADE:
            run.deleted[ref.label] += children.count()
            _count_tree(run, ref.model, children, windows)
        elif ref.on_delete is models.SET_NULL:
            run.detached[f"{ref.label}.{ref.column}"] += children.count()
        else:
            raise NotImplementedError(f"purge cannot follow {ref.label}.{ref.column}")


def purge_expired(
    *,
    now: datetime | None = None,
    retention_days: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    pause_s: float = 0.0,
    progress: ProgressFn | None = None,
) -> PurgeRecord:
    """Delete everything older than the retention window and write the compliance record.

    Sessions go by ``created_at`` with all that hangs on them (messages, connections, wait spans,
    their assignment log rows); the assignment log by ``offered_at``, the access log by ``at``,
    queue samples by ``at``, the seat queue's free spans by their end. ``dry_run`` counts the
    same rows and deletes nothing. Must not run inside a transaction: each batch commits on its
    own, so an interrupted run keeps what it did and the next run continues.
    """
    if connection.in_atomic_block:
        raise RuntimeError("purge_expired commits batch by batch; call it outside a transaction")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [PURGE_LOCK_KEY])
        if not cursor.fetchone()[0]:
            raise PurgeAlreadyRunning("Another purge is running; this one did nothing.")
        cursor.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
    try:
        return _purge(
            now=now,
            retention_days=retention_days,
            batch_size=batch_size,
            dry_run=dry_run,
            pause_s=pause_s,
            progress=progress,
        )
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
            cursor.execute("SELECT pg_advisory_unlock(%s)", [PURGE_LOCK_KEY])


def _purge(
    *,
    now: datetime | None,
    retention_days: int | None,
    batch_size: int,
    dry_run: bool,
    pause_s: float,
    progress: ProgressFn | None,
) -> PurgeRecord:
    started = timezone.now()
    clock = time.monotonic()
    now = now or started
    days = settings.RETENTION_DAYS if retention_days is None else retention_days
    cutoff = now - timedelta(days=days)
    run = _Run(cutoff=cutoff, batch_size=batch_size, progress=progress, pause_s=pause_s)
    # The record names every table the purge can touch, even at zero.
    for model in (ChatSession, *_window_filters(cutoff)):
        _name_tables(run, model)
    record = PurgeRecord.objects.create(
        started_at=started,
        cutoff=cutoff,
        retention_days=days,
        dry_run=dry_run,
        batch_size=batch_size,
    )
    windows = _window_filters(cutoff)
    live_kept = ChatSession.objects.filter(created_at__lt=cutoff, status__in=LIVE_STATUSES).count()
    if live_kept:
        logger.warning("purge: %d live sessions older than the window are kept", live_kept)
    try:
        if dry_run:
            for model, condition in windows.items():
                window_qs = model.objects.filter(condition)
                run.deleted[model._meta.label] += window_qs.count()
                _count_tree(run, model, window_qs, windows)
            expired = _expired_sessions(cutoff)
            run.deleted[ChatSession._meta.label] += expired.count()
            _count_tree(run, ChatSession, expired, windows)
        else:
            # The logs first: the sessions' pass then only meets the log rows inside the window
            # (an assignment made just after the cutoff for a session created just before it).
            for model, condition in windows.items():
                _purge_by_window(run, model, condition)
            _purge_sessions(run)
    except Exception as exc:
        record.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        _finish(record, run, live_kept=live_kept, clock=clock)
    return record


def _finish(record: PurgeRecord, run: _Run, *, live_kept: int, clock: float) -> None:
    record.finished_at = timezone.now()
    record.duration_s = round(time.monotonic() - clock, 3)
    record.sessions = run.deleted[ChatSession._meta.label]
    record.messages = run.deleted[Message._meta.label]
    record.connections = run.deleted[Connection._meta.label]
    record.assignments = run.deleted[Assignment._meta.label]
    record.accesses = run.deleted[CustomerDataAccess._meta.label]
    record.queue_samples = run.deleted[QueueSample._meta.label]
    record.statements = run.statements
    record.counts = {
        "deleted": dict(sorted(run.deleted.items())),
        "detached": dict(sorted(run.detached.items())),
        "live_sessions_kept": live_kept,
    }
    record.save()
