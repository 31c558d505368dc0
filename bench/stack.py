"""Starting and stopping what is measured: the real stack (daphne processes, Celery worker,
beat) and the two floors, as subprocesses on free ports, each logging under the run directory.

The benchmark gets a database of its own, recreated on every run, so leftovers of an earlier run
(live sessions, a half-full queue) never skew it and the developer's database is never touched:
the configured database name with ``_bench`` appended (kept as is when it already says "bench").
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_database() -> dict[str, object]:
    """Connection settings of the configured (or embedded) PostgreSQL, named for the bench."""
    sys.path.insert(0, str(ROOT))
    from dayone_chat.settings.env import database_from_env

    config = database_from_env()
    name = str(config["NAME"])
    if "bench" not in name:
        name = f"{name}_bench"
    config["NAME"] = name
    return config


def pg_connect(config: dict[str, object], dbname: str | None = None):
    import psycopg

    return psycopg.connect(
        host=str(config.get("HOST") or "") or None,
        port=str(config.get("PORT") or "") or None,
        user=str(config.get("USER") or "") or None,
        password=str(config.get("PASSWORD") or "") or None,
        dbname=dbname or str(config["NAME"]),
        autocommit=True,
    )


def recreate_database(config: dict[str, object]) -> None:
    from psycopg import sql

    with pg_connect(config, "postgres") as conn:
        name = sql.Identifier(str(config["NAME"]))
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))


def schema_hash() -> str:
    """What the seeded database depends on: every migration and the seed code."""
    import hashlib

    digest = hashlib.sha1(usedforsecurity=False)
    files = [
        *sorted(ROOT.glob("*/migrations/*.py")),
        ROOT / "agents" / "management" / "commands" / "seed_demo.py",
        ROOT / "agents" / "demo_data.py",
    ]
    for path in files:
        if path.exists():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def redis_url() -> str:
    from dayone_chat.settings.env import redis_url_from_env

    return redis_url_from_env()


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int | None = None


@dataclass
class Stack:
    """Every process this run started; :meth:`stop_all` ends exactly those."""

    run_dir: Path
    db: dict[str, object]
    procs: list[Proc] = field(default_factory=list)
    settings: str = "bench.settings"
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE=self.settings,
            DATABASE_NAME=str(self.db["NAME"]),
            PYTHONPATH=str(ROOT),
            PYTHONUNBUFFERED="1",
            # Never share a layer or a task queue with a `make run` on the same Redis.
            CHANNEL_LAYER_PREFIX=os.environ.get("CHANNEL_LAYER_PREFIX") or "bench",
            CELERY_QUEUE=os.environ.get("CELERY_QUEUE") or "bench",
        )
        env.update(self.extra_env)
        env.update(extra)
        return env

    def manage(
        self, *args: str, timeout: float = 900, database: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = self.env(DATABASE_NAME=database) if database else self.env()
        return subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def spawn(self, name: str, argv: list[str], port: int | None = None, **env: str) -> Proc:
        log = self.run_dir / f"{name}.log"
        handle = open(log, "wb")  # noqa: SIM115 - the child owns it for its lifetime
        popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=self.env(**env),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc = Proc(name, popen, log, port)
        self.procs.append(proc)
        return proc

    # --- the real stack ------------------------------------------------------------------------

    def prepare_database(self, agents: int, customers: int) -> str:
        """A fresh copy of a migrated and seeded template database (seeding 2,000 accounts with
        their demo data takes minutes; copying a template takes seconds). The template's name
        carries a hash of the migrations and the seed code, so any change builds a new one."""
        from psycopg import sql

        name = str(self.db["NAME"])
        template = f"{name}_tpl_{agents}_{customers}_{schema_hash()}"[:63]
        with pg_connect(self.db, "postgres") as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [template]
            ).fetchone()
        how = "copied from the template"
        if not exists:
            how = "migrated and seeded (template built)"
            recreate_database({**self.db, "NAME": template})
            for args in (
                ("migrate", "--noinput"),
                ("seed_demo", "--agents", str(agents), "--customers", str(customers)),
            ):
                done = self.manage(*args, database=template)
                if done.returncode != 0:
                    raise SystemExit(
                        f"bench: manage.py {args[0]} failed:\n{done.stdout}{done.stderr}"
                    )
        with pg_connect(self.db, "postgres") as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
            # Templates of older schemas are of no use any more.
            stale = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s AND datname NOT LIKE %s",
                [f"{name}_tpl_%", f"%_{schema_hash()}"],
            ).fetchall()
            for (old,) in stale:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(old)))
        return how

    def purge_task_queue(self) -> None:
        import redis

        queue = self.env()["CELERY_QUEUE"]
        redis.Redis.from_url(redis_url()).delete(queue)

    def start_system(
        self, servers: int, worker_concurrency: int, app: str = "dayone_chat.asgi:application"
    ) -> list[Proc]:
        self.purge_task_queue()
        webs = []
        for index in range(servers):
            port = free_port()
            webs.append(
                self.spawn(
                    f"daphne{index + 1}",
                    [
                        str(BIN / "daphne"),
                        "-b",
                        "127.0.0.1",
                        "-p",
                        str(port),
                        # As the Procfile serves it (since 21:56 on 2026-11-23; the full runs in
                        # docs/performance.md predate it and ran with daphne's 5 s default).
                        "--websocket_connect_timeout",
                        "30",
                        app,
                    ],
                    port=port,
                    # As the Procfile: the ASGI server pools its database connections, and
                    # runs database calls on 16 threads.
                    DB_POOL_MAX_SIZE=self.env().get("DB_POOL_MAX_SIZE", "16"),
                    ASGI_THREADS=self.env().get("ASGI_THREADS", "16"),
                )
            )
        self.spawn(
            "worker",
            [
                str(BIN / "celery"),
                "-A",
                "dayone_chat",
                "worker",
                "--loglevel=WARNING",
                f"--concurrency={worker_concurrency}",
                "--without-gossip",
                "--without-mingle",
                "-n",
                f"bench-{os.getpid()}@%h",
            ],
        )
        self.spawn(
            "beat",
            [
                str(BIN / "celery"),
                "-A",
                "dayone_chat",
                "beat",
                "--loglevel=WARNING",
                f"--schedule={self.run_dir / 'celerybeat-schedule'}",
            ],
        )
        for web in webs:
            self.wait_http(web, "/healthz")
        return webs

    # --- the floors ----------------------------------------------------------------------------

    def start_floor_websockets(self) -> Proc:
        port = free_port()
        proc = self.spawn(
            "floor_websockets",
            [sys.executable, "-m", "bench.floor_websockets", "--port", str(port)],
            port=port,
        )
        self.wait_port(proc)
        return proc

    def start_floor_channels(
        self, name: str = "floor_channels", settings: str = "bench.floor_channels.settings"
    ) -> Proc:
        port = free_port()
        proc = self.spawn(
            name,
            [
                str(BIN / "daphne"),
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "bench.floor_channels.asgi:application",
            ],
            port=port,
            DJANGO_SETTINGS_MODULE=settings,
        )
        self.wait_port(proc)
        return proc

    # --- waiting and stopping ------------------------------------------------------------------

    def _check_alive(self, proc: Proc) -> None:
        if proc.popen.poll() is not None:
            tail = proc.log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"bench: {proc.name} exited ({proc.popen.returncode}):\n{tail}")

    def wait_port(self, proc: Proc, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive(proc)
            try:
                with socket.create_connection(("127.0.0.1", int(proc.port or 0)), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"bench: {proc.name} did not listen within {timeout:.0f} s")

    def wait_http(self, proc: Proc, path: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive(proc)
            try:
                answer = httpx.get(f"http://127.0.0.1:{proc.port}{path}", timeout=3)
                if answer.status_code == 200:
                    return
                last = answer.text[:300]
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.3)
        raise SystemExit(f"bench: {proc.name}{path} not ready within {timeout:.0f} s: {last}")

    def stop(self, proc: Proc, timeout: float = 10) -> None:
        if proc.popen.poll() is None:
            # Each child leads its own process group (start_new_session): the signal reaches
            # Celery's pool processes too, and nothing this run did not start.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGTERM)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(5)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)
