"""The 90-day retention purge: exactly what is past the window goes, across every table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO

import psycopg
import pytest
import time_machine
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from agents.models import CustomerDataAccess
from chat.models import ChatSession, Connection, Message, SessionStatus
from history import services, tasks
from history.models import PurgeRecord, QueueSample
from matching.models import Assignment, FreeSpan, WaitSpan
from tests import history_builders as build

pytestmark = pytest.mark.django_db(transaction=True)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CUTOFF = NOW - timedelta(days=90)
SECOND = timedelta(seconds=1)


@pytest.fixture(autouse=True)
def _design_days(settings):
    """DESIGN.md's figures, whatever the environment of the run says."""
    settings.HISTORY_DAYS = 14
    settings.RETENTION_DAYS = 90


def at(moment: datetime) -> time_machine.travel:
    return time_machine.travel(moment, tick=False)


def populate() -> dict[str, object]:
    """Rows on both sides of the cutoff, made at the moments they would have been made."""
    with at(CUTOFF - timedelta(days=10)):
        agent = build.agent()
    with at(CUTOFF - SECOND):
        old = build.session(on=agent, messages=3)
        build.socket(old)
        build.assignment(old, agent)
        build.access(old, agent)
        # A log row about nobody's session any more (its session was already purged).
        lonely = build.access(build.session(on=agent), agent)
        lonely_session = lonely.session
        CustomerDataAccess.objects.filter(pk=lonely.pk).update(session=None)
        ChatSession.objects.filter(pk=lonely_session.pk).delete()
        QueueSample.objects.create(at=CUTOFF - SECOND, waiting=4)
    with at(CUTOFF - timedelta(seconds=60)):
        straddling = build.session(on=agent, messages=1)
    with at(CUTOFF + timedelta(seconds=30)):
        # Offered and read just inside the window, about a session created just outside it.
        build.assignment(straddling, agent)
        straddling_read = build.access(straddling, agent)
    with at(CUTOFF):
        edge = build.session(on=agent, messages=2)
        build.assignment(edge, agent)
        build.access(edge, agent)
    with at(CUTOFF + SECOND):
        young = build.session(on=agent, messages=2)
        build.socket(young)
        build.assignment(young, agent)
        build.access(young, agent)
        QueueSample.objects.create(at=CUTOFF + SECOND, waiting=5)
    with at(CUTOFF - timedelta(days=5)):
        live = build.session(status=SessionStatus.WAITING)
    return {
        "old": old,
        "straddling": straddling,
        "straddling_read": straddling_read,
        "edge": edge,
        "young": young,
        "live": live,
    }


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {label: n for label, n in counts.items() if n}


EXPECTED_DELETED = {
    "agents.CustomerDataAccess": 2,
    "chat.ChatSession": 2,
    "chat.Connection": 1,
    "chat.Message": 4,
    "history.QueueSample": 1,
    "matching.Assignment": 2,
}


def test_purge_deletes_exactly_what_is_past_the_window_when_rows_straddle_the_cutoff():
    rows = populate()
    with at(NOW):
        record = services.purge_expired()

    assert set(ChatSession.objects.values_list("id", flat=True)) == {
        rows["edge"].id,
        rows["young"].id,
        rows["live"].id,
    }
    assert Message.objects.filter(session=rows["edge"]).count() == 2
    assert Message.objects.filter(session=rows["young"]).count() == 2
    assert Message.objects.count() == 4
    assert list(Connection.objects.values_list("session_id", flat=True)) == [rows["young"].id]
    assert set(Assignment.objects.values_list("session_id", flat=True)) == {
        rows["edge"].id,
        rows["young"].id,
    }
    # Read inside the window: kept, but its session is gone.
    kept_reads = CustomerDataAccess.objects.order_by("at")
    assert [(r.at, r.session_id) for r in kept_reads] == [
        (CUTOFF, rows["edge"].id),
        (CUTOFF + SECOND, rows["young"].id),
        (CUTOFF + timedelta(seconds=30), None),
    ]
    assert list(QueueSample.objects.values_list("at", flat=True)) == [CUTOFF + SECOND]

    # Every table is named, tables that hang on sessions and got nothing (wait spans) at zero.
    assert nonzero(record.counts["deleted"]) == EXPECTED_DELETED
    assert record.counts["deleted"]["matching.Assignment"] == 2
    assert record.counts["detached"] == {"agents.CustomerDataAccess.session_id": 1}
    assert record.counts["live_sessions_kept"] == 1


@pytest.mark.parametrize(
    ("created", "kept"),
    [(CUTOFF - SECOND, False), (CUTOFF, True), (CUTOFF + SECOND, True)],
    ids=["90d+1s-old", "exactly-90d", "90d-1s-old"],
)
def test_purge_cuts_at_exactly_retention_days_when_a_session_sits_on_the_edge(created, kept):
    with at(created):
        chat = build.session(messages=1)
    with at(NOW):
        services.purge_expired()
    assert ChatSession.objects.filter(pk=chat.pk).exists() is kept
    assert Message.objects.filter(session_id=chat.pk).exists() is kept


def test_purge_writes_the_record_when_it_runs():
    populate()
    with at(NOW):
        record = services.purge_expired(batch_size=1000)
    stored = PurgeRecord.objects.get(pk=record.pk)
    assert stored.started_at == NOW
    assert stored.finished_at == NOW
    assert stored.cutoff == CUTOFF
    assert stored.retention_days == settings.RETENTION_DAYS == 90
    assert stored.dry_run is False
    assert stored.batch_size == 1000
    assert (stored.sessions, stored.messages, stored.connections) == (2, 4, 1)
    assert (stored.assignments, stored.accesses, stored.queue_samples) == (2, 2, 1)
    assert stored.duration_s >= 0
    assert stored.statements > 0
    assert stored.error == ""
    assert stored.completed


def test_dry_run_deletes_nothing_and_counts_what_the_purge_then_deletes_when_asked_to_count():
    populate()
    counts_before = {
        model: model.objects.count()
        for model in (ChatSession, Message, Connection, Assignment, CustomerDataAccess)
    }
    with at(NOW):
        dry = services.purge_expired(dry_run=True)
    assert {
        model: model.objects.count()
        for model in (ChatSession, Message, Connection, Assignment, CustomerDataAccess)
    } == counts_before
    assert CustomerDataAccess.objects.filter(session__isnull=True).count() == 1  # only lonely
    assert dry.dry_run is True
    assert dry.statements == 0

    with at(NOW):
        real = services.purge_expired()
    assert dry.counts == real.counts
    assert nonzero(dry.counts["deleted"]) == EXPECTED_DELETED


def test_purge_stays_within_the_batch_size_when_there_are_more_rows_than_a_batch():
    with at(CUTOFF - timedelta(days=1)):
        chats = [build.session(messages=7) for _ in range(3)]
    with at(NOW):
        record = services.purge_expired(batch_size=2)
    assert not ChatSession.objects.filter(pk__in=[c.pk for c in chats]).exists()
    assert record.messages == 21
    # 21 messages two at a time and three sessions one batch each at least.
    assert record.statements >= 11 + 3


def test_purge_continues_where_it_stopped_when_a_previous_run_was_interrupted():
    with at(CUTOFF - timedelta(days=1)):
        chat = build.session(messages=4)
        # An interrupted run had deleted some messages already.
        Message.objects.filter(session=chat, seq__lte=2).delete()
    with at(NOW):
        record = services.purge_expired()
    assert record.sessions == 1
    assert record.messages == 2
    assert not Message.objects.exists()


def test_purge_respects_the_retention_setting_when_it_is_changed(settings):
    settings.RETENTION_DAYS = 30
    with at(NOW - timedelta(days=30) - SECOND):
        old = build.session(messages=1)
    with at(NOW - timedelta(days=30) + SECOND):
        young = build.session(messages=1)
    with at(NOW):
        record = services.purge_expired()
    assert record.retention_days == 30
    assert list(ChatSession.objects.values_list("pk", flat=True)) == [young.pk]
    assert old.pk not in set(ChatSession.objects.values_list("pk", flat=True))


def test_purge_refuses_to_run_when_another_purge_is_running():
    dsn = connection.get_connection_params()
    other = psycopg.connect(
        dbname=dsn["dbname"], host=dsn.get("host"), port=dsn.get("port"), user=dsn.get("user")
    )
    try:
        other.execute("SELECT pg_advisory_lock(%s)", [services.PURGE_LOCK_KEY])
        with pytest.raises(services.PurgeAlreadyRunning):
            services.purge_expired()
        with pytest.raises(CommandError, match="Another purge is running"):
            call_command("purge_expired", stdout=StringIO())
    finally:
        # Closing alone releases the lock a moment later, on the server's own time.
        other.execute("SELECT pg_advisory_unlock(%s)", [services.PURGE_LOCK_KEY])
        other.close()
    services.purge_expired()  # the lock went with the other connection


def test_purge_refuses_when_called_inside_a_transaction():
    with transaction.atomic(), pytest.raises(RuntimeError, match="outside a transaction"):
        services.purge_expired()


def test_command_prints_progress_and_the_summary_when_run():
    populate()
    out = StringIO()
    with at(NOW):
        call_command("purge_expired", "--batch-size", "2", verbosity=2, stdout=out)
    text = out.getvalue()
    assert "Purging everything older than 90 days (batches of 2)" in text
    assert "chat.Message: 3 deleted so far" in text
    assert "  chat.Message: 4\n" in text
    assert "agents.CustomerDataAccess.session_id: 1 set to null" in text
    assert "kept 1 live sessions past the window" in text
    assert ChatSession.objects.count() == 3
    assert PurgeRecord.objects.get().dry_run is False


def test_command_deletes_nothing_when_given_dry_run():
    populate()
    out = StringIO()
    with at(NOW):
        call_command("purge_expired", "--dry-run", stdout=out)
    assert "would delete" in out.getvalue()
    assert "  chat.Message: 4" in out.getvalue()
    assert "dry run: nothing deleted" in out.getvalue()
    assert ChatSession.objects.count() == 5
    assert Message.objects.count() == 8
    assert PurgeRecord.objects.get().dry_run is True


def test_command_refuses_a_batch_size_when_it_is_below_one():
    with pytest.raises(CommandError, match="batch-size"):
        call_command("purge_expired", "--batch-size", "0", stdout=StringIO())


def test_celery_task_runs_the_purge_when_beat_fires_it():
    with at(CUTOFF - timedelta(days=3)):
        build.session(messages=2)
    with at(NOW):
        record_id = tasks.purge.apply().get()
    record = PurgeRecord.objects.get(pk=record_id)
    assert (record.sessions, record.messages) == (1, 2)
    assert not ChatSession.objects.exists()


def test_purge_deletes_the_fairness_spans_when_they_are_past_the_window():
    with at(CUTOFF - timedelta(days=2)):
        agent = build.agent()
        seat = agent.seats.first()
        old = build.session(on=agent)
        WaitSpan.objects.create(session=old, ticket=old.ticket, started_at=CUTOFF - SECOND * 9)
        ended = FreeSpan.objects.create(
            seat=seat, agent=agent, started_at=CUTOFF - SECOND * 9, ended_at=CUTOFF - SECOND
        )
        straddling = FreeSpan.objects.create(
            seat=seat, agent=agent, started_at=CUTOFF - SECOND, ended_at=CUTOFF + SECOND
        )
        still_open = FreeSpan.objects.create(seat=seat, agent=agent, started_at=CUTOFF - SECOND)
    with at(CUTOFF + SECOND):
        young = build.session(on=agent)
        WaitSpan.objects.create(session=young, ticket=young.ticket, started_at=CUTOFF + SECOND)
    with at(NOW):
        record = services.purge_expired()
    assert list(WaitSpan.objects.values_list("session_id", flat=True)) == [young.pk]
    assert set(FreeSpan.objects.values_list("pk", flat=True)) == {straddling.pk, still_open.pk}
    assert not FreeSpan.objects.filter(pk=ended.pk).exists()
    assert record.counts["deleted"]["matching.WaitSpan"] == 1
    assert record.counts["deleted"]["matching.FreeSpan"] == 1
