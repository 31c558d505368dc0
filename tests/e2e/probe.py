"""A small latency probe of the sockets (the full benchmark is bench/; this is a quick check).

    DATABASE_URL=postgres://…/dayone_probe REDIS_URL=… \\
        python -m tests.e2e.probe --chats 100 --rate 40 --seconds 20 [--servers 1]

One daphne (by default) with a Celery worker and beat, ``--chats`` customers each in an active
chat (AUTO_ACCEPT) with ``--chats/2`` agents; customers send ``--rate`` messages per second in
all, round robin. Prints one JSON line: messages sent / delivered to the agent / acked, the
delivery and ack latencies (p50/p95, ms) and daphne's CPU per message. The database is
migrated and FLUSHED: its name must end in ``_probe``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dayone_chat.settings.test")


def _setup(chats: int) -> str:
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection

    from agents import services as agent_services

    name = str(connection.settings_dict["NAME"])
    if not name.endswith("_probe"):
        sys.exit(f"The probe flushes its database; {name!r} does not end in '_probe'.")
    call_command("migrate", verbosity=0)
    call_command("flush", interactive=False, verbosity=0)
    for i in range(chats):
        User.objects.create_user(f"c{i}", password="pw")
    for i in range(chats // 2):
        user = User.objects.create_user(f"a{i}", password="pw", is_staff=True)
        agent_services.agent_create(user=user, display_name=f"Agent {i}")
    connection.close()
    return name


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 1)


async def _run(args: argparse.Namespace) -> dict[str, object]:
    import psutil

    from tests.e2e import Stack, WsClient

    stack = Stack.start(servers=args.servers, env={"AUTO_ACCEPT": "1"})
    try:
        agents = []
        for i in range(args.chats // 2):
            token = await stack.alogin(i % args.servers, f"a{i}", "pw")
            ws = await WsClient.connect(stack.ws_url(i % args.servers, "/ws/agent/"), token=token)
            await ws.expect("agent.state")
            await ws.send({"type": "shift.start"})
            await ws.expect("agent.state", lambda f: f["status"] == "available")
            agents.append(ws)
        customers = []
        for i in range(args.chats):
            server = (i + 1) % args.servers
            token = await stack.alogin(server, f"c{i}", "pw")
            async with stack.aapi(server, token) as api:
                answer = await api.post("/api/sessions", json={})
            session_id = answer.json()["id"]
            ws = await WsClient.connect(
                stack.ws_url(server, f"/ws/sessions/{session_id}/"), token=token
            )
            await ws.expect(
                "session.state", lambda f: f["session"]["status"] == "active", timeout=30
            )
            customers.append(ws)

        sent: dict[str, float] = {}
        delivered: list[float] = []
        acked: list[float] = []

        async def read(ws: WsClient, kind: str, into: list[float]) -> None:
            while True:
                try:
                    frame = await ws.recv(timeout=120)
                except Exception:
                    return
                if frame.get("type") != kind:
                    continue
                key = (
                    frame["message"]["client_msg_id"]
                    if kind == "message"
                    else frame.get("client_msg_id")
                )
                if key in sent:
                    into.append(time.perf_counter() - sent[key])

        readers = [asyncio.create_task(read(a, "message", delivered)) for a in agents]
        readers += [asyncio.create_task(read(c, "message.ack", acked)) for c in customers]
        daphnes = [psutil.Process(p.popen.pid) for p in stack.procs if p.name.startswith("d")]
        cpu_before = sum(sum(p.cpu_times()[:2]) for p in daphnes)
        deadline = time.perf_counter() + args.seconds
        count = 0
        while time.perf_counter() < deadline:
            ws = customers[count % len(customers)]
            client_msg_id = str(uuid.uuid4())
            sent[client_msg_id] = time.perf_counter()
            await ws.send({"type": "message.send", "client_msg_id": client_msg_id, "body": "hi"})
            count += 1
            await asyncio.sleep(1 / args.rate)
        for _ in range(60):
            if len(delivered) >= count and len(acked) >= count:
                break
            await asyncio.sleep(1)
        cpu_after = sum(sum(p.cpu_times()[:2]) for p in daphnes)
        for task in readers:
            task.cancel()
        return {
            "chats": args.chats,
            "servers": args.servers,
            "rate": args.rate,
            "sent": count,
            "delivered": len(delivered),
            "acked": len(acked),
            "deliver_p50_ms": _pct(delivered, 0.5),
            "deliver_p95_ms": _pct(delivered, 0.95),
            "ack_p50_ms": _pct(acked, 0.5),
            "ack_p95_ms": _pct(acked, 0.95),
            "daphne_cpu_ms_per_message": round((cpu_after - cpu_before) * 1000 / max(1, count), 2),
            "load_average": os.getloadavg(),
        }
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chats", type=int, default=100)
    parser.add_argument("--rate", type=float, default=40.0, help="messages per second, in all")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--servers", type=int, default=1)
    args = parser.parse_args()
    name = _setup(args.chats)
    os.environ["DATABASE_NAME"] = name
    print(json.dumps(asyncio.run(_run(args))))


if __name__ == "__main__":
    main()
