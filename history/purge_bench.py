"""Measure the retention purge on millions of messages while live traffic keeps inserting.

NOT a test and never for a real database: it fills a scratch database (its name must end in
``_bench``) with set-based ``INSERT ... SELECT generate_series`` SQL, then runs
``manage.py purge_expired`` in stages (each stage moves the retention window and uses its own
batch size) while a thread posts messages into live chats the way ``message_post`` does (lock
the session row, insert, bump ``last_seq``), and reports the purge rate and the live inserts'
latency during each stage against a quiet baseline.

    python -m history.purge_bench generate --db dayone_hist_bench --sessions 300000
    python -m history.purge_bench run --db dayone_hist_bench --stages 170:1000,140:5000,110:20000

The figures and the decision they led to are in docs/operations-admin.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
LIVE_AGENTS = 50  # 2 seats each: 100 live chats take the concurrent inserts


def dsn(host: str, port: int, db: str) -> str:
    return f"postgresql://postgres@{host}:{port}/{db}"


def refuse_unless_scratch(db: str) -> None:
    if not db.endswith("_bench"):
        sys.exit(f"refusing to touch {db!r}: the scratch database's name must end in _bench")


def manage(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DATABASE_URL=db_url, DJANGO_SETTINGS_MODULE="dayone_chat.settings.local")
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/3")
    return subprocess.run(  # noqa: S603 (our own manage.py, arguments from this script)
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )


def timed(conn: psycopg.Connection, label: str, sql: str, params: object = None) -> None:
    started = time.monotonic()
    cur = conn.execute(sql, params)
    print(f"  {label}: {cur.rowcount} rows in {time.monotonic() - started:.1f} s", flush=True)


def generate(args: argparse.Namespace) -> None:
    refuse_unless_scratch(args.db)
    with psycopg.connect(dsn(args.host, args.port, "postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{args.db}"')
        admin.execute(f'CREATE DATABASE "{args.db}"')
    url = dsn(args.host, args.port, args.db)
    print("migrating...", flush=True)
    manage(url, "migrate", "--noinput", "-v0")
    n, per, days = args.sessions, args.messages_per_session, args.days
    print(f"generating {n} sessions x {per} messages over {days} days...", flush=True)
    with psycopg.connect(url, autocommit=True) as conn:
        timed(
            conn,
            "customers",
            "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name,"
            " email, is_staff, is_active, date_joined)"
            " SELECT '', false, 'bench' || g, '', '', '', false, true, now()"
            " FROM generate_series(1, %s) g",
            [args.customers],
        )
        timed(
            conn,
            "agents",
            "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name,"
            " email, is_staff, is_active, date_joined)"
            " SELECT '', false, 'benchagent' || g, '', '', '', true, true, now()"
            " FROM generate_series(1, %s) g",
            [LIVE_AGENTS],
        )
        conn.execute(
            "INSERT INTO agents_agent (user_id, display_name, status, after_chats, capacity)"
            " SELECT id, username, 'available', '', 2 FROM auth_user"
            " WHERE username LIKE 'benchagent%%'"
        )
        conn.execute(
            'INSERT INTO agents_seat (agent_id, "index") SELECT a.id, i'
            " FROM agents_agent a, generate_series(0, 1) i"
        )
        # Sessions in time order (as production writes them), every one ended, on some seat.
        timed(
            conn,
            "sessions",
            "INSERT INTO chat_chatsession (id, customer_id, status, topic, ticket, agent_id,"
            " seat_id, created_at, enqueued_at, offered_at, accepted_at, ended_at, end_reason,"
            " end_requested_by, last_seq)"
            " SELECT gen_random_uuid(), c.min_id + (g %% c.n), 'ended', 'bench', g,"
            " s.agent_id, s.id, t, t, t + interval '30 s', t + interval '35 s',"
            " t + interval '15 min', 'mutual', '', %s"
            " FROM generate_series(1, %s) g"
            " CROSS JOIN LATERAL (SELECT now() - make_interval(days => %s)"
            "   + (g::float8 / %s) * make_interval(days => %s) AS t) tt"
            " CROSS JOIN (SELECT min(id) AS min_id, count(*) AS n FROM auth_user"
            "   WHERE username LIKE 'bench%%' AND NOT is_staff) c"
            " JOIN agents_seat s ON s.id = (SELECT min(id) FROM agents_seat) + (g %% %s)",
            [per, n, days, n, days, LIVE_AGENTS * 2],
        )
        # Messages a slice of days at a time: in time order like production, small sorts.
        ref = conn.execute("SELECT now()").fetchone()[0]
        for start in range(0, days, 10):
            timed(
                conn,
                f"messages {days - start}-{max(0, days - start - 10)} days old",
                "INSERT INTO chat_message (session_id, seq, sender, author_id, body,"
                " client_msg_id, created_at)"
                " SELECT s.id, m, CASE WHEN m %% 2 = 1 THEN 'customer' ELSE 'agent' END,"
                " CASE WHEN m %% 2 = 1 THEN s.customer_id END,"
                " 'Message ' || m || ' of a bench chat about an order that did not arrive',"
                " gen_random_uuid(), s.created_at + m * interval '20 s'"
                " FROM chat_chatsession s CROSS JOIN generate_series(1, %s) m"
                " WHERE s.created_at >= %s - make_interval(days => %s)"
                " AND s.created_at < %s - make_interval(days => %s)"
                " ORDER BY s.created_at, m",
                [per, ref, days - start + (1 if start == 0 else 0), ref, days - start - 10],
            )
        timed(
            conn,
            "assignment log",
            "INSERT INTO matching_assignment (session_id, agent_id, seat_id, ticket, enqueued_at,"
            " free_since, offered_at, accepted_at, outcome)"
            " SELECT id, agent_id, seat_id, ticket, created_at, created_at, offered_at,"
            " accepted_at, 'accepted' FROM chat_chatsession ORDER BY created_at",
        )
        timed(
            conn,
            "wait spans",
            "INSERT INTO matching_waitspan (session_id, ticket, started_at, ended_at)"
            " SELECT id, ticket, created_at, offered_at FROM chat_chatsession"
            " ORDER BY created_at",
        )
        timed(
            conn,
            "access log",
            "INSERT INTO agents_customerdataaccess (agent_id, customer_id, session_id, what, at,"
            " ok) SELECT agent_id, customer_id, id, 'orders', accepted_at + interval '1 min',"
            " true FROM chat_chatsession ORDER BY created_at",
        )
        # The live chats that take the concurrent inserts: one per seat, created now.
        conn.execute(
            "INSERT INTO chat_chatsession (id, customer_id, status, topic, ticket, agent_id,"
            " seat_id, created_at, enqueued_at, offered_at, accepted_at, end_reason,"
            " end_requested_by, last_seq)"
            " SELECT gen_random_uuid(), c.id, 'active', 'live', 0, s.agent_id, s.id,"
            " now(), now(), now(), now(), '', '', 0"
            " FROM (SELECT id, agent_id, row_number() OVER (ORDER BY id) AS r FROM agents_seat) s"
            " JOIN (SELECT id, row_number() OVER (ORDER BY id) AS r FROM auth_user"
            "   WHERE username LIKE 'bench%%' AND NOT is_staff) c ON c.r = s.r"
        )
        timed(conn, "vacuum analyze", "VACUUM ANALYZE")
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        print(f"  database size: {size.fetchone()[0]}")


@dataclass
class Inserter:
    """Posts messages into the live chats at ``rate`` per second and records each latency."""

    url: str
    rate: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with psycopg.connect(self.url) as conn:
            live = [
                row[0]
                for row in conn.execute(
                    "SELECT id FROM chat_chatsession WHERE status = 'active'"
                ).fetchall()
            ]
            conn.commit()
            interval = 1.0 / self.rate
            next_at = time.monotonic()
            while not self.stop.is_set():
                session_id = random.choice(live)
                started = time.monotonic()
                try:
                    with conn.transaction():
                        seq = conn.execute(
                            "SELECT last_seq + 1 FROM chat_chatsession WHERE id = %s FOR UPDATE",
                            [session_id],
                        ).fetchone()[0]
                        conn.execute(
                            "INSERT INTO chat_message (session_id, seq, sender, body,"
                            " client_msg_id, created_at) VALUES (%s, %s, 'agent', %s, %s, now())",
                            [session_id, seq, "live message during the purge", uuid.uuid4()],
                        )
                        conn.execute(
                            "UPDATE chat_chatsession SET last_seq = %s WHERE id = %s",
                            [seq, session_id],
                        )
                except psycopg.Error:
                    self.errors += 1
                self.latencies.append(time.monotonic() - started)
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))

    def take(self) -> list[float]:
        taken, self.latencies = self.latencies, []
        return taken


def summary(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {}
    ms = sorted(x * 1000 for x in latencies)
    return {
        "inserts": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        "max_ms": round(ms[-1], 2),
    }


def run(args: argparse.Namespace) -> None:
    refuse_unless_scratch(args.db)
    url = dsn(args.host, args.port, args.db)
    with psycopg.connect(url) as conn:
        total = conn.execute("SELECT count(*) FROM chat_message").fetchone()[0]
    print(f"{total} messages in {args.db}", flush=True)
    inserter = Inserter(url=url, rate=args.insert_rate)
    thread = threading.Thread(target=inserter.run, daemon=True)
    thread.start()
    time.sleep(args.baseline_s)
    results: list[dict[str, object]] = [
        {"stage": "baseline (no purge)", **summary(inserter.take())}
    ]
    print(json.dumps(results[-1]), flush=True)
    for stage in args.stages.split(","):
        days, batch = (int(x) for x in stage.split(":"))
        extra = ["--dry-run"] if batch == 0 else []
        started = time.monotonic()
        out = manage(
            url,
            "purge_expired",
            "--retention-days",
            str(days),
            "--batch-size",
            str(batch or 5000),
            *extra,
        ).stdout
        wall = time.monotonic() - started
        with psycopg.connect(url) as conn:
            record = conn.execute(
                "SELECT messages, sessions, assignments, accesses, statements, duration_s"
                " FROM history_purgerecord ORDER BY id DESC LIMIT 1"
            ).fetchone()
        messages, sessions, assignments, accesses, statements, duration = record
        row = {
            "stage": f"{'dry run' if extra else 'purge'} --retention-days {days}"
            + ("" if extra else f" --batch-size {batch}"),
            "messages": messages,
            "sessions": sessions,
            "assignments": assignments,
            "accesses": accesses,
            "statements": statements,
            "purge_s": duration,
            "command_wall_s": round(wall, 1),
            "messages_per_s": round(messages / duration) if duration and not extra else None,
            **summary(inserter.take()),
        }
        results.append(row)
        print(json.dumps(row), flush=True)
        if args.verbose:
            print(out)
        time.sleep(args.pause_s)
    inserter.stop.set()
    thread.join()
    print(f"live insert errors: {inserter.errors}")
    print(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--db", default="dayone_hist_bench")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate")
    gen.add_argument("--sessions", type=int, default=300_000)
    gen.add_argument("--messages-per-session", type=int, default=20)
    gen.add_argument("--customers", type=int, default=50_000)
    gen.add_argument("--days", type=int, default=200)
    gen.set_defaults(func=generate)
    go = sub.add_parser("run")
    go.add_argument(
        "--stages",
        default="170:0,170:1000,140:5000,110:20000",
        help="retention_days:batch_size, comma separated (batch 0 = dry run)",
    )
    go.add_argument("--insert-rate", type=float, default=100.0)
    go.add_argument("--baseline-s", type=float, default=20.0)
    go.add_argument("--pause-s", type=float, default=5.0)
    go.add_argument("--verbose", action="store_true")
    go.set_defaults(func=run)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
