"""``message_post`` as one statement (docs/performance.md P8), on the real PostgreSQL.

Threads post at the same moment on connections of their own (autocommit, as daphne's database
threads do), so ``seq`` and ``client_msg_id`` are decided by PostgreSQL's row lock and unique
constraint, not by the test's ordering.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
from django.db import connection

from chat import services
from chat.errors import DomainError
from chat.models import ChatSession, Message, Role
from tests.factories import GroupTap, active_session, offered_session

pytestmark = pytest.mark.django_db(transaction=True)

T = TypeVar("T")


def _at_once(count: int, work: Callable[[int], T]) -> list[T]:
    """``work(i)`` in ``count`` threads released together; each closes its connection."""
    start = threading.Barrier(count)

    def run(i: int) -> T:
        try:
            start.wait()
            return work(i)
        finally:
            connection.close()

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def test_message_post_numbers_seq_without_gaps_or_repeats_when_8_threads_post_at_once():
    session, agent = active_session()
    customer = session.customer
    agent_user = agent.user

    def post(i: int) -> list[int]:
        seqs = []
        for n in range(10):
            posted = services.message_post(
                session_id=session.id,
                author=customer if i % 2 else agent_user,
                role=Role.CUSTOMER if i % 2 else Role.AGENT,
                client_msg_id=uuid.uuid4(),
                body=f"{i}.{n}",
            )
            assert posted.created
            seqs.append(posted.message.seq)
        return seqs

    returned = _at_once(8, post)
    assert sorted(s for seqs in returned for s in seqs) == list(range(1, 81))
    for seqs in returned:
        assert seqs == sorted(seqs)  # one thread's messages in the order it posted them
    stored = list(Message.objects.filter(session=session).values_list("seq", "body"))
    assert [seq for seq, _ in stored] == list(range(1, 81))
    assert ChatSession.objects.get(pk=session.id).last_seq == 80


def test_message_post_stores_one_row_when_4_threads_post_the_same_client_msg_id():
    session, _ = active_session()
    customer = session.customer
    client_msg_id = uuid.uuid4()
    tap = GroupTap(f"session.{session.id.hex}")

    def post(i: int) -> services.MessagePost:
        return services.message_post(
            session_id=session.id,
            author=customer,
            role=Role.CUSTOMER,
            client_msg_id=client_msg_id,
            body="once",
        )

    posts = _at_once(4, post)
    assert [p.created for p in posts].count(True) == 1
    assert {(p.message.pk, p.message.seq) for p in posts} == {(posts[0].message.pk, 1)}
    assert Message.objects.filter(session=session).count() == 1
    # The losers' statements rolled back their UPDATE too: no seq was used up.
    assert ChatSession.objects.get(pk=session.id).last_seq == 1
    published = [e for e in tap.events() if e["type"] == "message"]
    assert [e["message"]["seq"] for e in published] == [1]


def test_message_post_is_one_query_when_a_new_message_is_posted(django_assert_num_queries):
    session, agent = active_session()
    customer, agent_user = session.customer, agent.user  # loaded before counting
    # Counted: the one statement (UPDATE ... RETURNING, INSERT ... RETURNING) in autocommit,
    # no BEGIN/COMMIT. Not counted because there is none: the event goes to Redis, not the DB.
    with django_assert_num_queries(1):
        first = services.message_post(
            session_id=session.id,
            author=customer,
            role=Role.CUSTOMER,
            client_msg_id=uuid.uuid4(),
            body="hello",
        )
    with django_assert_num_queries(1):
        second = services.message_post(
            session_id=session.id,
            author=agent_user,
            role=Role.AGENT,
            client_msg_id=uuid.uuid4(),
            body="hi, how can I help?",
        )
    assert (first.created, first.message.seq, second.created, second.message.seq) == (
        True,
        1,
        True,
        2,
    )
    stored = ChatSession.objects.get(pk=session.id)
    assert stored.last_customer_activity_at == first.message.created_at
    assert Message.objects.get(pk=second.message.pk).body == "hi, how can I help?"


def test_message_post_takes_the_locking_path_when_the_agent_may_not_post_yet():
    session, agent = offered_session()
    with pytest.raises(DomainError) as caught:
        services.message_post(
            session_id=session.id,
            author=agent.user,
            role=Role.AGENT,
            client_msg_id=uuid.uuid4(),
            body="too early",
        )
    assert caught.value.code == "not_active"
    assert ChatSession.objects.get(pk=session.id).last_seq == 0
