"""Fair matching: both FIFO queues, offers, resumes, and verify_fairness (matching/)."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from agents import services as agent_services
from agents.models import Agent, AgentStatus, Seat
from chat import services as chat_services
from chat.events import QUEUE_GROUP, agent_group
from chat.models import ChatSession, SessionStatus
from matching import services
from matching.locking import lock_queue_exclusive
from matching.models import Assignment, Outcome
from matching.selectors import fairness_violations
from matching.tasks import match as match_task
from tests.factories import (
    AgentFactory,
    CustomerFactory,
    GroupTap,
    LeadFactory,
    SessionFactory,
    active_session,
    available_agent,
    incomplete_session,
)

pytestmark = pytest.mark.django_db


def _end(session: ChatSession) -> None:
    chat_services.session_close_by_lead(session_id=session.id, lead=LeadFactory())


def _agent_of(session: ChatSession) -> int | None:
    return ChatSession.objects.get(pk=session.pk).agent_id


def test_customers_are_served_strictly_by_arrival_when_one_seat_frees_at_a_time():
    agent = available_agent(capacity=1)
    sessions = [SessionFactory() for _ in range(5)]
    served = []
    for _ in sessions:
        (assignment,) = services.match_run()
        served.append(assignment.session_id)
        services.offer_accept(session_id=assignment.session_id, agent=agent)
        _end(ChatSession.objects.get(pk=assignment.session_id))
    assert served == [s.id for s in sessions]
    assert fairness_violations() == []


def test_batch_pairs_in_ticket_and_free_since_order_when_many_wait():
    agents = [available_agent(capacity=1) for _ in range(3)]
    sessions = [SessionFactory() for _ in range(5)]
    made = services.match_run()
    assert [a.session_id for a in made] == [s.id for s in sessions[:3]]
    assert [a.agent_id for a in made] == [a.pk for a in agents]
    assert fairness_violations() == []


def test_agent_who_became_available_first_gets_both_seats_first_when_customers_arrive():
    first = available_agent()
    second = available_agent()
    made = [SessionFactory() for _ in range(3)]
    assignments = services.match_run()
    assert [a.agent_id for a in assignments] == [first.pk, first.pk, second.pk]
    seats = [a.seat_id for a in assignments[:2]]
    assert seats == sorted(seats)
    assert [a.session_id for a in assignments] == [s.id for s in made]


def test_free_seat_of_busy_agent_comes_before_later_agent_when_one_seat_is_held():
    busy = available_agent()
    active_session(agent=busy)
    later = available_agent()
    session = SessionFactory()
    services.match_run()
    assert _agent_of(session) == busy.pk
    assert later.seats.exclude(free_since=None).count() == 2


def test_agent_back_from_break_queues_behind_agents_who_waited_when_break_ends():
    early = available_agent(capacity=1)
    agent_services.agent_break_request(agent=early)
    waiting = available_agent(capacity=1)
    agent_services.agent_break_end(agent=early)
    session = SessionFactory()
    services.match_run()
    assert _agent_of(session) == waiting.pk


def test_seat_freed_by_ended_chat_queues_behind_seats_free_before_when_chat_ends():
    agent = available_agent(capacity=1)
    session, _ = active_session(agent=agent)
    other = available_agent(capacity=1)
    _end(session)
    nxt = SessionFactory()
    services.match_run()
    assert _agent_of(nxt) == other.pk


def test_agent_available_later_is_served_last_when_several_are_free():
    agents = [available_agent(capacity=1) for _ in range(3)]
    sessions = [SessionFactory() for _ in range(3)]
    services.match_run()
    assert [_agent_of(s) for s in sessions] == [a.pk for a in agents]


def test_declined_offer_keeps_customer_at_the_head_when_next_seat_frees():
    decliner = available_agent(capacity=1)
    first, second = SessionFactory(), SessionFactory()
    services.match_run()
    helper = available_agent(capacity=1)  # free before the decliner's seat frees again
    services.offer_decline(session_id=first.id, agent=decliner)
    back = ChatSession.objects.get(pk=first.pk)
    assert (back.status, back.ticket) == (SessionStatus.WAITING, first.ticket)
    made = services.match_run()
    assert [(a.session_id, a.agent_id) for a in made] == [
        (first.id, helper.pk),
        (second.id, decliner.pk),
    ]
    outcomes = list(Assignment.objects.filter(session=first).values_list("outcome", flat=True))
    assert sorted(outcomes) == [Outcome.DECLINED, Outcome.OFFERED]
    assert fairness_violations() == []


def test_expired_offer_keeps_customer_at_head_and_sets_agent_away_when_timeout_passes(settings):
    settings.OFFER_TIMEOUT_S = 0
    sleepy = available_agent(capacity=1)
    first, second = SessionFactory(), SessionFactory()
    services.match_run()
    counts = services.tick()
    assert counts["offers_expired"] == 1
    assert Agent.objects.get(pk=sleepy.pk).status == AgentStatus.AWAY
    assert not sleepy.seats.exclude(free_since=None).exists()
    back = ChatSession.objects.get(pk=first.pk)
    assert (back.status, back.ticket) == (SessionStatus.WAITING, first.ticket)
    settings.OFFER_TIMEOUT_S = 20
    helper = available_agent(capacity=1)
    (made,) = services.match_run()
    assert (made.session_id, made.agent_id) == (first.id, helper.pk)
    assert ChatSession.objects.get(pk=second.pk).status == SessionStatus.WAITING
    expired = Assignment.objects.get(session=first, agent=sleepy)
    assert expired.outcome == Outcome.EXPIRED
    assert expired.expired_at is not None
    assert services.tick()["offers_expired"] == 0


def test_accept_after_deadline_expires_the_offer_when_sweep_has_not_run(settings):
    settings.OFFER_TIMEOUT_S = 0
    agent = available_agent(capacity=1)
    session = SessionFactory()
    services.match_run()
    with pytest.raises(chat_services.DomainError) as caught:
        services.offer_accept(session_id=session.id, agent=agent)
    assert caught.value.code == "offer_expired"
    assert ChatSession.objects.get(pk=session.pk).status == SessionStatus.WAITING
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.AWAY


def test_offer_accept_refuses_when_offer_belongs_to_another_agent():
    agent = available_agent(capacity=1)
    stranger = available_agent(capacity=1)
    session = SessionFactory()
    services.match_run()
    assert _agent_of(session) == agent.pk
    with pytest.raises(chat_services.DomainError) as caught:
        services.offer_accept(session_id=session.id, agent=stranger)
    assert caught.value.code == "no_offer"


def test_resumed_session_goes_before_later_arrivals_when_inside_keep_place_window(settings):
    settings.RESUME_KEEP_PLACE_S = 600
    gone = incomplete_session()
    agent_services.agent_shift_end(agent=gone.agent)  # only the new agent's seat is free
    later = SessionFactory()
    chat_services.session_resume(session_id=gone.id, customer=gone.customer)
    available_agent(capacity=1)
    (made,) = services.match_run()
    assert made.session_id == gone.id
    assert ChatSession.objects.get(pk=later.pk).status == SessionStatus.WAITING


def test_resumed_session_goes_after_later_arrivals_when_outside_keep_place_window(settings):
    settings.RESUME_KEEP_PLACE_S = 600
    gone = incomplete_session()
    agent_services.agent_shift_end(agent=gone.agent)  # only the new agent's seat is free
    ChatSession.objects.filter(pk=gone.pk).update(
        incomplete_at=timezone.now() - timedelta(seconds=601)
    )
    later = SessionFactory()
    chat_services.session_resume(session_id=gone.id, customer=gone.customer)
    available_agent(capacity=1)
    (made,) = services.match_run()
    assert made.session_id == later.id


def test_no_offer_goes_to_agents_who_are_not_available_when_customers_wait():
    away_or_break = [AgentFactory(), agent_services.agent_break_request(agent=available_agent())]
    SessionFactory()
    assert services.match_run() == []
    assert all(a.seats.exclude(free_since=None).count() == 0 for a in away_or_break)


def test_matcher_runs_after_commit_when_session_created(django_capture_on_commit_callbacks):
    agent = available_agent(capacity=1)
    tap = GroupTap(agent_group(agent.pk), QUEUE_GROUP)
    with django_capture_on_commit_callbacks(execute=True):
        session = chat_services.session_create(customer=CustomerFactory())
    assert ChatSession.objects.get(pk=session.pk).status == SessionStatus.OFFERED
    events = tap.events()
    offers = [e for e in events if e["type"] == "offer"]
    assert offers[0]["session_id"] == str(session.id)
    assert offers[0]["expires_at"].endswith("Z")
    assert offers[0]["customer"]["display_name"]
    queue = [e for e in events if e["type"] == "queue.changed"]
    assert queue[0]["joined_ticket"] == session.ticket
    assert any(e.get("left_ticket") == session.ticket for e in queue)


def test_matcher_runs_after_commit_when_agent_becomes_available(
    django_capture_on_commit_callbacks,
):
    session = SessionFactory()
    agent = AgentFactory()
    with django_capture_on_commit_callbacks(execute=True):
        agent_services.agent_shift_start(agent=agent)
    assert _agent_of(session) == agent.pk


def test_matcher_runs_after_commit_when_seat_frees(django_capture_on_commit_callbacks):
    agent = available_agent(capacity=1)
    busy, _ = active_session(agent=agent)
    waiting = SessionFactory()
    with django_capture_on_commit_callbacks(execute=True):
        _end(busy)
    assert _agent_of(waiting) == agent.pk


def test_celery_match_task_pairs_the_queues_when_run():
    agent = available_agent(capacity=1)
    session = SessionFactory()
    assert match_task.apply().get() == 1
    assert _agent_of(session) == agent.pk


def test_matcher_pairs_across_batches_in_order_when_queue_is_longer_than_a_batch():
    count = services.BATCH + 7
    for _ in range((count + 1) // 2):
        available_agent()
    sessions = [SessionFactory() for _ in range(count)]
    made = services.match_run()
    assert [a.session_id for a in made] == [s.id for s in sessions]
    assert fairness_violations() == []


def test_matcher_skips_when_another_holds_the_lock_and_wait_is_false():
    import threading

    available_agent(capacity=1)
    SessionFactory()
    result: list[int] = []

    def other() -> None:
        from django.db import connection

        try:
            result.append(len(services.match_run(wait=False)))
        finally:
            connection.close()

    with transaction.atomic():
        assert lock_queue_exclusive(wait=True)
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert result == [0]


# --- verify_fairness ---------------------------------------------------------------------------


def _force_pair(session: ChatSession, seat: Seat) -> None:
    """Bypass the matcher's order (what a buggy matcher would do) to prove the checker sees it."""
    now = timezone.now()
    with transaction.atomic():
        lock_queue_exclusive(wait=True)
        session = ChatSession.objects.select_for_update().get(pk=session.pk)
        seat = Seat.objects.get(pk=seat.pk)
        Assignment.objects.create(
            session=session,
            agent_id=seat.agent_id,
            seat=seat,
            ticket=session.ticket,
            enqueued_at=session.enqueued_at,
            free_since=seat.free_since,
            offered_at=now,
        )
        chat_services._session_transition([session], SessionStatus.OFFERED, now=now, seats=[seat])
        agent_services.seats_taken(seats=[seat], now=now)


def test_verify_fairness_reports_customer_rule_when_later_ticket_served_first():
    available_agent(capacity=1)
    first, second = SessionFactory(), SessionFactory()
    seat = Seat.objects.exclude(free_since=None).get()
    _force_pair(second, seat)
    (violation,) = fairness_violations()
    assert violation.rule == "customer"
    assert str(first.id) in violation.detail


def test_verify_fairness_reports_seat_rule_when_later_freed_seat_used_first():
    early = available_agent(capacity=1)
    late = available_agent(capacity=1)
    session = SessionFactory()
    _force_pair(session, late.seats.get())
    (violation,) = fairness_violations()
    assert violation.rule == "seat"
    assert str(early.seats.get().pk) in violation.detail


def test_verify_fairness_command_prints_count_last_and_exits_1_when_violations():
    available_agent(capacity=1)
    _first, second = SessionFactory(), SessionFactory()
    _force_pair(second, Seat.objects.exclude(free_since=None).get())
    out = StringIO()
    with pytest.raises(SystemExit) as caught:
        call_command("verify_fairness", stdout=out)
    assert caught.value.code == 1
    lines = out.getvalue().strip().splitlines()
    assert lines[-1] == "violations: 1"
    assert "[customer]" in lines[0]


def test_verify_fairness_command_succeeds_when_log_is_fair():
    available_agent()
    for _ in range(3):
        SessionFactory()
    services.match_run()
    out = StringIO()
    call_command("verify_fairness", "--since", "2000-01-01", stdout=out)
    assert out.getvalue().strip().splitlines()[-1] == "violations: 0"


def test_verify_fairness_ignores_assignments_before_since_when_given():
    available_agent(capacity=1)
    _first, second = SessionFactory(), SessionFactory()
    _force_pair(second, Seat.objects.exclude(free_since=None).get())
    later = (timezone.now() + timedelta(seconds=1)).isoformat()
    out = StringIO()
    call_command("verify_fairness", "--since", later, stdout=out)
    assert out.getvalue().strip().splitlines()[-1] == "violations: 0"
