"""After the run, the database is the judge: every message the clients sent is stored exactly
once, every stored message reached the other side exactly once, seqs have no gaps, and the
assignment log passes ``manage.py verify_fairness``."""

from __future__ import annotations

from bench.stack import Stack, pg_connect


def check(stack: Stack, system: dict[str, object]) -> dict[str, object]:
    sent: list[str] = system["sent_ids"]  # type: ignore[assignment]
    refused: dict[str, str] = system["refused_ids"]  # type: ignore[assignment]
    delivered: dict[str, int] = system["delivered_counts"]  # type: ignore[assignment]
    acked = set(system.get("acked_ids") or [])  # type: ignore[arg-type]
    with pg_connect(stack.db) as conn:
        stored = dict(
            conn.execute(
                "SELECT client_msg_id::text, count(*) FROM chat_message"
                " WHERE client_msg_id IS NOT NULL GROUP BY 1"
            ).fetchall()
        )
        gaps = conn.execute(
            "SELECT count(*) FROM (SELECT session_id FROM chat_message GROUP BY session_id"
            " HAVING min(seq) <> 1 OR max(seq) <> count(*) OR count(DISTINCT seq) <> count(*)) g"
        ).fetchone()[0]
        sessions = dict(
            conn.execute("SELECT status, count(*) FROM chat_chatsession GROUP BY 1").fetchall()
        )
        total_messages = conn.execute("SELECT count(*) FROM chat_message").fetchone()[0]
    # Sent, neither refused nor stored. Acknowledged ones would be a real loss (the server
    # said "stored"). Unacknowledged ones never reached a service (the server dropped the socket
    # first); the protocol's client resends those with the same client_msg_id, so they are not
    # lost, but they are counted and shown.
    never_stored = [c for c in sent if c not in refused and stored.get(c, 0) == 0]
    not_stored = [c for c in never_stored if c in acked]
    unacknowledged = [c for c in never_stored if c not in acked]
    not_delivered = [c for c in sent if stored.get(c, 0) >= 1 and delivered.get(c, 0) == 0]
    stored_twice = [c for c, n in stored.items() if n > 1]
    delivered_twice = [c for c, n in delivered.items() if n > 1]
    # Refused messages are not lost (the sender was told, with the client_msg_id), but none is
    # expected; a refused message that was stored all the same would be a lie to the sender.
    refused_but_stored = [c for c in refused if stored.get(c, 0) > 0]
    fairness = stack.manage("verify_fairness")
    return {
        "messages_sent": len(sent),
        "messages_stored": total_messages,
        "refused": len(refused),
        "refused_but_stored": len(refused_but_stored),
        "lost": len(set(not_stored) | set(not_delivered)),
        "lost_not_stored": len(not_stored),
        "lost_stored_not_delivered": len(not_delivered),
        "unacknowledged_not_stored": len(unacknowledged),
        "duplicated": len(set(stored_twice) | set(delivered_twice)),
        "seq_gaps": gaps,
        "sessions_by_status": sessions,
        "fairness_exit": fairness.returncode,
        "fairness_output": (fairness.stdout + fairness.stderr).strip()[-2000:],
        "lost_examples": (not_stored + not_delivered)[:5],
    }
